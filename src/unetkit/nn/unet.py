"""The U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): encoder -> bottleneck -> decoder -> head.

The constructor's options (`UNetOptions`) are the model's whole configuration: `model.config`
returns them and `UNet(**config)` rebuilds the same network, which is how checkpoints
store a model without pickling code. This file is the plain network, nothing else: the
faster CPU paths that compute the same function are in `fused.py`, switched on by the
predictor and the trainer.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from unetkit.nn.blocks import Bottleneck, CropBack, DecoderBlock, EncoderBlock, PadToMultiple, UNetError
from unetkit.nn.options import UNetOptions


class UNet(nn.Module):
    """U-Net for 2-D semantic segmentation; returns logits of shape (N, num_classes, H', W').

    With `padding="same"` (default) H', W' equal the input's H, W for any size: the input
    is zero-padded to a multiple of 2**depth inside the model and the logits cropped back.
    With `padding="valid"` every 3x3 convolution is unpadded and the skips are centre-cropped,
    as in the paper: 572x572 in gives 388x388 out; see `output_size` and `input_size_for`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Options as in `UNetOptions` (in_channels=1, num_classes=2, depth=4, base_channels=64,
        up_mode="transpose", norm="batch", dropout=0.0, padding="same"), by name or in order."""
        super().__init__()
        given = args[0] if len(args) == 1 and not kwargs and isinstance(args[0], UNetOptions) else None
        self.options = options = given or UNetOptions(*args, **kwargs)
        for name, value in options.to_dict().items():
            setattr(self, name, value)  # model.depth, model.padding, ... read like the options
        in_channels, depth, base_channels = options.in_channels, options.depth, options.base_channels
        up_mode, norm, dropout, padding = options.up_mode, options.norm, options.dropout, options.padding

        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.pad = PadToMultiple(2**depth) if padding == "same" else nn.Identity()
        self.encoder = nn.ModuleList(
            EncoderBlock(
                in_channels if level == 0 else widths[level - 1],
                widths[level],
                norm,
                padding,
                dropout if level == depth - 1 else 0.0,
            )
            for level in range(depth)
        )
        self.bottleneck = Bottleneck(widths[depth - 1], widths[depth], norm, padding, dropout)
        # decoder[0] is the deepest level, so that forward walks it in order.
        self.decoder = nn.ModuleList(
            DecoderBlock(widths[level + 1], widths[level], widths[level], up_mode, norm, padding)
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], options.num_classes, 1)
        self.crop = CropBack()
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's options as a dict: `UNet(**model.config)` is the same network."""
        return self.options.to_dict()

    def reset_parameters(self) -> None:
        """He (Kaiming) initialisation: std = sqrt(2 / inputs per output), as the paper asks;
        the 1x1 head, which feeds no ReLU, gets std = sqrt(1 / inputs)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                kh, kw = module.kernel_size
                if isinstance(module, nn.ConvTranspose2d):
                    sh, sw = module.stride
                    fan_in = module.in_channels * math.ceil(kh / sh) * math.ceil(kw / sw)
                else:
                    fan_in = module.in_channels // module.groups * kh * kw
                gain = 1.0 if module is self.head else 2.0
                nn.init.normal_(module.weight, 0.0, math.sqrt(gain / fan_in))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.padding == "valid":
            self.output_size((int(height), int(width)))  # raises a one-line error if impossible
        x = self.pad(x)
        skips = []
        for level in self.encoder:
            x, skip = level(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for level, skip in zip(self.decoder, reversed(skips)):
            x = level(x, skip)
        x = self.head(x)
        if self.padding == "same":
            x = self.crop(x, height, width)
        return x

    # --- sizes ---------------------------------------------------------------------------

    def output_size(self, input_size: int | tuple[int, int]) -> tuple[int, int]:
        """Height and width of the logits for an input of `input_size` (int = square)."""
        h, w = _pair(input_size)
        if self.padding == "same":
            return h, w
        out = (_valid_output(h, self.depth), _valid_output(w, self.depth))
        for size, result in zip((h, w), out):
            if result is None:
                below, above = self.nearest_valid_sizes(size)
                raise UNetError(
                    f"input size {size} does not fit padding='valid' with depth={self.depth}: "
                    f"use {below} or {above} (giving {_valid_output(below, self.depth) if below else 'nothing'}"
                    f" or {_valid_output(above, self.depth)}), or padding='same' for any size."
                )
        return out  # type: ignore[return-value]

    def input_size_for(self, output_size: int | tuple[int, int]) -> tuple[int, int]:
        """The smallest input whose logits cover `output_size` (equal to it in 'same' mode)."""
        h, w = _pair(output_size)
        if self.padding == "same":
            return h, w
        return _smallest_input_for(h, self.depth), _smallest_input_for(w, self.depth)

    def nearest_valid_sizes(self, size: int) -> tuple[int | None, int]:
        """The valid input sizes just below (None if none) and at-or-above `size`."""
        below = next((n for n in range(size - 1, 0, -1) if _valid_output(n, self.depth)), None)
        above = next(n for n in range(size, size + 2 ** (self.depth + 3)) if _valid_output(n, self.depth))
        return below, above


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _valid_output(n: int, depth: int) -> int | None:
    """Follow one side length through the unpadded network; None where a step fails
    (a map shrinks to nothing, or an odd size meets a 2x2 max-pool)."""
    for _ in range(depth):
        n -= 4
        if n <= 0 or n % 2:
            return None
        n //= 2
    n -= 4
    if n <= 0:
        return None
    for _ in range(depth):
        n = 2 * n - 4
        if n <= 0:
            return None
    return n


def _smallest_input_for(wanted: int, depth: int) -> int:
    n = 1
    while (_valid_output(n, depth) or 0) < wanted:
        n += 1
    return n


UNet.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + list(inspect.signature(UNetOptions).parameters.values())
)
