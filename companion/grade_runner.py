"""The student's side of grading: run a submission's code cells and produce its answers as data.

:mod:`companion.grade` starts ``python -m companion.grade_runner`` once per
submission, in the submission's own folder (inside the sandbox when there is
one), and sends it a job as JSON on standard input::

    {"cells": [{"source": "...", "answer": null},
               {"source": "...", "answer": {"check": "conv2d_forward",
                                            "call": "check.conv2d_forward(my_conv2d)",
                                            "seed": 123456789, "file": "answers/1.npz"}}],
     "limits": {"cell_seconds": 300, "cpu_seconds": 1200, "memory_bytes": 8589934592,
                "file_bytes": 268435456}}

Before any of the student's code runs, the runner reads the whole job, closes
standard input, puts the limits on itself (:func:`limit`: address space, CPU
time, file size, open files, and no new processes), and imports the checks. It
then executes the cells in order in a fresh ``__main__`` namespace, each under
its own time limit (an alarm that interrupts the cell and goes on with the
next). At an answer cell it executes everything but the final bare check call,
evaluates the arguments of ``call`` (chosen by the grader) in the student's
namespace and writes :func:`companion.check.produce`'s data to ``file`` with
:func:`companion.check.save_produced`. It never judges an answer: the grader
does, in its own process.

Its report is ``progress.jsonl`` in the working folder, one JSON object a line:
``{"cell": i, "event": "start"}`` before cell ``i``, then ``{"cell": i,
"event": "done", "error": null | "NameError: ...", "timeout": false, "seconds": 0.5}``.
Code in this process can tamper with the report and the answer files: that
changes only this submission's own outputs, which the grader judges against its
own reference, with the seed it chose.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import json
import os
import platform
import resource
import signal
import struct
import sys
import time
import types
from collections.abc import Callable
from typing import Any

PROGRESS = "progress.jsonl"
"""The runner's report, in the submission's working folder."""


class CellTimeout(BaseException):
    """Raised in a cell that runs past its time limit (a BaseException, so ``except Exception`` does not stop it)."""


# --- Limits ---------------------------------------------------------------------------------------

_CLONE_THREAD = 0x00010000
_ARCHES = {  # audit arch: (clone, clone3, fork-like syscalls), from the kernel's syscall tables
    "x86_64": (0xC000003E, 56, 435, (57, 58)),
    "aarch64": (0xC00000B7, 220, 435, ()),
}


def no_new_processes(machine: str | None = None) -> bytes | None:
    """A seccomp filter (classic BPF) that lets a process start threads but no other process.

    ``clone`` without ``CLONE_THREAD``, ``fork`` and ``vfork`` fail with EPERM;
    ``clone3`` fails with ENOSYS, so the C library falls back to ``clone``
    (whose flags a filter can read). None on a machine other than x86-64 and
    AArch64, whose syscall numbers this table does not know.
    """
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit, clone, clone3, forks = arch
    allow, deny, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    # (code, jump if true, jump if false, k); jumps are relative to the next instruction
    program = [
        (0x20, 0, 0, 4),  # A = arch
        (0x15, 1, 0, audit),  # same arch: skip the next
        (0x06, 0, 0, allow),  # another ABI (none on these machines): nothing to filter
        (0x20, 0, 0, 0),  # A = syscall number
        (0x35, 0, 1, 0x40000000),  # the x32 ABI of x86-64: refused
        (0x06, 0, 0, deny),
        (0x15, 0, 1, clone3),
        (0x06, 0, 0, enosys),
    ]
    for number in forks:
        program += [(0x15, 0, 1, number), (0x06, 0, 0, deny)]
    program += [
        (0x15, 1, 0, clone),
        (0x06, 0, 0, allow),  # any other syscall
        (0x20, 0, 0, 16),  # A = low half of clone's flags
        (0x45, 1, 0, _CLONE_THREAD),
        (0x06, 0, 0, deny),
        (0x06, 0, 0, allow),
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _forbid_new_processes() -> bool:
    """Install :func:`no_new_processes` on this process (irreversibly); False where it cannot be."""
    program = no_new_processes()
    if program is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fprog = _SockFprog(len(program) // 8, program)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) == 0


def limit(limits: dict[str, int]) -> list[str]:
    """Put the job's resource limits on this process; returns the limits it could not set, in words."""
    missing = []
    pairs = {
        "RLIMIT_AS": limits["memory_bytes"],
        "RLIMIT_CPU": limits["cpu_seconds"],
        "RLIMIT_FSIZE": limits["file_bytes"],
        "RLIMIT_NOFILE": 1024,
        "RLIMIT_CORE": 0,
    }
    for name, value in pairs.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            missing.append(f"the limit {name}")
    if not _forbid_new_processes():
        missing.append("the ban on new processes")
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)  # die with the grader
    return missing


# --- Running the cells ----------------------------------------------------------------------------


def _alarm(signum: int, frame: Any) -> None:
    raise CellTimeout


