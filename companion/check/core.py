"""The engine of the self-checks: each check is a :class:`CheckSpec` in :data:`SPECS`.

:func:`produce` runs the student's function on cases drawn from a seed, forbidden operations blocked, and
records the outputs as plain data; :func:`judge` recomputes the reference on the same cases and says how the
answer differs (an error and its line, a shape, a dtype, a sign, a factor, a known mistake), never the
expected answer. ``check.<name>(...)`` is ``judge(name, seed, produce(name, args, seed))``, so a self-check
and a grader that judges saved outputs (:func:`save_produced`) never disagree.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
import re
import secrets
import sys
import textwrap
import traceback
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import BuiltinMethodType, CodeType, ModuleType, NoneType
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SPECS", "CheckResult", "CheckSpec", "ForbiddenCallError", "Hint", "PLACEHOLDER_MESSAGE", "compare",
           "explain_difference", "hint", "judge", "load_produced", "produce", "register_hint", "save_produced",
           "value"]  # fmt: skip

FORMAT = "companion.check/1"
PLACEHOLDER_MESSAGE = "the placeholder `...` is still there: replace it with your answer."
"""The message of a check whose answer is still the placeholder ``...``."""
NONE_MESSAGE = "the function returned None (is a `return` missing, or is the placeholder `...` still there?)"
_HINTS: dict[str, str] = {}
_LIBRARY_DIRS = tuple(str(Path(module.__file__).resolve().parent) for module in (np, torch, sys.modules["companion"]))
_MAX_BYTES = 1 << 28  # what load_produced accepts: 256 MiB of arrays
_ARRAY_TYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}  # dtype.str without byte order
_TENSOR_TYPES = {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                 "float16", "bfloat16", "float32", "float64"}  # fmt: skip


def register_hint(name: str, text: str) -> None:
    """Record the hint that :func:`hint` shows for the check ``name``."""
    _HINTS[name] = text


@dataclass(frozen=True)
class Hint:
    """A check's hint, displayed as ``💡 name: text``."""

    name: str
    text: str

    def __str__(self) -> str:
        return _fit(f"💡 {self.name}: {self.text}")

    __repr__ = __str__


def hint(name: str) -> Hint:
    """The hint of the check ``name``: a way to approach the exercise, for when a student is stuck."""
    if name not in _HINTS:
        known = ", ".join(sorted(_HINTS)) or "none"
        raise ValueError(f"no check named {name!r} has a hint; checks with hints: {known}")
    return Hint(name, _HINTS[name])


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check, truthy when passed; a failed one whose check has a hint says how to ask for it."""

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

    __repr__ = __str__


def _fit(text: str, width: int = 80) -> str:
    """``text`` with each line wrapped to ``width`` columns, so that it fits a book's code cell."""
    return "\n".join(
        textwrap.fill(line, width, subsequent_indent="   ", break_on_hyphens=False) if len(line) > width else line
        for line in text.splitlines()
    )


class ForbiddenCallError(RuntimeError):
    """Raised when a student's function calls what its exercise asks to do without."""


Case = tuple[str, tuple]


@dataclass(frozen=True)
class CheckSpec:
    """What one check declares; the engine does the rest.

    ``reference(*case)`` gives a case's expected output; ``cases(generator)`` lists ``(description, args)``.
    A value check has no cases: its first ``answers`` arguments are the answers, the rest the question
    (``reference(*question)``), which ``prepare`` turns into plain data where the student's code runs.
    ``mistakes`` maps what a student is told to a variant of the reference, named when the answer matches
    it on every case; ``diagnose(case, expected, got)`` may add a sentence. ``forbidden``: dotted names that
    raise while the student's function runs (as does the reference, unless ``block_reference`` is off).
    ``apply(student, *case)`` runs the student on a case (default ``student(*case)``); ``view(case, output)``
    compares a derived quantity instead of the raw output (the step instead of the new θ).
    """

    name: str
    reference: Callable[..., Any]
    cases: Callable[[torch.Generator], list[Case]] | None = None
    answers: int = 0
    labels: tuple[str, ...] = ()
    mistakes: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    diagnose: Callable[[tuple, Any, Any], str] | None = None
    forbidden: tuple[str, ...] = ()
    apply: Callable[..., Any] | None = None
    prepare: Callable[..., tuple] | None = None
    block_reference: bool = True
    view: Callable[[tuple, Any], Any] | None = None
    rtol: float = 1e-6
    atol: float = 1e-8
    passed: str = ""
    hint: str = ""


SPECS: dict[str, CheckSpec] = {}
"""Every check of the course by its public name, ``check.<name>``."""


