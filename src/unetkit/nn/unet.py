"""The U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): encoder -> bottleneck -> decoder -> head.

The constructor's keyword arguments are the model's whole configuration: `model.config`
returns them and `UNet(**config)` rebuilds the same network, which is how checkpoints
store a model without pickling code.
"""

from __future__ import annotations

import inspect
import math
import os
import weakref
from typing import Any

import torch
from torch import nn

from unetkit.nn import fused
from unetkit.nn.blocks import (
    Bottleneck,
    CropBack,
    DecoderBlock,
    EncoderBlock,
    PadToMultiple,
    UNetError,
)
from unetkit.nn.options import UNetOptions


class UNet(nn.Module):
    """U-Net for 2-D semantic segmentation; returns logits of shape (N, num_classes, H', W').

    With `padding="same"` (default) H', W' equal the input's H, W for any size: the input
    is zero-padded to a multiple of 2**depth inside the model and the logits cropped back.
    With `padding="valid"` every 3x3 convolution is unpadded and the skips are centre-cropped,
    as in the paper: 572x572 in gives 388x388 out; see `output_size` and `input_size_for`.

    Speed: on the CPU, in eval mode and without gradients (how unetkit's predictor and
    validation run), in float32 or under bf16 autocast, `forward` runs `fuse_for_inference()`'s
    engine: batch norms folded into the convolutions, ReLUs fused, weights pre-packed, the
    transposed convolutions written straight into the skip concatenation. The logits equal the
    plain network's within rounding (float32: ~1e-6 relative). The engine is rebuilt whenever a
    parameter or buffer changes in place, on `train()` / `eval()`, `.to()` and friends.
    float64, tracing, torch.compile, autograd and forward hooks on its layers always run the
    plain network; `model.fused_inference = False` (or UNETKIT_FUSED=0) turns the engine off.
    """

    fused_inference: bool = os.environ.get("UNETKIT_FUSED", "1") != "0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Options as in `UNetOptions` (in_channels=1, num_classes=2, depth=4, base_channels=64,
        up_mode="transpose", norm="batch", dropout=0.0, padding="same"), by name or in order."""
        super().__init__()
        options = args[0] if len(args) == 1 and not kwargs and isinstance(args[0], UNetOptions) \
            else UNetOptions(*args, **kwargs)
        self.options = options
        in_channels, depth, base_channels = options.in_channels, options.depth, options.base_channels
        up_mode, norm, dropout, padding = options.up_mode, options.norm, options.dropout, options.padding
        self.in_channels, self.num_classes, self.depth = in_channels, options.num_classes, depth
        self.base_channels, self.up_mode, self.norm = base_channels, up_mode, norm
        self.dropout, self.padding = dropout, padding

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
        if not self.training and self.fused_inference:
            dtype = _fused_dtype(x, self.head.weight)
            if dtype is not None and fused.supported(self) and not self._observed():
                return self._inference_engine(dtype)(x)
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

    # --- inference engine ------------------------------------------------------------------

    def fuse_for_inference(self, dtype: torch.dtype = torch.bfloat16) -> fused.FusedUNet:
        """An inference-only twin of this model (batch norms folded into the convolutions,
        ReLUs fused, weights pre-packed for oneDNN) computing in `dtype`; the same logits as
        eval mode within `dtype`'s rounding. It does not follow later changes to the weights."""
        return fused.FusedUNet(self, dtype)

    def _inference_engine(self, dtype: torch.dtype) -> fused.FusedUNet:
        """The cached engine for the current weights (rebuilt when any of them changed)."""
        version = (dtype, tuple((t._version, t.data_ptr()) for t in self._state_tensors()))
        cached = _ENGINES.get(self)
        if cached is None or cached.model_version != version:
            cached = self.fuse_for_inference(dtype)
            cached.model_version = version
            _ENGINES[self] = cached
        return cached

    def _observed(self) -> bool:
        """Forward hooks on any layer ask to see the plain network run (explain, tests)."""
        from torch.nn.modules import module as torch_module

        if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
            return True
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.modules() if m is not self)

    def _state_tensors(self) -> list[torch.Tensor]:
        return [*self.parameters(), *self.buffers()]

    def train(self, mode: bool = True) -> UNet:
        if mode != self.training:  # a real switch: training will change the weights, drop the engine
            _ENGINES.pop(self, None)  # (model.eval() before every batch, a common habit, keeps it)
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> UNet:
        _ENGINES.pop(self, None)  # .to(), .float(), .cuda() ...: rebuild from the new tensors
        return super()._apply(fn, recurse)

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


_ENGINES: weakref.WeakKeyDictionary[UNet, fused.FusedUNet] = weakref.WeakKeyDictionary()


def _fused_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The engine's precision when this call may use it, else None: a CPU tensor, no autograd,
    not inside a tracer or compiler (which must see the plain network), and either bf16
    autocast (-> bf16) or float32 input and weights without autocast (-> float32). float64
    and every other case run the plain network."""
    if x.device.type != "cpu" or weight.device.type != "cpu" or torch.is_grad_enabled():
        return None
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    if torch.is_autocast_enabled("cpu"):
        bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16 and x.is_floating_point()
        return torch.bfloat16 if bf16 else None
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return torch.float32
    return None


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