def _describe(err: BaseException) -> str:
    """``"NameError: name 'x' is not defined"`` on one line; a syntax error with its line in the cell."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, SyntaxError) and err.lineno:
        text = f"{type(err).__name__}: {err.msg} (line {err.lineno})"
    return " ".join(text.split())


def _statements(source: str, answered: bool) -> ast.Module:
    """The cell's statements to run: all of them, but an answer cell's final bare check call."""
    tree = ast.parse(source)
    last = tree.body[-1] if tree.body else None
    if answered and isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
        tree.body.pop()
    return tree


def arguments(call: str, namespace: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of the check call ``call``, evaluated in ``namespace``, unpacked
    where the call unpacks them (``*answers``, ``**options``)."""
    node = ast.parse(call, mode="eval").body
    if not isinstance(node, ast.Call):
        raise ValueError(f"not a check call: {call!r}")
    collect = ast.Call(ast.Name("_arguments_of_the_call", ast.Load()), node.args, node.keywords)
    code = compile(ast.fix_missing_locations(ast.Expression(collect)), "<answer>", "eval")
    return eval(code, namespace, {"_arguments_of_the_call": lambda *args, **kwargs: (args, kwargs)})


VERDICT = "companion.grade verdict"
"""The ``format`` of the data of a check that is not declared as a spec (``check.compare``, ``check.value``)."""


def producer() -> Callable[[str, tuple, dict, int], dict]:
    """``produce(name, args, kwargs, seed)``, bound to the checks as they are before any student's code runs.

    A check declared in :data:`companion.check.SPECS` gives
    :func:`companion.check.produce`'s data (its arguments bound to the check's
    signature, defaults included, all positional); any other check (``compare``, ``value``, whose
    reference comes with the call) runs whole here and gives its verdict only,
    as ``{"format": VERDICT, "check", "seed", "name", "passed", "message"}``.
    """
    import inspect

    from companion import check

    specs, produce = dict(check.SPECS), check.produce
    checks = {name: getattr(check, name) for name in dir(check) if not name.startswith("_")}

    def produced(name: str, args: tuple, kwargs: dict[str, Any], seed: int) -> dict:
        if name in specs:
            bound = inspect.signature(checks[name]).bind(*args, **kwargs)
            bound.apply_defaults()  # as the check itself does: its question's defaults
            return produce(name, tuple(bound.args), seed)
        if name not in checks:
            raise AttributeError(f"companion.check has no check {name!r}")
        result = checks[name](*args, **kwargs)
        return {
            "format": VERDICT, "check": name, "seed": seed,
            "name": str(result.name), "passed": bool(result.passed), "message": str(result.message),
        }  # fmt: skip

    return produced


class _Shell:
    """The little of IPython's ``get_ipython()`` that a converted magic may call: nothing runs."""

    def run_line_magic(self, name: str, line: str) -> None:
        return None

    def system(self, command: str) -> None:
        return None


def run(job: dict[str, Any], report: Any, produce: Callable[..., dict], save: Callable[..., None]) -> None:
    """Run the job's cells in a fresh ``__main__``, reporting each to ``report`` (a text file)."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, get_ipython=_Shell)
    sys.modules["__main__"] = main
    namespace = main.__dict__
    cell_seconds = job["limits"]["cell_seconds"]
    signal.signal(signal.SIGALRM, _alarm)
    emit = report.write
    for index, cell in enumerate(job["cells"]):
        answer = cell.get("answer")
        emit(json.dumps({"cell": index, "event": "start"}) + "\n")
        report.flush()
        error, timeout, began = None, False, time.monotonic()
        try:
            signal.setitimer(signal.ITIMER_REAL, cell_seconds)
            tree = _statements(cell["source"], answer is not None)
            exec(compile(tree, f"<cell {index}>", "exec"), namespace)
            if answer is not None:
                args, kwargs = arguments(answer["call"], namespace)
                produced = produce(answer["check"], args, kwargs, answer["seed"])
                signal.setitimer(signal.ITIMER_REAL, 0)
                save(answer["file"], produced)
        except CellTimeout:
            error, timeout = "CellTimeout", True
        except BaseException as err:  # the student's code may raise anything, SystemExit included
            error = _describe(err)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        done = {"cell": index, "event": "done", "error": error, "timeout": timeout}
        emit(json.dumps({**done, "seconds": round(time.monotonic() - began, 3)}) + "\n")
        report.flush()


def main() -> None:
    """Read the job from standard input, limit this process, run the cells (see the module's docstring)."""
    job = json.loads(sys.stdin.read())
    os.close(0)
    report = open(PROGRESS, "w", encoding="utf-8")  # noqa: SIM115 (open for the whole run)
    missing = limit(job["limits"])
    report.write(json.dumps({"event": "limits", "missing": missing}) + "\n")
    report.flush()
    from companion.check import save_produced

    os.makedirs("answers", exist_ok=True)
    started = time.monotonic()
    run(job, report, producer(), save_produced)
    report.write(json.dumps({"event": "end", "seconds": round(time.monotonic() - started, 3)}) + "\n")
    report.close()


if __name__ == "__main__":
    main()
