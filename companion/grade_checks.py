"""Stand-in for ``companion.check.produce`` / ``judge`` until the checks produce data of their own.

The check runs whole in the student's process here; the grader only sees its
verdict, as data. Replaced by :mod:`companion.check.core`'s functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from companion import check

_CHECKS = {name: getattr(check, name) for name in dir(check) if not name.startswith("_")}


def produce(name: str, args: tuple, seed: int, **kwargs: Any) -> dict:
    result = _CHECKS[name](*args, **kwargs)
    return {"passed": bool(result.passed), "message": str(result.message)}


def judge(name: str, seed: int, produced: dict) -> check.CheckResult:
    return check.CheckResult(name, bool(produced["passed"]), str(produced["message"]))


def save_produced(path: str | Path, produced: dict) -> None:
    Path(path).write_text(json.dumps(produced), encoding="utf-8")


def load_produced(path: str | Path) -> dict:
    try:
        produced = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a file of produced answers ({err})") from err
    if not isinstance(produced, dict):
        raise ValueError(f"{path}: not a file of produced answers")
    return produced
