"""Planning a run from the data and the machine: the data fingerprint, the machine probe, the
recipe that fits a time budget. Names load on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unetkit.plan.probe import StepCost, step_cost, training_precision

_LAZY = {"StepCost": "unetkit.plan.probe", "step_cost": "unetkit.plan.probe",
         "training_precision": "unetkit.plan.probe"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unetkit.plan' has no attribute {name!r}")


__all__ = ["StepCost", "step_cost", "training_precision"]
