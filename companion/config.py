"""Run-time settings of the course: the device, the seeds, and the run profile.

This is the only module of ``companion`` that reads the environment:

``COMPANION_DEVICE``
    Forces the device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
``COMPANION_REQUIRE_GPU``
    ``1`` makes :func:`device` raise instead of falling back to the CPU
    (the GPU CI sets it, so a GPU job that silently ran on the CPU fails).
``COMPANION_PROFILE``
    ``quick`` (small subsets, one or two epochs: CI on two CPU cores) or
    ``full`` (the default: the real results of the published book).
"""

from __future__ import annotations

import os
import random
from typing import Literal, TypeVar

import numpy as np
import torch

Profile = Literal["quick", "full"]
PROFILES: tuple[str, ...] = ("quick", "full")
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
