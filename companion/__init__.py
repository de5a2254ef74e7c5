"""companion: the tested package of the course *From Neurons to Transformers*.

Each module holds one idea of the course (see the README's table). Importing
``companion`` does nothing else: no downloads, no prints, no plots. The
modules load on first use, so ``import companion; companion.data.mnist()`` works.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

__all__ = [
    "attention",
    "autograd",
    "base_models",
    "check",
    "config",
    "conv",
    "data",
    "distributed",
    "grade",
    "instruct",
    "lora",
    "metrics",
    "models",
    "optim",
    "plot",
    "preference",
    "pretrained",
    "quantize",
    "recurrent",
    "scale",
    "tokenize",
    "train",
]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
