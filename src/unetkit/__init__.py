"""unetkit: U-Net semantic segmentation for microscopy, medical, satellite and road-scene images.

The public API: `UNet` (the network) and `UNetOptions`, `train(config) -> Run`,
`evaluate(model, data) -> dict`, `load(path) -> (model, meta)`, `predict(model, image) -> mask`
(and `Predictor` for repeated calls), and `decode` / `probabilities` for logits. Names load
on first use, so `import unetkit` (and `unetkit --help`) costs no torch until one is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from unetkit.errors import UnetkitError

if TYPE_CHECKING:
    from unetkit.infer import Predictor, predict
    from unetkit.infer.evaluate import evaluate
    from unetkit.model.store import load
    from unetkit.nn import UNet, UNetOptions, decode, probabilities, summarize
    from unetkit.train.config import TrainConfig

__version__ = "0.2.0"

# `unetkit.train` is the public function, and also the name of the training stage's package:
# importing that package (cheap, its names are lazy) binds it here once, and the function is
# bound over it, so later imports of unetkit.train.* leave `unetkit.train` the function.
import unetkit.train  # noqa: E402, F401
from unetkit.api import train  # noqa: E402, F811

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
    "predict",
    "probabilities",
    "summarize",
    "train",
]
