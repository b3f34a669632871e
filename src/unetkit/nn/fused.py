"""The U-Net's CPU speed paths: the same network, computed in fewer and faster steps.

Nothing here changes what the network computes; `tests/nn/test_fused.py` holds every path
against the plain `UNet.forward`. The predictor and the trainer switch them on explicitly:

- `inference_engine(model, dtype)`: in eval mode a batch norm is a fixed affine map per
  channel, so it folds into the convolution before it: W' = W * g / sqrt(v + eps),
  b' = (b - m) * g / sqrt(v + eps) + beta. What is left of each `conv -> norm -> ReLU` is one
  oneDNN convolution with its ReLU as a post-op: the output is written once, already
  activated. Weights are converted once to the compute precision and pre-packed in oneDNN's
  blocked layout; activations stay channels-last from the first layer to the head. The
  engine is cached per model and rebuilt when any weight changed.
- `training_network(model)`: the same module tree for training, with each 2x2 stride-2
  transposed convolution computed as a 1x1 convolution to 4 x C channels whose output is
  written straight into the skip concatenation (`ShuffleConcat`): the same sums, forward
  and backward, without a separate up-sampled map.

Both fall back to the plain network wherever they do not apply: float64, other devices,
tracing and compiling, and forward hooks on the layers (explain and users see every layer).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.nn.blocks import crop_center, pad_to_multiple

_MKLDNN = torch.ops.mkldnn


def supported(model: Any) -> bool:
    """Whether this torch can run `model` through the engine: a unetkit U-Net with a norm that
    folds, and oneDNN present."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(_MKLDNN, "_convolution_pointwise")
        and getattr(model, "norm", "other") in ("batch", None)
        and hasattr(model, "encoder") and hasattr(model, "decoder")
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
        weight, bias = transposed_as_1x1(up)
        # not pre-packed: oneDNN's layout for a 1x1 convolution depends on the batch and map
        # size, and the wrong one is 10-20x slower (63 ms instead of 3 ms at batch 1, 16 x 16);
        # a plain weight is reordered per call at little cost. 3x3 weights have no such trap.
        self.weight = weight.detach().to(dtype).contiguous()
        self.bias = bias.detach().float()
        self.out_channels = up.out_channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The up-sampled map, (N, C_out, 2h, 2w) channels-last."""
        n, _, h, w = x.shape
        z = _MKLDNN._convolution_pointwise(x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], 1, "none", [], "")
        up = torch.empty(n, self.out_channels, 2 * h, 2 * w, dtype=z.dtype, memory_format=torch.channels_last)
        _up_view(up, 0, h, w).copy_(_blocks_view(z))
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

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        if self.padding == "same":
            x = pad_to_multiple(x, self.multiple)
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
            x = crop_center(x, height, width)
        return x


def _crop_like(skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The skip centre-cropped to the up-sampled map's size ('valid' padding), channels-last."""
    crop = crop_center(skip, up.shape[-2], up.shape[-1])
    return crop if crop is skip else crop.contiguous(memory_format=torch.channels_last)


def _pack(weight: torch.Tensor, padding: list[int]) -> torch.Tensor:
    """The weight in oneDNN's blocked layout, so that no call has to reorder it again."""
    return _MKLDNN._reorder_convolution_weight(weight, padding, [1, 1], [1, 1], 1)


# --- the inference engine, cached per model ------------------------------------------------

_ENGINES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, FusedUNet]] = weakref.WeakKeyDictionary()


def inference_engine(model: Any, dtype: torch.dtype = torch.float32) -> FusedUNet | None:
    """The engine for `model`'s current weights in `dtype` (float32 or bfloat16), built once
    and rebuilt whenever a weight or buffer changed (in place, by `.to()`, by loading);
    None where it does not apply (a norm that does not fold, oneDNN missing, hooks)."""
    if not supported(model) or observed(model):
        return None
    version = (dtype, tuple((t._version, t.data_ptr(), t.device.type) for t in (*model.parameters(), *model.buffers())))
    cached = _ENGINES.get(model)
    if cached is None or cached[0] != version:
        cached = (version, FusedUNet(model, dtype))
        _ENGINES[model] = cached
    return cached[1]