def define(spec: CheckSpec, *params: str | tuple[str, Any], doc: str) -> Callable[..., CheckResult]:
    """Register ``spec`` in :data:`SPECS` (and its hint) and give its public check ``check.<name>``: ``judge`` of
    ``produce`` on a fresh seed, documented by ``doc``, taking ``params`` (names, or ``(name, default)`` pairs;
    by default the student's function ``student`` alone)."""
    SPECS[spec.name] = spec
    if spec.hint:
        register_hint(spec.name, spec.hint)

    def parameter(p: str | tuple[str, Any]) -> inspect.Parameter:
        name, default = (p, inspect.Parameter.empty) if isinstance(p, str) else p
        annotation = "Callable[..., Any]" if name == "student" else "Any"
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)

    signature = inspect.Signature([parameter(p) for p in params or ("student",)], return_annotation="CheckResult")

    def check(*args: Any, **kwargs: Any) -> CheckResult:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return _self_check(spec, tuple(bound.arguments.values()))

    check.__name__ = check.__qualname__ = spec.name
    check.__doc__, check.__signature__ = doc, signature  # type: ignore[attr-defined]
    check.__module__ = sys._getframe(1).f_globals["__name__"]  # the defining module, as namedtuple does
    return check


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A case's random tensor: ``scale`` times standard normal entries of ``shape``, drawn from ``gen``."""
    return scale * torch.randn(shape, generator=gen, dtype=dtype)


def sampler(gen: torch.Generator, dtype: torch.dtype = torch.float64) -> Callable[..., torch.Tensor]:
    """:func:`randn` bound to ``gen`` and ``dtype``: ``r(*shape, scale=...)``, as a case builder draws."""
    return functools.partial(randn, gen, dtype=dtype)


def plural(n: int, word: str) -> str:
    """``"1 merge"``, ``"2 merges"``: a count in a case's description or a message."""
    return f"{n} {word}{'s' * (n != 1)}"


def rows_sum_to(total: float, message: str, atol: float = 1e-4) -> Callable[[tuple, Any, Any], str]:
    """A ``diagnose``: ``message`` for a finite tensor of the expected shape whose rows (along the last dimension)
    do not sum to ``total``."""

    def diagnose(case: tuple, expected: Any, got: Any) -> str:
        sums = got.double().sum(-1)
        if got.shape != expected.shape or not sums.isfinite().all():
            return ""
        return "" if torch.allclose(sums, torch.full_like(sums, total), atol=atol) else message

    return diagnose


def scaled(reference: Callable[..., Any], factor: float | Callable[..., float]) -> Callable[..., Any]:
    """A mistake: ``reference`` with every output multiplied by ``factor`` (a number or a function of the case)."""

    def variant(*case: Any) -> Any:
        f = factor(*case) if callable(factor) else factor
        out = reference(*case)
        return type(out)(o * f for o in out) if isinstance(out, (tuple, list)) else out * f

    return variant


def summed(reference: Callable[..., Any], over: int = 0) -> Callable[..., Any]:
    """A mistake: the sum that ``reference`` averages, over the entries of its argument number ``over``."""
    return scaled(reference, lambda *case: len(case[over]))


def keyed(reference: Callable[..., Any], mistakes: Mapping[str, str]) -> dict[str, Callable[..., Any]]:
    """Mistakes made by ``reference(*case, mistake=key)``, told by ``mistakes[key]``."""
    return {text: functools.partial(reference, mistake=key) for key, text in mistakes.items()}


def _self_check(spec: CheckSpec, args: tuple) -> CheckResult:
    seed = secrets.randbits(31)
    return _judge(spec, seed, _produce(spec, args, seed))


# --- the student's half: run, block, record -----------------------------------------------------


@dataclass(frozen=True)
class Raised:
    """An error the student's code raised: its type, message and the student's own line."""

    type: str
    message: str
    line: str = ""


@dataclass(frozen=True)
class Opaque:
    """An object that is neither a number, a string, a tensor nor a container: only its type travels."""

    type: str


class Wrong(Exception):
    """Raised by a spec's ``apply`` when the student's output cannot be compared; says why."""


def _resolve(dotted: str) -> Any:
    """The object a dotted name stands for (``"torch.Tensor.softmax"``), or None when it does not exist or its
    package is not imported (a student's function cannot call what it has no way to reach)."""
    module, _, rest = dotted.partition(".")
    obj = sys.modules.get(module)
    for part in rest.split(".") if obj is not None else ():
        try:
            obj = getattr(obj, part) if hasattr(obj, part) else importlib.import_module(f"{obj.__name__}.{part}")
        except (ImportError, AttributeError):
            return None
    return obj


