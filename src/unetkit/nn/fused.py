"""The U-Net's inference engine on the CPU: the same network, folded and fused for oneDNN.

In eval mode a batch norm is a fixed affine map per channel, so it folds into the
convolution before it: W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta.
What is left of each `conv -> norm -> ReLU` is one oneDNN convolution with its ReLU as a
post-op: the output is written once, already activated, instead of being read and written
again by a norm and by a ReLU. The weights are converted once to the compute precision
(bf16 where the CPU has bf16 dot products) and pre-packed in oneDNN's blocked layout, so no
call reorders them again; activations stay channels-last from the first layer to the head.

The engine computes exactly the network `UNet.forward` computes (same padding, crops, skips,
up-sampling and head), rounded differently: in bf16 it agrees with the plain bf16 autocast
path to within bf16 rounding. It holds no parameters of its own: it is rebuilt from the
model whenever the model's weights may have changed (see `UNet._inference_engine`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_MKLDNN = torch.ops.mkldnn


def supported(model: Any) -> bool:
    """Whether this torch can run `model` through the engine (oneDNN present, a norm that folds)."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(_MKLDNN, "_convolution_pointwise")
        and model.norm in ("batch", None)
    )


def fold(conv: nn.Conv2d, norm: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of `conv` with the eval-mode batch norm after it folded in, in float64."""
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    if isinstance(norm, nn.BatchNorm2d):
        scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.detach().double() + norm.eps)
        weight = weight * scale[:, None, None, None]
        bias = (bias - norm.running_mean.detach().double()) * scale + norm.bias.detach().double()
    return weight, bias


class FoldedConv:
    """A convolution (+ the batch norm after it) as one pre-packed oneDNN call, ReLU fused."""

    __slots__ = ("weight", "bias", "padding", "relu")

    def __init__(self, conv: nn.Conv2d, norm: nn.Module | None, dtype: torch.dtype, relu: bool) -> None:
        weight, bias = fold(conv, norm)
        self.padding = [int(p) for p in conv.padding]
        weight = weight.to(dtype).contiguous()
        self.weight = _pack(weight, self.padding) if conv.kernel_size != (1, 1) else weight  # see TransposedUp
        self.bias = bias.float()
        self.relu = relu

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _MKLDNN._convolution_pointwise(
            x, self.weight, self.bias, self.padding, [1, 1], [1, 1], 1, "relu" if self.relu else "none", [], ""
        )


class SplitConv:
    """The decoder's first convolution (+ norm + ReLU) over [skip, up] without concatenating:
    conv([s, u], [W_s, W_u]) = conv(s, W_s) + conv(u, W_u), the second with the first's
    result added and the ReLU applied in its oneDNN post-ops. No buffer of 2C channels is
    written and read again, and the two half-depth convolutions run faster than the whole
    (BENCHMARKS.md: 4-12 % for the decoder levels)."""

    __slots__ = ("skip_weight", "up_weight", "bias", "padding")

    def __init__(self, conv: nn.Conv2d, norm: nn.Module | None, skip_channels: int, dtype: torch.dtype) -> None:
        weight, bias = fold(conv, norm)
        self.padding = [int(p) for p in conv.padding]
        self.skip_weight = _pack(weight[:, :skip_channels].to(dtype).contiguous(), self.padding)
        self.up_weight = _pack(weight[:, skip_channels:].to(dtype).contiguous(), self.padding)
        self.bias = bias.float()

    def __call__(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        pad, one = self.padding, [1, 1]
        partial = _MKLDNN._convolution_pointwise(skip, self.skip_weight, self.bias, pad, one, one, 1, "none", [], "")
        return _MKLDNN._convolution_pointwise.binary(
            up, partial, self.up_weight, None, pad, one, one, 1, "add", 1.0, "relu", [], ""
        )


class TransposedUp:
    """The 2x2 stride-2 transposed convolution as a 1x1 convolution to 4 x C_out channels
    (one set per position of the 2x2 block), whose output is then scattered into place.

    Each output pixel of a stride-2 2x2 transposed convolution receives exactly one tap, so
    this is the same sum, done as a plain matrix product (oneDNN's 1x1 convolution runs near
    the machine's peak; its deconvolution does not)."""

    __slots__ = ("weight", "bias", "out_channels")

    def __init__(self, up: nn.ConvTranspose2d, dtype: torch.dtype) -> None:
        weight = up.weight.detach()  # (C_in, C_out, 2, 2)
        c_in, c_out = weight.shape[:2]
        # output channel index = (i * 2 + j) * C_out + c: each 2x2 position a contiguous block
        weight = weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in, 1, 1)
        # not pre-packed: oneDNN's layout for a 1x1 convolution depends on the batch and map
        # size, and the wrong one is 10-20x slower (63 ms instead of 3 ms at batch 1, 16 x 16);
        # a plain weight is reordered per call at little cost. 3x3 weights have no such trap.
        self.weight = weight.to(dtype).contiguous()
        bias = up.bias.detach() if up.bias is not None else weight.new_zeros(c_out)
        self.bias = bias.float().repeat(4)
        self.out_channels = c_out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The up-sampled map, (N, C_out, 2h, 2w) channels-last."""
        n, _, h, w = x.shape
        z = _MKLDNN._convolution_pointwise(x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], 1, "none", [], "")
        c = self.out_channels
        blocks = z.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5)  # n, h, i, w, j, c
        up = torch.empty(n, c, 2 * h, 2 * w, dtype=z.dtype, memory_format=torch.channels_last)
        up.permute(0, 2, 3, 1).unflatten(1, (h, 2)).unflatten(3, (w, 2)).copy_(blocks)
        return up


class ResizeUp:
    """`nearest` / `bilinear` up-sampling followed by its (norm-free) 3x3 convolution."""

    __slots__ = ("mode", "conv")

    def __init__(self, up: nn.Sequential, dtype: torch.dtype) -> None:
        self.mode = up[0].mode
        self.conv = FoldedConv(up[1], None, dtype, relu=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        align = False if self.mode == "bilinear" else None
        return self.conv(F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=align))


class FusedUNet:
    """Inference-only twin of a `UNet`: call it like the model (no gradients, eval semantics).

    `dtype` is the compute precision (torch.bfloat16 or torch.float32); inputs of any float
    dtype are converted, and the logits come back in `dtype` (as autocast would return them)."""

    def __init__(self, model: Any, dtype: torch.dtype = torch.bfloat16) -> None:
        if not supported(model):
            raise ValueError(f"norm={model.norm!r} does not fold into the convolutions; use the model itself.")
        self.dtype = dtype
        self.padding = model.padding
        self.multiple = 2**model.depth
        self.up_mode = model.up_mode

        def double(block: nn.Module) -> tuple[FoldedConv, FoldedConv]:
            return (
                FoldedConv(block.conv1, block.norm1, dtype, relu=True),
                FoldedConv(block.conv2, block.norm2, dtype, relu=True),
            )

        self.encoder = [double(level.conv) for level in model.encoder]
        self.bottleneck = double(model.bottleneck.conv)
        self.decoder = []
        for level in model.decoder:
            up = level.up.up
            upsample = TransposedUp(up, dtype) if model.up_mode == "transpose" else ResizeUp(up, dtype)
            conv = level.conv
            up_channels = up.out_channels if isinstance(up, nn.ConvTranspose2d) else up[-1].out_channels
            skip_channels = conv.conv1.in_channels - up_channels
            self.decoder.append((
                upsample,
                SplitConv(conv.conv1, conv.norm1, skip_channels, dtype),
                FoldedConv(conv.conv2, conv.norm2, dtype, relu=True),
            ))
        self.head = FoldedConv(model.head, None, dtype, relu=False)
        self.model_version = None  # set by the model that owns the cache

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        if self.padding == "same":
            ph, pw = -height % self.multiple, -width % self.multiple
            if ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        skips = []
        for conv1, conv2 in self.encoder:
            skip = conv2(conv1(x))
            skips.append(skip)
            x = F.max_pool2d(skip, 2, 2)
        x = self.bottleneck[1](self.bottleneck[0](x))
        for (upsample, conv1, conv2), skip in zip(self.decoder, reversed(skips)):
            up = upsample(x)
            x = conv2(conv1(_crop_like(skip, up), up))
        x = self.head(x)
        if self.padding == "same":
            dh, dw = x.shape[-2] - height, x.shape[-1] - width
            if dh or dw:
                x = x[..., dh // 2 : dh // 2 + height, dw // 2 : dw // 2 + width]
        return x


def _crop_like(skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The skip centre-cropped to the up-sampled map's size ('valid' padding), channels-last."""
    dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
    if not (dh or dw):
        return skip
    crop = skip[..., dh // 2 : dh // 2 + up.shape[-2], dw // 2 : dw // 2 + up.shape[-1]]
    return crop.contiguous(memory_format=torch.channels_last)


def _pack(weight: torch.Tensor, padding: list[int]) -> torch.Tensor:
    """The weight in oneDNN's blocked layout, so that no call has to reorder it again."""
    return _MKLDNN._reorder_convolution_weight(weight, padding, [1, 1], [1, 1], 1)