def observed(*modules: nn.Module) -> bool:
    """Whether anything asked to watch these modules run (hooks): then they must really run."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    if torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks:
        return True
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for module in modules
        for m in module.modules()
    )


# --- the training path: the transposed conv written into the concatenation ------------------


def transposed_as_1x1(up: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the 1x1 convolution to 4 x C_out channels that computes a 2x2
    stride-2 transposed convolution: output channel (i * 2 + j) * C_out + c holds channel c of
    the up-sampled map at (2y + i, 2x + j). Each output pixel of such a transposed conv gets
    exactly one tap, so this is the same sum, done by a matrix product. Differentiable."""
    c_in, c_out = up.weight.shape[:2]
    weight = up.weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in, 1, 1)
    bias = up.bias.repeat(4) if up.bias is not None else up.weight.new_zeros(4 * c_out)
    return weight, bias


class ShuffleConcat(torch.autograd.Function):
    """Concatenate [skip, up] where `up` is given as z, the 1x1 convolution of
    `transposed_as_1x1`. One channels-last buffer receives the skip and the rearranged z, so the
    up-sampled map is written once, straight into its place."""

    @staticmethod
    def forward(ctx, skip: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c4, h, w = z.shape
        c, c_skip = c4 // 4, skip.shape[1]
        dtype = torch.promote_types(skip.dtype, z.dtype)
        out = torch.empty(n, c_skip + c, 2 * h, 2 * w, dtype=dtype, device=z.device,
                          memory_format=torch.channels_last)
        out[:, :c_skip].copy_(skip)
        _up_view(out, c_skip, h, w).copy_(_blocks_view(z))
        ctx.c_skip, ctx.z_dtype, ctx.skip_dtype = c_skip, z.dtype, skip.dtype
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        n, c_all, hh, ww = grad.shape
        h, w, c = hh // 2, ww // 2, c_all - ctx.c_skip
        grad_z = torch.empty(n, 4 * c, h, w, dtype=ctx.z_dtype, device=grad.device,
                             memory_format=torch.channels_last)
        _blocks_view(grad_z).copy_(_up_view(grad, ctx.c_skip, h, w))
        return grad[:, : ctx.c_skip].to(ctx.skip_dtype), grad_z


def _blocks_view(z: torch.Tensor) -> torch.Tensor:
    """(N, 4C, h, w) channels-last z as (N, h, i, w, j, C): the 2x2 blocks in output order."""
    n, c4, h, w = z.shape
    return z.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c4 // 4).permute(0, 1, 3, 2, 4, 5)


def _up_view(buffer: torch.Tensor, offset: int, h: int, w: int) -> torch.Tensor:
    """Channels [offset:] of an (N, C, 2h, 2w) channels-last buffer as (N, h, i, w, j, C)."""
    return buffer.permute(0, 2, 3, 1)[..., offset:].unflatten(1, (h, 2)).unflatten(3, (w, 2))


def shuffle_concat(up: nn.ConvTranspose2d, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """[crop(skip), up(x)] for a 2x2 stride-2 transposed conv `up`, through `ShuffleConcat`."""
    weight, bias = transposed_as_1x1(up)
    z = F.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)
    skip = crop_center(skip, 2 * x.shape[-2], 2 * x.shape[-1])  # 'valid' padding: the skip is larger
    return ShuffleConcat.apply(skip, z)


class TrainingUNet(nn.Module):
    """The model for training steps: its own modules, run with the faster decoder where it
    applies (see `training_network`); `state_dict` and parameters are the model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        if not _shuffle_applies(model, x):
            return model(x)
        height, width = x.shape[-2:]
        if model.padding == "valid":
            model.output_size((int(height), int(width)))
        x = model.pad(x)
        skips = []
        for level in model.encoder:
            x, skip = level(x)
            skips.append(skip)
        x = model.bottleneck(x)
        for level, skip in zip(model.decoder, reversed(skips)):
            x = level.conv(shuffle_concat(level.up.up, x, skip))
        x = model.head(x)
        return model.crop(x, height, width) if model.padding == "same" else x


def training_network(model: nn.Module) -> nn.Module:
    """`model` wrapped for training steps with the transposed conv written into the concatenation
    (the model itself where there is no transposed conv)."""
    return TrainingUNet(model) if getattr(model, "up_mode", None) == "transpose" else model


def _shuffle_applies(model: nn.Module, x: torch.Tensor) -> bool:
    """CPU, float32 or bf16 (autocast), channels-last, not traced or compiled, not watched."""
    if x.device.type != "cpu" or model.head.weight.device.type != "cpu":
        return False
    low = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    if not (x.dtype in (torch.float32, torch.bfloat16) or low) or model.head.weight.dtype == torch.float64:
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    return not observed(*(block.up for block in model.decoder), *(block.crop for block in model.decoder),
                        *(block.concat for block in model.decoder))