_PUBLIC_ATEN = ("torch", "torch._C._nn", "torch._C._VariableFunctions", "torch.Tensor")


def aten(*ops: str) -> tuple[str, ...]:
    """The dotted names of PyTorch's internal operators ``ops``: ``torch.ops.aten.<op>``, every overload of
    each (``torch.ops.aten.<op>.<overload>``) and every public spelling of it (``torch.<op>``,
    ``torch._C._nn.<op>``, ``torch._C._VariableFunctions.<op>``, ``torch.Tensor.<op>``, where they exist):
    a torch function mode sees a call by the object called, and a student's function may call any of them.
    An operator this PyTorch lacks is left out."""
    names = []
    for op in ops:
        try:
            packet = getattr(torch.ops.aten, op)
        except (AttributeError, RuntimeError):
            continue
        names += [f"torch.ops.aten.{op}", *(f"torch.ops.aten.{op}.{overload}" for overload in packet.overloads()),
                  *(f"{where}.{op}" for where in _PUBLIC_ATEN)]
    return tuple(names)


ESCAPES = ("threading.Thread.start", "_thread.start_new_thread", "_thread.start_joinable_thread", "sys.setprofile",
           "sys.settrace", "threading.setprofile", "threading.settrace", "subprocess.Popen._execute_child", "os.system",
           "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp",
           *(f"os.exec{suffix}" for suffix in ("v", "ve", "l", "le", "lp", "lpe", "vp", "vpe")))  # fmt: skip
"""What every check blocks besides its own forbidden operations: ways out of the block itself (another thread
or process, which neither hook watches; switching a hook off)."""


_GRAD_ON = ("autograd (recording gradients, backward or forward, is off while an exercise that computes them "
            "by hand runs)")


def _recording() -> bool:
    """Whether autograd records: a graph for the backward pass, or dual numbers of the forward mode."""
    return torch.is_grad_enabled() or torch._C._is_fwd_grad_enabled()


def _code_key(code: CodeType) -> tuple:
    """A function's code by its file and what it does, not by its line or name: a copy of it
    (``types.FunctionType(f.__code__.replace(co_name=...), ...)``) has the same key, while a student's
    function never shares a file with the course's, however alike the two are."""
    return code.co_filename, code.co_code, code.co_consts, code.co_names


def _dispatched(function: Any) -> tuple:
    """The functions that ``function`` runs: the two it chooses between when it is one of PyTorch's
    ``boolean_dispatch`` wrappers (``F.max_pool2d``, whose code every such wrapper shares), else itself."""
    table = getattr(sys.modules.get("torch._jit_internal"), "boolean_dispatched", {})
    try:
        choice = table.get(function)
    except TypeError:  # not a function a weak-keyed table can hold
        choice = None
    return (choice["if_true"], choice["if_false"]) if choice else (function,)


