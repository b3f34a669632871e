"""Training: config, losses, the loop, the run folder and resume state.

Names load on first use (no torch until one is needed)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig
    from unetkit.train.trainer import Run, Trainer, train

_LAZY = {"TrainConfig": "unetkit.train.config", "Run": "unetkit.train.trainer", "Trainer": "unetkit.train.trainer",
         "train": "unetkit.train.trainer"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unetkit.train' has no attribute {name!r}")


__all__ = ["Run", "TrainConfig", "Trainer", "train"]
