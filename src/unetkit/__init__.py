"""unetkit: U-Net semantic segmentation for microscopy, medical, satellite and road-scene images."""

from unetkit.errors import UnetkitError
from unetkit.nn import UNet, decode, probabilities, summarize

__version__ = "0.1.0"

__all__ = ["UNet", "UnetkitError", "__version__", "decode", "probabilities", "summarize"]