class _Blocker(TorchFunctionMode):
    """Within ``with``, the forbidden operations raise :class:`ForbiddenCallError` and are recorded,
    however the student's code reached them: torch calls through this torch function mode, Python
    functions (the course's own, captured, decorated or copied) by their file and bytecode, and built-in
    functions (``sys.setprofile``) by identity, both through a profile hook. Where autograd is forbidden,
    recording gradients is off while the student's code runs, and switching it on is blocked."""

    def __init__(self, forbidden: Sequence[str], extra: Sequence[Any] = ()) -> None:
        super().__init__()
        named = [(name, _resolve(name)) for name in (*forbidden, *ESCAPES)]
        named += [("the check's own reference", o) for o in extra]
        self.objects: dict[int, tuple[Any, str]] = {}
        self.codes: dict[tuple, str] = {}
        for name, obj in named:  # the first name of an object is the one that is told
            owner = getattr(obj, "__self__", None)
            if isinstance(obj, BuiltinMethodType) and not isinstance(owner, (ModuleType, type, NoneType)):
                obj = getattr(type(owner), obj.__name__)  # an object's built-in method: as the hook sees it
            if obj is not None:
                self.objects.setdefault(id(obj), (obj, name))
            function = inspect.unwrap(getattr(obj, "__func__", obj)) if callable(obj) else obj
            for body in _dispatched(function):
                if (code := getattr(body, "__code__", None)) is not None:  # a decorator's body, not its wrapper
                    self.codes.setdefault(_code_key(code), name)
        self.blocked: list[str] = []
        self._watching = False
        self._grad_off = "torch.autograd.grad" in forbidden  # no graph is recorded, so none can be walked by hand

    def _block(self, name: str) -> None:
        if name not in self.blocked:
            self.blocked.append(name)
        raise ForbiddenCallError(f"this exercise asks you to do without {name}")

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if id(func) in self.objects:
            self._block(self.objects[id(func)][1])
        self._refuse_recording()
        out = func(*args, **(kwargs or {}))
        self._refuse_recording()  # switched on and off again inside an override of the student's
        return out

    def _refuse_recording(self) -> None:
        if self._grad_off and _recording():
            self._block(_GRAD_ON)

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if not self._watching:
            return
        self._refuse_recording()
        if event == "call" and (name := self.codes.get(_code_key(frame.f_code))):
            self._block(name)
        elif event == "c_call":
            # a bound method (z.softmax) is a new object at each access: it is known by its class's method
            method = getattr(type(getattr(arg, "__self__", None)), getattr(arg, "__name__", ""), None)
            for found in (arg, method):
                if id(found) in self.objects:
                    self._block(self.objects[id(found)][1])

    def __enter__(self) -> _Blocker:
        self._saved = sys.getprofile()
        self._grad_was = torch.is_grad_enabled(), torch._C._is_fwd_grad_enabled()
        if self._grad_off:
            torch.set_grad_enabled(False)
            torch._C._set_fwd_grad_enabled(False)
        super().__enter__()
        sys.setprofile(self._profile)
        self._watching = True
        return self

    def __exit__(self, *exc: Any) -> None:
        intact = sys.getprofile() == self._profile
        self._watching = False
        sys.setprofile(self._saved)
        super().__exit__(*exc)
        recording = _recording()
        torch.set_grad_enabled(self._grad_was[0])
        torch._C._set_fwd_grad_enabled(self._grad_was[1])
        if self._grad_off and recording and exc[0] is None and not self.blocked:
            self._block(_GRAD_ON)
        # a hook that raised is unset by Python; one that is gone while nothing was blocked was switched
        # off by a route neither hook sees (ctypes, say)
        if not intact and exc[0] is None and not self.blocked:
            self._block("switching off the check's blocking")


def _student_line(err: BaseException) -> str:
    """``" (your line N: source)"`` for the deepest frame of ``err`` outside numpy, torch and companion."""
    frames = [
        frame for frame in traceback.extract_tb(err.__traceback__)
        if not str(Path(frame.filename).resolve()).startswith(_LIBRARY_DIRS)
    ]  # fmt: skip
    if not frames:
        return ""
    source = f": {frames[-1].line.strip()}" if frames[-1].line else ""
    return f" (your line {frames[-1].lineno}{source})"


def _fresh(args: Sequence[Any]) -> tuple:
    """``args`` with every tensor (also in a list) cloned, so that a function that modifies its input spoils nothing."""
    return tuple(
        a.clone() if isinstance(a, torch.Tensor) else list(_fresh(a)) if isinstance(a, list) else a for a in args
    )


