"""The checks' two halves as the grader uses them, for every check of the course.

A check declared in :data:`companion.check.core.SPECS` is produced and judged
by :mod:`companion.check.core`. A check not declared there yet runs whole in
the student's process, which records only its verdict as data; its judgement
in the grader's process reads that verdict back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from companion import check
from companion.check import core

_CHECKS = {name: getattr(check, name) for name in dir(check) if not name.startswith("_")}
"""The check functions as imported, before any student's code runs."""
_VERDICT = "companion.grade verdict"


def produce(name: str, args: tuple, seed: int) -> dict:
    """:func:`companion.check.core.produce`, or the verdict of a check not declared as a spec."""
    if name in core.SPECS:
        return core.produce(name, args, seed)
    result = _CHECKS[name](*args)
    return {
        "format": _VERDICT, "check": name, "seed": seed,
        "name": str(result.name), "passed": bool(result.passed), "message": str(result.message),
    }  # fmt: skip


def judge(name: str, seed: int, produced: dict) -> check.CheckResult:
    """:func:`companion.check.core.judge`, or the recorded verdict of a check not declared as a spec."""
    if produced.get("format") != _VERDICT:
        return core.judge(name, seed, produced)
    if name in core.SPECS or produced.get("check") != name or produced.get("seed") != seed:
        raise ValueError(f"these outputs were not produced for {name!r} with this seed")
    shown = str(produced.get("name"))[:100]
    return check.CheckResult(shown, produced.get("passed") is True, str(produced.get("message"))[:1000])


def save_produced(path: str | Path, produced: dict) -> None:
    core.save_produced(path, produced)


def load_produced(path: str | Path) -> dict:
    """:func:`companion.check.core.load_produced`, or a recorded verdict (read without pickle)."""
    try:
        return core.load_produced(path)
    except ValueError as err:
        try:
            with np.load(path, allow_pickle=False) as npz:
                produced = json.loads(str(npz["__json__"]))
        except (OSError, KeyError, ValueError, EOFError) as again:
            raise err from again
        if not isinstance(produced, dict) or produced.get("format") != _VERDICT:
            raise
        return produced


def bound_arguments(name: str, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """The arguments of a call ``check.<name>(*args, **kwargs)`` as :func:`produce` takes them: all positional."""
    if not kwargs:
        return args
    import inspect

    return tuple(inspect.signature(_CHECKS[name]).bind(*args, **kwargs).args)
