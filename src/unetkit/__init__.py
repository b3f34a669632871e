"""unetkit: U-Net semantic segmentation for microscopy, medical, satellite and road-scene images.

The public API: `UNet` (the network) and `UNetOptions`, `train(config) -> Run`,
`plan(data, minutes) -> Plan` (the recipe a time budget gets),
`evaluate(model, data) -> dict`, `load(path) -> (model, meta)`, `predict(model, image) -> mask`
(and `Predictor` for repeated calls), and `decode` / `probabilities` for logits. Names load
on first use, so `import unetkit` (and `unetkit --help`) costs no torch until one is needed.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from unetkit.errors import UnetkitError

if TYPE_CHECKING:
    from unetkit.api import plan, train
    from unetkit.infer import Predictor, predict
    from unetkit.infer.evaluate import evaluate
    from unetkit.model.store import load
    from unetkit.nn import UNet, UNetOptions, decode, probabilities, summarize
    from unetkit.train.config import TrainConfig

__version__ = "0.2.0"


_LAZY = {
    "Predictor": "unetkit.infer",
    "predict": "unetkit.infer",
    "TrainConfig": "unetkit.train.config",
    "UNet": "unetkit.nn",
    "UNetOptions": "unetkit.nn",
    "decode": "unetkit.nn",
    "probabilities": "unetkit.nn",
    "summarize": "unetkit.nn",
    "evaluate": "unetkit.infer.evaluate",
    "load": "unetkit.model.store",
}


class _Package(types.ModuleType):
    """`unetkit.train` is the public function, and also the name of the training stage's package
    (`unetkit.plan` likewise).
    Importing that package makes Python bind it as this module's attribute `train`; the setter
    keeps it aside, so `unetkit.train(...)` stays the function and importing unetkit loads no
    training code."""

    @property
    def train(self):  # noqa: ANN201
        from unetkit.api import train

        return train

    @train.setter
    def train(self, package: types.ModuleType) -> None:
        self.__dict__["_train_package"] = package

    @property
    def plan(self):  # noqa: ANN201  (the same for `unetkit.plan`, the function and the package)
        from unetkit.api import plan

        return plan

    @plan.setter
    def plan(self, package: types.ModuleType) -> None:
        self.__dict__["_plan_package"] = package


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unetkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Predictor",
    "TrainConfig",
    "UNet",
    "UNetOptions",
    "UnetkitError",
    "__version__",
    "decode",
    "evaluate",
    "load",
    "plan",
    "predict",
    "probabilities",
    "summarize",
    "train",
]