def _encode(obj: Any, arrays: dict[str, np.ndarray], depth: int = 0) -> Any:
    """``obj`` as JSON-able data; tensors and arrays go to ``arrays`` and are referred to by key."""
    if obj is None or isinstance(obj, (bool, int, float, str)) and not isinstance(obj, np.generic):
        return obj[:200] if isinstance(obj, str) else obj
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return obj.item()
    if obj is Ellipsis:
        return {"$": "ellipsis"}
    if isinstance(obj, (Raised, Wrong)):
        return {"$": "raised", **vars(obj)} if isinstance(obj, Raised) else {"$": "wrong", "message": str(obj)}
    key = f"a{len(arrays)}"
    if isinstance(obj, torch.Tensor) and obj.layout == torch.strided and not obj.is_complex():
        t = obj.detach().cpu().resolve_neg()
        arrays[key] = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()
        return {"$": "tensor", "key": key, "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        arrays[key] = obj.copy()
        return {"$": "ndarray", "key": key}
    if isinstance(obj, (tuple, list)) and depth < 4 and len(obj) <= 10_000:
        return {"$": type(obj).__name__ if type(obj) in (tuple, list) else "tuple",
                "items": [_encode(o, arrays, depth + 1) for o in obj]}  # fmt: skip
    if isinstance(obj, dict) and depth < 4 and len(obj) <= 1000 and all(isinstance(k, str) for k in obj):
        return {"$": "dict", "items": {k: _encode(v, arrays, depth + 1) for k, v in obj.items()}}
    return {"$": "object", "type": "function" if callable(obj) else type(obj).__name__}


def _produce(spec: CheckSpec, args: tuple, seed: int) -> dict:
    arrays: dict[str, np.ndarray] = {}
    cases = None
    if spec.answers:
        question = args[spec.answers:]
        args = (*args[: spec.answers], *(spec.prepare(*question) if spec.prepare else question))
    elif len(args) == 1 and callable(args[0]):
        cases = []
        for _, case in spec.cases(torch.Generator().manual_seed(seed)):
            blocker = _Blocker(spec.forbidden, (spec.reference,) if spec.block_reference else ())
            try:
                with blocker:  # the output is read under the block too: it may compute its value when read
                    out = spec.apply(args[0], *_fresh(case)) if spec.apply else args[0](*_fresh(case))
                    encoded = _encode(out, arrays)
            except Exception as err:  # the student's code may fail in any way: record it, don't crash
                out = err if isinstance(err, Wrong) else Raised(type(err).__name__, str(err)[:300], _student_line(err))
                encoded = _encode(out, arrays)
            cases.append({"out": encoded, "blocked": blocker.blocked})
            if isinstance(out, (Raised, Wrong)) or blocker.blocked:
                break
    data = {"format": FORMAT, "check": spec.name, "seed": seed, "args": [_encode(a, arrays) for a in args]}
    return {**data, "cases": cases, **arrays}


def produce(name: str, args: tuple, seed: int) -> dict:
    """The student's half of the check ``name``, as plain data: ``format``, ``check``, ``seed``, ``args``
    (encoded; a function as its type only), ``cases`` (``{"out": ..., "blocked": [names]}`` per case run on
    the cases of ``seed``, up to the first error or blocked call; None for a value check or a non-function)
    and the NumPy arrays they refer to (``a0``, ``a1``, …)."""
    return _produce(_spec(name), tuple(args), seed)


def _spec(name: str) -> CheckSpec:
    if name not in SPECS:
        raise ValueError(f"no check named {name!r}; the checks: {', '.join(sorted(SPECS))}")
    return SPECS[name]


# --- plain data on disk -----------------------------------------------------------------------


def save_produced(path: str | Path, produced: dict) -> None:
    """Write ``produced`` to ``path``: one ``.npz`` file, the arrays as arrays and the rest as JSON."""
    arrays = {k: v for k, v in produced.items() if isinstance(v, np.ndarray)}
    rest = json.dumps({k: v for k, v in produced.items() if k not in arrays})
    with open(path, "wb") as file:
        np.savez(file, __json__=np.array(rest), **arrays)


def load_produced(path: str | Path) -> dict:
    """Read what :func:`save_produced` wrote, without pickle; ValueError for anything malformed."""
    try:
        with zipfile.ZipFile(path) as archive:
            if sum(info.file_size for info in archive.infolist()) > _MAX_BYTES or _declared_bytes(archive) > _MAX_BYTES:
                raise ValueError(f"{path}: larger than {_MAX_BYTES} bytes")
        with np.load(path, allow_pickle=False) as npz:
            loaded = {k: npz[k] for k in npz.files}
        text = loaded.pop("__json__", None)
        if text is None or text.dtype.kind != "U" or text.shape != ():
            raise ValueError(f"{path}: no JSON part")
        data = json.loads(str(text))  # a JSONDecodeError is a ValueError
    except (OSError, zipfile.BadZipFile, EOFError, RecursionError) as err:
        raise ValueError(f"{path}: not a file of produced outputs ({type(err).__name__})") from err
    if not isinstance(data, dict) or any(not re.fullmatch(r"a\d+", k) or a.dtype.str[1:] not in _ARRAY_TYPES
                                         for k, a in loaded.items()):  # fmt: skip
        raise ValueError(f"{path}: malformed produced outputs")
    produced = {**data, **loaded}
    _spec(str(produced.get("check")))
    _unpack(produced)  # raises ValueError on anything malformed
    return produced


def _declared_bytes(archive: zipfile.ZipFile) -> int:
    """The bytes the ``.npy`` members of ``archive`` declare in their headers (shape × item size), read
    before any array is: a header may claim far more than its file holds, and numpy allocates that first."""
    total = 0
    for info in archive.infolist():
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{info.filename}: .npy format {version} is not one np.save writes here")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(member)
        total += math.prod(shape) * dtype.itemsize
    return total


def _decode(obj: Any, arrays: Mapping[str, Any], depth: int = 0) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("$"), str) and depth < 6:
        tag, items = obj["$"], obj.get("items")
        if tag == "ellipsis":
            return Ellipsis
        if tag == "raised":
            return Raised(str(obj.get("type")), str(obj.get("message")), str(obj.get("line", "")))
        if tag in ("wrong", "object"):
            return Wrong(str(obj.get("message"))) if tag == "wrong" else Opaque(str(obj.get("type")))
        array = arrays.get(str(obj.get("key"))) if tag in ("tensor", "ndarray") else None
        if isinstance(array, np.ndarray):
            name = str(obj.get("dtype"))
            dtype = getattr(torch, name) if tag == "tensor" and name in _TENSOR_TYPES else None
            if tag == "tensor" and dtype is None:
                raise ValueError(f"unknown dtype {obj.get('dtype')!r}")
            return array if tag == "ndarray" else torch.from_numpy(np.array(array)).to(dtype)
        if tag in ("tuple", "list") and isinstance(items, list):
            return (tuple if tag == "tuple" else list)(_decode(o, arrays, depth + 1) for o in items)
        if tag == "dict" and isinstance(items, dict):
            return {str(k): _decode(v, arrays, depth + 1) for k, v in items.items()}
    raise ValueError(f"malformed produced value: {str(obj)[:80]}")


