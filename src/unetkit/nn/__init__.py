"""The network: its options, blocks, the U-Net, logits decoding and the shape/parameter/MAC summary.

Imports nothing from the rest of unetkit, so it can be read (and copied) on its own. The
torch-backed names load on first use, so reading the options (`unetkit --help`) costs no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from unetkit.nn.options import OPTION_NAMES, UNetError, UNetOptions

if TYPE_CHECKING:
    from unetkit.nn.decoding import TASKS, decode, probabilities
    from unetkit.nn.summary import ModelSummary, summarize
    from unetkit.nn.unet import UNet

_LAZY = {
    "TASKS": "unetkit.nn.decoding",
    "decode": "unetkit.nn.decoding",
    "probabilities": "unetkit.nn.decoding",
    "ModelSummary": "unetkit.nn.summary",
    "summarize": "unetkit.nn.summary",
    "UNet": "unetkit.nn.unet",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unetkit.nn' has no attribute {name!r}")


__all__ = ["OPTION_NAMES", "TASKS", "ModelSummary", "UNet", "UNetError", "UNetOptions", "decode", "probabilities",
           "summarize"]
