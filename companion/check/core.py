"""The core of the self-checks: run a student's function, compare it with a reference, explain.

Every check returns a :class:`CheckResult`, which is truthy when the answer is
right and displays as a short report in a notebook::

    >>> from companion import check
    >>> check.neuron_forward(my_neuron)       # doctest: +SKIP
    ✅ neuron_forward: 5 of 5 cases match the reference.

A wrong answer gets the first case that fails and how it fails (an error and
the student's own line that raised it, a shape, a sign, a factor, how far off)
but never the expected answer of a numeric exercise, and never the method: that
is the check's hint, shown only on request with :func:`hint`. The topic modules
of this package hold the checks of each chapter; they build on :func:`compare`
and :func:`value`.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import textwrap
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckResult",
    "ForbiddenCallError",
    "Hint",
    "PLACEHOLDER_MESSAGE",
    "compare",
    "explain_difference",
    "forbidding",
    "hint",
    "not_a_function",
    "register_hint",
    "value",
]

_HINTS: dict[str, str] = {}
_LIBRARY_DIRS = tuple(
    str(Path(module.__file__).resolve().parent) for module in (np, torch) if module.__file__
) + (str(Path(__file__).resolve().parent.parent),)


def register_hint(name: str, text: str) -> None:
    """Record the hint that :func:`hint` shows for the check ``name`` (topic modules call this)."""
    _HINTS[name] = text


@dataclass(frozen=True)
class Hint:
    """A check's hint, displayed as ``💡 name: text``."""

    name: str
    text: str

    def __str__(self) -> str:
        return _fit(f"💡 {self.name}: {self.text}")

    def __repr__(self) -> str:
        return str(self)


def hint(name: str) -> Hint:
    """The hint of the check ``name``: how to approach the exercise, for when a student is stuck.

    >>> check.hint("neuron_forward")       # doctest: +SKIP
    💡 neuron_forward: weighted sum x·w, plus the bias b, then ReLU ...
    """
    if name not in _HINTS:
        known = ", ".join(sorted(_HINTS)) or "none"
        raise ValueError(f"no check named {name!r} has a hint; checks with hints: {known}")
    return Hint(name, _HINTS[name])


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a self-check: ``passed`` and a message that explains it.

    A failed result whose check has a hint ends by saying how to ask for it.
    """

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        text = f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"
        key = self.name.split("(")[0]
        if not self.passed and key in _HINTS:
            text += f'\nStuck? check.hint("{key}") gives a hint.'
        return _fit(text)

    def __repr__(self) -> str:
        return str(self)


def _fit(text: str, width: int = 80) -> str:
    """``text`` with each of its lines wrapped to ``width`` columns, so it fits a book's code cell."""
    return "\n".join(
        textwrap.fill(line, width, subsequent_indent="   ", break_on_hyphens=False) if len(line) > width else line
        for line in text.splitlines()
    )


PLACEHOLDER_MESSAGE = "the placeholder `...` is still there: replace it with your answer."
"""The message of a check whose student function still returns the placeholder ``...``."""


class ForbiddenCallError(RuntimeError):
    """Raised when a student's function calls what its exercise asks to do without."""