def _unpack(produced: dict) -> tuple[list, list | None]:
    """The decoded arguments and case records ``(output, blocked)`` of ``produced``; ValueError if malformed."""
    if not isinstance(produced, dict) or produced.get("format") != FORMAT:
        raise ValueError("not produced outputs of companion.check")
    args, cases = produced.get("args"), produced.get("cases")
    if not isinstance(args, list) or not (cases is None or isinstance(cases, list)):
        raise ValueError("malformed produced outputs: args and cases")
    for record in cases or []:
        blocked = record.get("blocked") if isinstance(record, dict) else None
        if not isinstance(blocked, list) or not all(isinstance(b, str) for b in blocked):
            raise ValueError("malformed produced outputs: a case record")
    records = None if cases is None else [(_decode(r.get("out"), produced), r["blocked"]) for r in cases]
    return [_decode(a, produced) for a in args], records


# --- the grader's half: compare and explain ---------------------------------------------------


def judge(name: str, seed: int, produced: dict, question: tuple | None = None) -> CheckResult:
    """The verdict of the check ``name`` on ``produced`` (from :func:`produce` with the same ``seed``): the
    reference recomputed on the cases of ``seed``; nothing of ``produced`` is trusted but its data. A check
    of typed-in answers is asked ``question`` (its arguments after the answers) where one is given, instead
    of the question ``produced`` says it was asked."""
    if produced.get("check") != name or produced.get("seed") != seed:
        raise ValueError(f"these outputs were produced for {produced.get('check')!r}, not for {name!r} with this seed")
    return _judge(_spec(name), seed, produced, question)


def _judge(spec: CheckSpec, seed: int, produced: dict, question: tuple | None = None) -> CheckResult:
    args, records = _unpack(produced)
    if spec.answers and question is not None:
        asked = spec.prepare(*question) if spec.prepare else question
        args = [*args[: spec.answers], *_fresh(asked)]

    def failed(message: str) -> CheckResult:
        return CheckResult(spec.name, False, message)

    if spec.answers:
        answers = args[: spec.answers]
        cases: list[Case] = [("", tuple(args[spec.answers:]))]
        records = [(answers[0] if spec.answers == 1 else tuple(answers), [])]
        for answer in answers:
            if answer is Ellipsis or isinstance(answer, dict) and Ellipsis in answer.values():
                return failed(PLACEHOLDER_MESSAGE)
            if answer is None:
                return failed("no answer yet: the answer is None.")
    else:
        if records is None:
            return failed(PLACEHOLDER_MESSAGE if args[0] is Ellipsis else f"expected a function, got {_kind(args[0])}.")
        cases = spec.cases(torch.Generator().manual_seed(seed))
        if not 0 < len(records) <= len(cases):
            raise ValueError(f"{spec.name}: {len(records)} case records for {len(cases)} cases")
    for number, ((text, case), (got, blocked)) in enumerate(zip(cases, records), start=1):
        where = f"case {number} ({text})" if text else ""
        if blocked:
            line = got.line if isinstance(got, Raised) else ""
            return failed(f"{where}: this exercise asks you to do without {', '.join(blocked)}, and your function "
                          f"calls it{line}.")  # fmt: skip
        if isinstance(got, Raised):
            return failed(f"{where} raised {got.type}: {got.message}{got.line}.{_extra(spec, case, None, got)}")
        if isinstance(got, Wrong):
            return failed(f"{where}: {got}.")
        try:
            expected = spec.reference(*_fresh(case))
        except (TypeError, ValueError) as err:  # only the question of a value check can be malformed
            raise ValueError(f"{spec.name}: not a question this check answers: {err}") from err
        why = _difference(spec, case, expected, got)
        if why is not None:
            named = _named(spec, cases, records, number - 1)
            return failed(f"{where}: {why}.{named}{_extra(spec, case, expected, got)}".removeprefix(": "))
    if len(records) < len(cases):
        raise ValueError(f"{spec.name}: the case records stop early without an error")
    return CheckResult(spec.name, True, spec.passed or f"{len(cases)} of {len(cases)} cases match the reference.")


