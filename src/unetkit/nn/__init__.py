"""The network: blocks, the U-Net, logits decoding and the shape/parameter/MAC summary.

Imports nothing from the rest of unetkit, so it can be read (and copied) on its own.
"""

from unetkit.nn.blocks import UNetError
from unetkit.nn.decode import TASKS, decode, probabilities
from unetkit.nn.summary import ModelSummary, summarize
from unetkit.nn.unet import UNet

__all__ = ["TASKS", "ModelSummary", "UNet", "UNetError", "decode", "probabilities", "summarize"]
