"""Run-time settings of the course: the device, the seeds, and the run profile.

This is the only module of ``companion`` that reads the environment:

``COMPANION_DEVICE``
    Forces the device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
``COMPANION_REQUIRE_GPU``
    ``1`` makes :func:`device` raise instead of falling back to the CPU
    (the GPU CI sets it, so a GPU job that silently ran on the CPU fails).
``COMPANION_PRECISION``
    ``auto`` (the default: bf16 mixed precision for the long training runs
    where the device multiplies bf16 natively, see :func:`mixed_precision`),
    ``fp32`` (never) or ``bf16`` (always, even where bf16 is emulated and slow).
``COMPANION_PROFILE``
    ``quick`` (small subsets, one or two epochs: CI on two CPU cores) or
    ``full`` (the default: the real results of the published book).
``COMPANION_PROGRESS``
    ``bar`` (the default: a live progress bar, a widget in Jupyter and Colab)
    or ``text`` (one plain line at the end of each epoch: the built book sets
    it, since a page cannot show a live widget).
``COMPANION_CACHE``
    A writable folder for what the course makes once and reuses, such as the
    trained base models of :mod:`companion.base_models` and downloaded weights
    (:mod:`companion.pretrained`); the default is ``$XDG_CACHE_HOME/companion``
    or ``~/.cache/companion``.
``COMPANION_RECORDS``
    A file that :func:`record` appends the chapters' headline results to
    (``bench/run_notebooks.py`` sets it); unset, :func:`record` writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
from numbers import Real
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch

Profile = Literal["quick", "full"]
PROFILES: tuple[str, ...] = ("quick", "full")
ProgressStyle = Literal["bar", "text"]
PROGRESS_STYLES: tuple[str, ...] = ("bar", "text")
T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {value!r}")


def gpu_available() -> bool:
    """True when CUDA or Apple's MPS can run tensors here."""
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def device() -> torch.device:
    """The device the chapters compute on: CUDA, then Apple MPS, then the CPU.

    ``COMPANION_DEVICE`` overrides the choice. With ``COMPANION_REQUIRE_GPU=1``
    a missing GPU is an error rather than a silent fall-back to the CPU.

    Returns:
        a ``torch.device``.

    Raises:
        RuntimeError: a GPU is required (or named in ``COMPANION_DEVICE``) but absent.
        ValueError: ``COMPANION_DEVICE`` is not a device name torch knows.
    """
    require_gpu = _flag("COMPANION_REQUIRE_GPU")
    forced = os.environ.get("COMPANION_DEVICE", "").strip()
    if forced:
        try:
            chosen = torch.device(forced)
        except RuntimeError as err:
            raise ValueError(
                f"COMPANION_DEVICE must name a torch device such as 'cpu', 'cuda' or 'mps'; got {forced!r}"
            ) from err
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"COMPANION_DEVICE={forced!r} but CUDA is not available on this machine")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"COMPANION_DEVICE={forced!r} but Apple MPS is not available on this machine")
    elif torch.cuda.is_available():
        chosen = torch.device("cuda")
    elif torch.backends.mps.is_available():
        chosen = torch.device("mps")
    else:
        chosen = torch.device("cpu")
    if require_gpu and chosen.type == "cpu":
        raise RuntimeError(
            "COMPANION_REQUIRE_GPU=1 but the chosen device is the CPU "
            f"(CUDA available: {torch.cuda.is_available()}, MPS available: {torch.backends.mps.is_available()})"
        )
    return chosen


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators.

    Args:
        seed: a non-negative integer.

    Returns:
        a fresh CPU ``torch.Generator`` seeded with ``seed``, for code that
        wants its own stream (e.g. :func:`companion.data.batches`).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def _device_or_default(where: torch.device | str | None) -> torch.device:
    return device() if where is None else torch.device(where)


Precision = Literal["fp32", "bf16"]
PRECISION_SETTINGS: tuple[str, ...] = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str | None = None) -> bool:
    """True when ``device`` (default: :func:`device`) multiplies bf16 matrices in hardware.

    CUDA GPUs from Ampere on (not, for instance, Colab's T4, which emulates bf16)
    and CPUs with Intel's AMX tiles (Xeons from Sapphire Rapids on), where a bf16
    matrix product runs several times faster than an fp32 one (``bench/gpt_precision.py``).
    Elsewhere bf16 products are emulated and slower than fp32.
    """
    chosen = _device_or_default(device)
    if chosen.type == "cuda":
        return torch.cuda.get_device_capability(chosen) >= (8, 0)  # Ampere's tensor cores multiply bf16
    if chosen.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, and absent from older torch
        return bool(amx and amx())
    return False


def checked_precision(chosen: object) -> Precision:
    """``chosen`` if it names a precision (``"fp32"`` or ``"bf16"``); otherwise a ``ValueError``."""
    if chosen not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16'; got {chosen!r}")
    return chosen  # type: ignore[return-value]