def _difference(spec: CheckSpec, case: tuple, expected: Any, got: Any) -> str | None:
    if spec.view is not None:
        try:
            expected, got = spec.view(case, expected), spec.view(case, got)
        except Wrong as err:
            return str(err)
        except Exception:  # an output the view cannot take apart is compared as it is
            pass
    return explain_difference(expected, got, spec.rtol, spec.atol, spec.labels, factors=not spec.answers)


def _extra(spec: CheckSpec, case: tuple, expected: Any, got: Any) -> str:
    try:
        return f" {spec.diagnose(case, expected, got)}".rstrip() if spec.diagnose else ""
    except Exception:  # a diagnosis that does not fit this answer's shape or type says nothing
        return ""


def _named(spec: CheckSpec, cases: list[Case], records: list, failing: int) -> str:
    """`` It looks like this mistake: …`` for the first mistake whose variant the answer matches on the
    failing case and on every other case where both give an output, else ``""``."""
    order = [failing] + [i for i in range(len(records)) if i != failing]
    for text, variant in spec.mistakes.items():
        for i in order:
            got = records[i][0]
            if isinstance(got, (Raised, Wrong)):
                continue
            try:
                want = variant(*_fresh(cases[i][1]))
            except Exception:  # a mistake that cannot run on this case's shapes
                if i == failing:
                    break
                continue
            if _difference(spec, cases[i][1], want, got) is not None:
                break
        else:
            return f" It looks like this mistake: {text}."
    return ""


def _kind(obj: Any) -> str:
    if isinstance(obj, str):
        return "a string (write a number without quotes)"
    return obj.type if isinstance(obj, Opaque) else type(obj).__name__


