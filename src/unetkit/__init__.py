"""unetkit: U-Net semantic segmentation for microscopy, medical, satellite and road-scene images.

The public API: `UNet` (the network), `train(config) -> Run`, `evaluate(model, data) -> dict`,
`load(path) -> (model, meta)`, `predict(model, image) -> mask` (and `Predictor` for repeated
calls), and `decode` / `probabilities` for logits.
"""

from unetkit import runtime
from unetkit.errors import UnetkitError
from unetkit.infer import Predictor, predict
from unetkit.nn import UNet, decode, probabilities, summarize
from unetkit.train import TrainConfig, load, train
from unetkit.train.evaluate import evaluate

__version__ = "0.1.0"

runtime.configure()  # allocator and threads, once per process; UNETKIT_NO_TUNING=1 opts out

__all__ = [
    "Predictor",
    "TrainConfig",
    "UNet",
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