def precision(device: torch.device | str | None = None) -> Precision:
    """The precision of the long training runs on ``device``, as ``COMPANION_PRECISION`` says.

    ``"bf16"`` (mixed: bf16 products, fp32 weights) when the setting is ``bf16``,
    or ``auto`` (the default) and :func:`native_bf16`; otherwise ``"fp32"``.
    """
    value = os.environ.get("COMPANION_PRECISION", "auto").strip().lower() or "auto"
    if value not in PRECISION_SETTINGS:
        raise ValueError(f"COMPANION_PRECISION must be 'auto', 'fp32' or 'bf16'; got {value!r}")
    if value == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return value  # type: ignore[return-value]


def mixed_precision(
    device: torch.device | str | None = None, chosen: Precision | None = None
) -> contextlib.AbstractContextManager:
    """A context for a training step's forward pass and loss on ``device``.

    With ``chosen`` (default: :func:`precision`) ``"bf16"``, a ``torch.autocast``:
    matrix products run in bf16 while the weights, their gradients, the optimizer's
    state, softmax, norms and losses stay in fp32 (chapter 10); with ``"fp32"`` a
    context that changes nothing (on any device, even one autocast does not know).

    >>> with mixed_precision():  # doctest: +SKIP
    ...     loss = loss_fn(model(x), y)
    >>> loss.backward()  # doctest: +SKIP
    """
    chosen_device = _device_or_default(device)
    if checked_precision(precision(chosen_device) if chosen is None else chosen) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(chosen_device.type, dtype=torch.bfloat16)


def profile() -> Profile:
    """The run profile named by ``COMPANION_PROFILE``: ``"quick"`` or ``"full"`` (default)."""
    value = os.environ.get("COMPANION_PROFILE", "full").strip().lower() or "full"
    if value not in PROFILES:
        raise ValueError(f"COMPANION_PROFILE must be 'quick' or 'full'; got {value!r}")
    return value  # type: ignore[return-value]


def budget(*, quick: T, full: T) -> T:
    """Pick a size by profile: ``quick`` under ``COMPANION_PROFILE=quick``, else ``full``.

    >>> budget(quick=1_000, full=60_000)  # doctest: +SKIP
    60000
    """
    return quick if profile() == "quick" else full


def progress_style() -> ProgressStyle:
    """How training shows its progress, named by ``COMPANION_PROGRESS``: ``"bar"`` (default) or ``"text"``.

    ``"bar"`` is a live tqdm bar (a widget in Jupyter and Colab, text in a
    terminal); ``"text"`` is one line at the end of each epoch, for pages that
    are executed once and read later, such as the built book.
    """
    value = os.environ.get("COMPANION_PROGRESS", "bar").strip().lower() or "bar"
    if value not in PROGRESS_STYLES:
        raise ValueError(f"COMPANION_PROGRESS must be 'bar' or 'text'; got {value!r}")
    return value  # type: ignore[return-value]


def cache_dir() -> Path:
    """The writable cache folder: ``COMPANION_CACHE``, else ``$XDG_CACHE_HOME/companion``, else ``~/.cache/companion``.

    Never the data folder (``COMPANION_DATA``), which may be read-only.
    """
    env = os.environ.get("COMPANION_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache) / "companion"


_RECORD_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _recordable(name: str, value: object) -> float | int | str:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"record {name!r}: a tensor result must hold one number; got shape {tuple(value.shape)}")
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (Real, str)):
        raise TypeError(f"record {name!r}: the value must be a number or a string; got {type(value).__name__}")
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        raise ValueError(f"record {name!r}: the value must be finite; got {value}")
    return int(value) if isinstance(value, int) else float(value)


def record(name: str, value: T) -> T:
    """Mark ``value`` as a headline result of the running chapter, under ``name``; return it unchanged.

    The chapters call it on the results their cells assert, e.g.
    ``config.record("test_accuracy", accuracy)``. When ``COMPANION_RECORDS``
    names a file, one JSON line ``{"name": name, "value": value}`` is appended
    to it (``bench/run_notebooks.py`` collects them per chapter); otherwise
    nothing is written and nothing is shown.

    Args:
        name: lower-case letters, digits and ``_``, starting with a letter.
        value: an int, a float, a string, or a one-element tensor or NumPy scalar;
            numbers must be finite.
    """
    if not isinstance(name, str) or not _RECORD_NAME.fullmatch(name):
        raise ValueError(f"record name must be lower-case letters, digits and '_' (e.g. 'test_accuracy'); got {name!r}")
    entry = {"name": name, "value": _recordable(name, value)}
    target = os.environ.get("COMPANION_RECORDS", "").strip()
    if target:
        with Path(target).open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry) + "\n")
    return value