def _array(x: Any) -> np.ndarray | None:
    """``x`` as a NumPy array when it is numeric (a number, tensor, array or list of numbers), else None."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        return (x.double() if x.is_floating_point() else x).numpy()
    if x is None or isinstance(x, (bool, str, bytes)):
        return None
    try:
        array = np.asarray(x)
    except (TypeError, ValueError, RuntimeError):
        return None
    if array.dtype.kind not in "biuf" or array.dtype.kind == "b" and not isinstance(x, np.ndarray):
        return None
    return array


def _how_far(expected: float, got: float, factors: bool = True) -> str:
    """How a number differs from the expected one, without saying what that is. Without ``factors`` (an
    answer typed in, where "2 times too small" or "the size is right" would give the number away) only the
    sign and a band of percent are told."""
    if expected == 0:
        return "it should be zero"
    if got == 0:
        return "it is zero, and should not be"
    ratio = got / expected
    if ratio < 0:
        size_right = factors and math.isclose(-ratio, 1, rel_tol=1e-3)
        return "the sign is wrong" + (" (the size is right)" if size_right else "")
    for factor in (2, 3, 4, 10, 100, 1000) if factors else ():
        for r, word in ((factor, "large"), (1 / factor, "small")):
            if math.isclose(ratio, r, rel_tol=1e-3):
                return f"it is {factor} times too {word}"
    off = abs(ratio - 1)
    size = "less than 1 %" if off < 0.01 else "1–10 %" if off < 0.1 else "10–50 %" if off < 0.5 else "more than 50 %"
    if ratio >= 10 or ratio <= 0.1:
        size = "more than a factor of 10"
    return f"it is too {'high' if ratio > 1 else 'low'}, by {size}"


def _dtype_note(expected: Any, got: Any, close_loosely: bool) -> str:
    """What a float64 answer computed in a lower precision is told."""
    lower = isinstance(got, torch.Tensor) and got.dtype in (torch.float32, torch.float16, torch.bfloat16)
    if not lower or not isinstance(expected, torch.Tensor) or expected.dtype != torch.float64:
        return ""
    if close_loosely:
        return (f"; the values are right only to {got.dtype} precision: keep the computation in float64, "
                "as the inputs are (create new tensors with dtype=x.dtype)")  # fmt: skip
    return f" (your result is {got.dtype}; the inputs are float64)"


def explain_difference(
    expected: Any, got: Any, rtol: float = 1e-6, atol: float = 1e-8, labels: Sequence[str] = (), factors: bool = True
) -> str | None:
    """None when ``got`` matches ``expected``, else how it differs, without the expected value.

    Numbers, arrays and tensors match when ``|got − expected| ≤ atol + rtol·|expected|`` entry by
    entry with equal shapes; a tuple or list matches entry by entry (``labels`` name its entries).
    The difference is told as a shape, a dtype, NaN, a sign, a factor (unless not ``factors``) or how
    far off in percent.
    """
    if got is None:
        return NONE_MESSAGE
    if isinstance(expected, (tuple, list)):
        if isinstance(got, torch.Tensor) and got.shape == (len(expected),) and labels:
            got = tuple(got)
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            what = f"{len(got)}" if isinstance(got, (tuple, list)) else _kind(got)
            names = f" ({', '.join(labels)})" if labels else ""
            return f"expected {plural(len(expected), 'result')}{names}, got {what}"
        for number, (want, have) in enumerate(zip(expected, got), start=1):
            why = explain_difference(want, have, rtol, atol, factors=factors)
            if why is not None:
                return f"{labels[number - 1] if labels else f'entry {number}'}: {why}"
        return None
    want, have = _array(expected), _array(got)
    if want is None:
        return None if got == expected else "it is not the expected answer"
    if have is None:
        return f"expected {'a number' if want.ndim == 0 else 'a tensor'}, got {_kind(got)}"
    if want.shape != have.shape:
        return f"expected shape {want.shape}, got shape {have.shape}"
    if want.dtype == bool and have.dtype != bool:
        return f"expected a bool tensor, got dtype {getattr(got, 'dtype', have.dtype)}"
    if want.dtype.kind in "iu" and not np.all(np.mod(have, 1) == 0):
        return "expected a whole number" if want.ndim == 0 else "expected whole numbers"
    if not np.all(np.isfinite(have.astype(np.float64))) and np.all(np.isfinite(want.astype(np.float64))):
        return "the result contains NaN or infinity"
    close = want == have if want.dtype.kind in "iub" else _close(want, have, rtol, atol)
    if close.all():
        return None
    note = _dtype_note(expected, got, bool(_close(want, have, max(rtol, 1e-4), max(atol, 1e-6)).all()))
    wrong = ~close
    where = tuple(int(i) for i in np.argwhere(wrong)[0]) if want.ndim else ()
    if want.ndim == 0:
        return _how_far(float(want), float(have), factors) + note
    if want.dtype.kind == "b" or note.startswith(";"):
        return f"{int(wrong.sum())} of {want.size} entries differ, the first at index {where}{note}"
    w, h = want.astype(np.float64), have.astype(np.float64)
    if np.all(w != 0):
        ratios = h / w
        if np.allclose(ratios, ratios.flat[0], rtol=1e-6):
            return f"every entry is off the same way: {_how_far(1.0, float(ratios.flat[0]), factors)}{note}"
    return (f"{int(wrong.sum())} of {want.size} entries differ; at index {where} "
            f"{_how_far(float(w[where]), float(h[where]), factors)}{note}")  # fmt: skip


def _close(want: np.ndarray, have: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    w, h = want.astype(np.float64), have.astype(np.float64)
    return np.isclose(h, w, rtol=rtol, atol=atol, equal_nan=True) | ((w == h) & np.isinf(w))


# --- checks of one's own ------------------------------------------------------------------------


def _describe(args: Sequence[Any]) -> str:
    return ", ".join(
        f"tensor of shape {tuple(a.shape)}" if isinstance(a, torch.Tensor) and a.numel() > 6 else repr(a) for a in args
    )


def compare(
    name: str, student: Callable[..., Any], reference: Callable[..., Any], cases: Sequence[Sequence[Any]],
    rtol: float = 1e-6, atol: float = 1e-8, forbidden: Sequence[str] = (),
) -> CheckResult:  # fmt: skip
    """A check of one's own: ``student(*case)`` against ``reference(*case)`` on every case.

    Says which case fails first and how, never the expected value; ``forbidden``: dotted names
    (``"torch.nn.functional.cross_entropy"``) that raise while the student's function runs.
    """
    fixed = [(_describe(case), tuple(case)) for case in cases]
    spec = CheckSpec(name, reference, lambda gen: fixed, rtol=rtol, atol=atol, forbidden=tuple(forbidden),
                     block_reference=False)  # fmt: skip
    return _self_check(spec, (student,))


def value(name: str, answer: Any, expected: Any, rtol: float = 1e-6) -> CheckResult:
    """A check of one's own for a single answer (a number, array or tensor) against ``expected``.

    A wrong answer is told its shape, its sign or how far off it is (in percent bands), never the
    expected value nor a factor that would give it away; ``...`` counts as not answered yet.
    """
    want = _array(expected)
    if want is None:
        raise TypeError(f"the expected answer must be numeric; got {type(expected).__name__}")
    spec = CheckSpec(name, lambda: want, answers=1, rtol=rtol, atol=1e-12, passed="correct.")
    return _self_check(spec, (answer,))