def _as_array(value: Any) -> np.ndarray | None:
    """``value`` as a float64 NumPy array, or None when it is not numeric."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    if isinstance(value, bool):
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array


def explain_difference(expected: Any, got: Any, rtol: float = 1e-6, atol: float = 1e-8) -> str | None:
    """None when ``got`` matches ``expected`` (numbers, arrays or tensors to ``rtol``/``atol``), else why not.

    Match means ``|got - expected| <= atol + rtol * |expected|`` element-wise, with equal shapes.
    """
    want, have = _as_array(expected), _as_array(got)
    if want is None:
        return None if got == expected else f"expected {expected!r}, got {got!r}"
    if have is None:
        return f"expected a number or an array, got {type(got).__name__}"
    if want.shape != have.shape:
        return f"expected shape {want.shape}, got shape {have.shape}"
    if not np.all(np.isfinite(have)) and np.all(np.isfinite(want)):
        return f"the result contains NaN or infinity: {have}"
    close = np.isclose(have, want, rtol=rtol, atol=atol)
    if close.all():
        return None
    if want.ndim == 0:
        return f"expected {want.item():.6g}, got {have.item():.6g}"
    where = np.unravel_index(np.argmax(np.abs(have - want) * ~close), want.shape)
    return (
        f"{int((~close).sum())} of {want.size} entries differ; the largest difference is at index "
        f"{tuple(int(i) for i in where)}: expected {want[where]:.6g}, got {have[where]:.6g}"
    )


def _describe(args: Sequence[Any]) -> str:
    parts = []
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.numel() > 6:
            parts.append(f"tensor of shape {tuple(arg.shape)}")
        else:
            parts.append(repr(arg))
    return ", ".join(parts)


def _fresh(args: Sequence[Any]) -> list[Any]:
    """``args`` with every tensor cloned, so a function that modifies its input spoils nothing."""
    return [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args]


def _student_line(err: BaseException) -> str:
    """``" (your line N: source)"`` for the deepest frame of ``err`` outside numpy, torch and companion."""
    frames = [
        frame for frame in traceback.extract_tb(err.__traceback__)
        if not str(Path(frame.filename).resolve()).startswith(_LIBRARY_DIRS)
    ]  # fmt: skip
    if not frames:
        return ""
    frame = frames[-1]
    source = f": {frame.line.strip()}" if frame.line else ""
    return f" (your line {frame.lineno}{source})"


@contextlib.contextmanager
def forbidding(names: Iterable[str]) -> Iterator[None]:
    """Within the block, each dotted name (``"torch.nn.functional.cross_entropy"``) raises
    :class:`ForbiddenCallError`; on exit every one is restored, also after an error."""
    saved = []
    try:
        for dotted in names:
            owner_name, _, attr = dotted.rpartition(".")
            try:
                owner = importlib.import_module(owner_name)
            except ModuleNotFoundError:
                module_name, _, class_name = owner_name.rpartition(".")
                owner = getattr(importlib.import_module(module_name), class_name)
            had_own = attr in vars(owner)
            saved.append((owner, attr, had_own, vars(owner).get(attr)))

            def refuse(*args: Any, _name: str = dotted, **kwargs: Any) -> Any:
                raise ForbiddenCallError(f"this exercise asks you to do without {_name}")

            setattr(owner, attr, refuse)
        yield
    finally:
        for owner, attr, had_own, original in reversed(saved):
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)


def _run(
    student: Callable[..., Any], args: Sequence[Any], forbidden: Iterable[str] = ()
) -> tuple[Any, str | None]:
    """``(student(*args), None)`` on fresh copies of the tensors, or ``(None, "raised …")`` if it raises.

    The message names the student's own line that raised. ``forbidden``: dotted names that
    raise while the student's function runs (see :func:`forbidding`).
    """
    try:
        with forbidding(forbidden):
            return student(*_fresh(args)), None
    except Exception as err:  # the student's code may fail in any way: report it, don't crash
        return None, f"raised {type(err).__name__}: {err}{_student_line(err)}"


def not_a_function(name: str, student: Any) -> CheckResult | None:
    """A failed result when ``student`` is the placeholder ``...`` or not callable, else None."""
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    return None


def compare(
    name: str,
    student: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Iterable[Sequence[Any]],
    rtol: float = 1e-6,
    atol: float = 1e-8,
    forbidden: Iterable[str] = (),
) -> CheckResult:
    """Call ``student(*case)`` and ``reference(*case)`` on every case and compare the results.

    Stops at the first case that raises or differs, and says which case it
    was and how the result differs. Tensors in a case are cloned for each
    call, so a function that modifies its input cannot spoil the reference.
    ``forbidden``: dotted names the student's function may not call.
    """
    refused = not_a_function(name, student)
    if refused is not None:
        return refused
    cases = [tuple(case) for case in cases]
    forbidden = tuple(forbidden)
    for number, case in enumerate(cases, start=1):
        expected = reference(*_fresh(case))
        got, error = _run(student, case, forbidden)
        if error is not None:
            return CheckResult(name, False, f"case {number} ({_describe(case)}) {error}")
        if got is None and expected is not None:
            return CheckResult(
                name, False, f"case {number} ({_describe(case)}): the function returned None "
                "(is a `return` missing, or is the placeholder `...` still there?)"
            )
        why = explain_difference(expected, got, rtol, atol)
        if why is not None:
            return CheckResult(name, False, f"case {number} ({_describe(case)}): {why}.")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


def _how_far(expected: float, got: float) -> str:
    """How a number differs from the expected one, without saying what that is."""
    if expected == 0:
        return "it should be zero"
    if got == 0:
        return "it is zero, and should not be"
    ratio = got / expected
    if ratio < 0:
        return "the sign is wrong" + (" (the size is right)" if math.isclose(-ratio, 1, rel_tol=1e-3) else "")
    for factor in (2, 3, 4, 10, 100, 1000):
        for r, word in ((factor, "large"), (1 / factor, "small")):
            if math.isclose(ratio, r, rel_tol=1e-3):
                return f"it is {factor} times too {word}"
    off = abs(ratio - 1)
    size = "less than 1 %" if off < 0.01 else "1–10 %" if off < 0.1 else "10–50 %" if off < 0.5 else "more than 50 %"
    return f"it is too {'high' if ratio > 1 else 'low'}, by {size}"


def value(name: str, answer: Any, expected: Any, rtol: float = 1e-6) -> CheckResult:
    """Check a single answer (a number, array or tensor) against the expected one.

    A wrong answer is told its shape, sign, factor or how far off it is (in
    percent bands), never the expected value. ``...`` counts as not answered yet.
    """
    if answer is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    want, have = _as_array(expected), _as_array(answer)
    if want is None:
        raise TypeError(f"the expected answer must be numeric; got {type(expected).__name__}")
    if have is None:
        return CheckResult(name, False, f"expected a number or an array, got {type(answer).__name__}")
    if want.shape != have.shape:
        return CheckResult(name, False, f"expected shape {want.shape}, got shape {have.shape}.")
    if not np.all(np.isfinite(have)):
        return CheckResult(name, False, "the answer contains NaN or infinity.")
    close = np.isclose(have, want, rtol=rtol, atol=1e-12)
    if close.all():
        return CheckResult(name, True, "correct.")
    if want.ndim == 0:
        return CheckResult(name, False, _how_far(float(want), float(have)) + ".")
    where = tuple(int(i) for i in np.argwhere(~close)[0])
    return CheckResult(
        name, False, f"{int((~close).sum())} of {want.size} entries are wrong; at index {where} "
        f"{_how_far(float(want[where]), float(have[where]))}."
    )


def _detached(answer: Any) -> Any:
    """A tuple or list of numbers and tensors with every tensor detached from autograd's graph."""
    if isinstance(answer, (tuple, list)):
        return [a.detach() if isinstance(a, torch.Tensor) else a for a in answer]
    return answer


def _named_mistake(got: Sequence[Any], variants: dict[str, Sequence[Any]], mistakes: dict[str, str]) -> str:
    """A hint naming the mistake whose variant output ``got`` matches, else ``""``."""
    for key, variant in variants.items():
        if all(explain_difference(want, have, rtol=1e-9, atol=1e-12) is None for want, have in zip(variant, got)):
            return f" It looks like this mistake: {mistakes[key]}."
    return ""
