"""The U-Net's CPU speed paths: the same network, computed in fewer and faster steps.

Nothing here changes what the network computes; `tests/nn/test_fused.py` holds every path
against the plain `UNet.forward`. The predictor and the trainer switch them on explicitly:

- `inference_engine(model, dtype)`: in eval mode a batch norm is a fixed affine map per
  channel, so it folds into the convolution before it: W' = W * g / sqrt(v + eps),
  b' = (b - m) * g / sqrt(v + eps) + beta. What is left of each `conv -> norm -> ReLU` is one
  oneDNN convolution with its ReLU as a post-op: the output is written once, already
  activated. Weights are converted once to the compute precision and pre-packed in oneDNN's
  blocked layout (the one oneDNN picks for each input shape: its shape-blind default can be
  several times slower at small batches); activations stay channels-last from the first
  layer to the head. The engine is cached per model and rebuilt when any weight changed.
- `training_network(model)`: the same module tree for training steps. With batch norm and
  transposed convolutions (the defaults) it keeps each convolution's raw output and nothing
  after it: the batch norm + ReLU that follows is applied on the fly by the next
  convolution (or max-pool, or skip) and recomputed in the backward pass, one cheap
  memory pass instead of a stored activation; the skip concatenation is never built (the
  decoder's first convolution is a sum of one over the skip and one over the up-sampled
  map), and each 2x2 stride-2 transposed convolution runs as a 1x1 convolution to
  4 x C channels whose output is scattered into place and, like the batch norm + ReLU,
  recomputed in the backward pass rather than stored. Less than half the activation memory
  of the plain network, the same gradients. Other networks get the transposed conv written
  straight into the concatenation (`ShuffleConcat`), or run as written.

Both fall back to the plain network wherever they do not apply: float64, other devices,
tracing and compiling, and forward hooks on the layers (explain and users see every layer).
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

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
        self.weight = PackedWeight(weight.to(dtype), self.padding)
        self.bias = bias.float()
        self.relu = relu

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _MKLDNN._convolution_pointwise(
            x, self.weight.for_input(x), self.bias, self.padding, [1, 1], [1, 1], 1,
            "relu" if self.relu else "none", [], "",
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
        self.skip_weight = PackedWeight(weight[:, :skip_channels].to(dtype), self.padding)
        self.up_weight = PackedWeight(weight[:, skip_channels:].to(dtype), self.padding)
        self.bias = bias.float()

    def __call__(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        pad, one = self.padding, [1, 1]
        partial = _MKLDNN._convolution_pointwise(skip, self.skip_weight.for_input(skip), self.bias, pad, one, one, 1,
                                                 "none", [], "")
        return _MKLDNN._convolution_pointwise.binary(
            up, partial, self.up_weight.for_input(up), None, pad, one, one, 1, "add", 1.0, "relu", [], ""
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
        self.weight = PackedWeight(weight.detach().to(dtype), [0, 0])
        self.bias = bias.detach().float()
        self.out_channels = up.out_channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The up-sampled map, (N, C_out, 2h, 2w) channels-last."""
        z = _MKLDNN._convolution_pointwise(x, self.weight.for_input(x), self.bias, [0, 0], [1, 1], [1, 1], 1,
                                           "none", [], "")
        return _scatter_blocks(z)


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


class PackedWeight:
    """A convolution weight in oneDNN's blocked layout for each input shape it meets, so that
    no call reorders it again. The layout oneDNN wants depends on the batch and map size, and
    a weight packed without the shape can make the convolution several times slower (at
    batch 1 on AVX2, and for 1x1 weights). A predictor meets one or two shapes (the full and the last tile
    batch); `SHAPES` bounds the copies kept beside the plain weight, which new shapes are
    packed from (repacking costs a fraction of one forward pass)."""

    SHAPES = 2
    __slots__ = ("plain", "padding", "packed")

    def __init__(self, weight: torch.Tensor, padding: list[int]) -> None:
        self.plain = weight.contiguous()
        self.padding = padding
        self.packed: dict[tuple[int, ...], torch.Tensor] = {}

    def for_input(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        packed = self.packed.get(shape)
        if packed is None:
            if len(self.packed) >= self.SHAPES:
                self.packed.pop(next(iter(self.packed)))  # the oldest shape
            packed = _MKLDNN._reorder_convolution_weight(self.plain, self.padding, [1, 1], [1, 1], 1, list(shape))
            self.packed[shape] = packed
        return packed


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
    return _as_1x1(up.weight, up.bias)


def _as_1x1(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`transposed_as_1x1` of a (C_in, C_out, 2, 2) weight and its bias (or None)."""
    c_in, c_out = weight.shape[:2]
    bias = bias.repeat(4) if bias is not None else weight.new_zeros(4 * c_out)
    return weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in, 1, 1), bias


def _from_1x1(grad_weight: torch.Tensor, grad_bias: torch.Tensor, c_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `_as_1x1`, for gradients: back to (C_in, C_out, 2, 2) and (C_out,)."""
    c_in = grad_weight.shape[1]
    return grad_weight.reshape(2, 2, c_out, c_in).permute(3, 2, 0, 1), grad_bias.reshape(4, c_out).sum(0)


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
        return grad[:, : ctx.c_skip].to(ctx.skip_dtype), _gather_blocks(grad, ctx.c_skip, ctx.z_dtype)


def _blocks_view(z: torch.Tensor) -> torch.Tensor:
    """(N, 4C, h, w) channels-last z as (N, h, i, w, j, C): the 2x2 blocks in output order."""
    n, c4, h, w = z.shape
    return z.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c4 // 4).permute(0, 1, 3, 2, 4, 5)


def _up_view(buffer: torch.Tensor, offset: int, h: int, w: int) -> torch.Tensor:
    """Channels [offset:] of an (N, C, 2h, 2w) channels-last buffer as (N, h, i, w, j, C)."""
    return buffer.permute(0, 2, 3, 1)[..., offset:].unflatten(1, (h, 2)).unflatten(3, (w, 2))


def _scatter_blocks(z: torch.Tensor) -> torch.Tensor:
    """(N, 4C, h, w) z of a transposed conv's 1x1 form -> its (N, C, 2h, 2w) channels-last map."""
    n, c4, h, w = z.shape
    up = torch.empty(n, c4 // 4, 2 * h, 2 * w, dtype=z.dtype, device=z.device, memory_format=torch.channels_last)
    _up_view(up, 0, h, w).copy_(_blocks_view(z.contiguous(memory_format=torch.channels_last)))
    return up


def _gather_blocks(grad: torch.Tensor, offset: int, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of `_scatter_blocks`, for a gradient: channels [offset:] of an (N, C, 2h, 2w)
    map back to the (N, 4C, h, w) layout of z."""
    n, c_all, hh, ww = grad.shape
    grad_z = torch.empty(n, 4 * (c_all - offset), hh // 2, ww // 2, dtype=dtype, device=grad.device,
                         memory_format=torch.channels_last)
    _blocks_view(grad_z).copy_(_up_view(grad, offset, hh // 2, ww // 2))
    return grad_z


def shuffle_concat(up: nn.ConvTranspose2d, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """[crop(skip), up(x)] for a 2x2 stride-2 transposed conv `up`, through `ShuffleConcat`."""
    weight, bias = transposed_as_1x1(up)
    z = F.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)
    skip = crop_center(skip, 2 * x.shape[-2], 2 * x.shape[-1])  # 'valid' padding: the skip is larger
    return ShuffleConcat.apply(skip, z)


class TrainingUNet(nn.Module):
    """The model for training steps: its own modules, run the faster way that applies (see
    `training_network`); `state_dict` and parameters are the model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        if not _shuffle_applies(model, x):
            return model(x)
        if _recompute_applies(model):
            return _recompute_forward(model, x)
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
    """`model` wrapped for training steps (see the module docstring); the model itself where
    there is no transposed conv to speed up."""
    return TrainingUNet(model) if getattr(model, "up_mode", None) == "transpose" else model


# --- training with batch norm + ReLU recomputed instead of stored ---------------------------


class _Stats(NamedTuple):
    """One batch norm in this step: its affine terms and the batch's mean and 1/std."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    invstd: torch.Tensor
    eps: float


def _normalise(c: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, _Stats]:
    """relu(batch_norm(c)) in training mode (the running statistics are updated, as the
    module would), without autograd; and the statistics to recompute it later."""
    if bn.momentum is None:
        momentum = 1.0 / float(bn.num_batches_tracked + 1)
    else:
        momentum = bn.momentum
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        r, mean, invstd = torch.ops.aten.native_batch_norm(c, bn.weight, bn.bias, bn.running_mean,
                                                           bn.running_var, True, momentum, bn.eps)
        bn.num_batches_tracked.add_(1)
        r.relu_()
    return r, _Stats(bn.weight, bn.bias, mean, invstd, bn.eps)


def _renormalise(c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                 invstd: torch.Tensor, eps: float) -> torch.Tensor:
    """relu(batch_norm(c)) with the statistics of `_normalise`: the same values, recomputed."""
    variance = invstd.reciprocal().square() - eps
    r = torch.ops.aten.native_batch_norm(c, weight, bias, mean, variance, False, 0.0, eps)[0]
    return r.relu_()


def _relu_backward_(grad_r: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The ReLU's gradient, masked into `grad_r` in place (the caller's own fresh tensor): a
    step's largest maps are not held twice at its peak, and the caller can free `r` before
    the batch norm's backward pass allocates its own output."""
    return torch.ops.aten.threshold_backward.grad_input(grad_r, r, 0, grad_input=grad_r)


def _norm_backward(grad: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                   invstd: torch.Tensor, eps: float) -> tuple[torch.Tensor, ...]:
    """Through the training-mode batch norm, from the gradient after the ReLU: (dc, dweight,
    dbias). Linear in grad, so each consumer of one normalised map can add its own share."""
    return torch.ops.aten.native_batch_norm_backward(grad, c, weight, None, None, mean, invstd, True, eps,
                                                     [True, True, True])


def _activation(r: torch.Tensor | None, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                mean: torch.Tensor, invstd: torch.Tensor, eps: float) -> torch.Tensor:
    """The activation relu(batch_norm(c)): the caller's `r` when it has it, else recomputed."""
    return r if r is not None else _renormalise(c, weight, bias, mean, invstd, eps)


def _compute_dtype(c: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return torch.bfloat16
    return c.dtype


class NormReluConv(torch.autograd.Function):
    """conv(relu(batch_norm(c))), saving c and the statistics instead of the activation;
    `r` is that activation when the caller has it already (it is not kept)."""

    @staticmethod
    def forward(ctx, c, r, weight, bias, mean, invstd, eps, conv_weight, conv_bias, padding):  # type: ignore[override]
        dtype = _compute_dtype(c)
        with torch.autocast("cpu", enabled=False):
            r = _activation(r, c, weight, bias, mean, invstd, eps)
            w = conv_weight.to(dtype, memory_format=torch.channels_last)  # may be a view
            y = F.conv2d(r.to(dtype), w, None if conv_bias is None else conv_bias.to(dtype), padding=padding)
        ctx.save_for_backward(c, weight, bias, mean, invstd, conv_weight)
        ctx.eps, ctx.padding, ctx.dtype, ctx.has_bias = eps, padding, dtype, conv_bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        c, weight, bias, mean, invstd, conv_weight = ctx.saved_tensors
        r = _renormalise(c, weight, bias, mean, invstd, ctx.eps)
        w = conv_weight.to(ctx.dtype, memory_format=torch.channels_last)
        grad_r, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_y.to(ctx.dtype).contiguous(memory_format=torch.channels_last), r.to(ctx.dtype), w,
            [w.shape[0]] if ctx.has_bias else None, [1, 1], [ctx.padding] * 2, [1, 1], False, [0, 0], 1,
            [True, True, ctx.has_bias])
        del w
        grad = _relu_backward_(grad_r.to(c.dtype), r)
        del r, grad_r
        grad_c, grad_weight, grad_bias = _norm_backward(grad, c, weight, mean, invstd, ctx.eps)
        return (grad_c, None, grad_weight, grad_bias, None, None, None, grad_w.to(conv_weight.dtype),
                grad_b.to(conv_weight.dtype) if ctx.has_bias else None, None)


class NormReluUpConv(torch.autograd.Function):
    """conv3x3(scatter(conv1x1(relu(batch_norm(c))))): a decoder level's transposed conv (run
    as the 1x1 convolution of `transposed_as_1x1`) and its first convolution's share over the
    up-sampled map. Only c, the statistics and the parameters themselves are saved (no weight
    copies: `conv_weight` may be a view of the decoder convolution's weight): the up-sampled
    map, as large as the skip, is recomputed in the backward pass (a 1x1 convolution, a
    fraction of the 3x3's work) instead of being stored. `r` is the activation when the
    caller has it (not kept)."""

    @staticmethod
    def forward(ctx, c, r, weight, bias, mean, invstd, eps, up_weight, up_bias, conv_weight):  # type: ignore[override]
        dtype = _compute_dtype(c)
        with torch.autocast("cpu", enabled=False):
            r = _activation(r, c, weight, bias, mean, invstd, eps)
            up = _scatter_blocks(F.conv2d(r.to(dtype), *NormReluUpConv._as_1x1(up_weight, up_bias, dtype)))
            y = F.conv2d(up, conv_weight.to(dtype, memory_format=torch.channels_last), None, padding=1)
        ctx.save_for_backward(c, weight, bias, mean, invstd, up_weight, up_bias, conv_weight)
        ctx.eps, ctx.dtype = eps, dtype
        return y

    @staticmethod
    def _as_1x1(up_weight: torch.Tensor, up_bias: torch.Tensor | None,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1x1 form's weight and bias, made in `dtype` from the parameters (not saved)."""
        w1, b1 = _as_1x1(up_weight.to(dtype), None if up_bias is None else up_bias.to(dtype))
        return w1.contiguous(memory_format=torch.channels_last), b1

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        c, weight, bias, mean, invstd, up_weight, up_bias, conv_weight = ctx.saved_tensors
        dtype = ctx.dtype
        r = _renormalise(c, weight, bias, mean, invstd, ctx.eps)
        w1, b1 = NormReluUpConv._as_1x1(up_weight, up_bias, dtype)
        w3 = conv_weight.to(dtype, memory_format=torch.channels_last)
        up = _scatter_blocks(F.conv2d(r.to(dtype), w1, b1))
        grad_up, grad_w3, _ = torch.ops.aten.convolution_backward(
            grad_y.to(dtype).contiguous(memory_format=torch.channels_last), up, w3, None, [1, 1], [1, 1], [1, 1],
            False, [0, 0], 1, [True, True, False])
        del up, w3
        grad_z = _gather_blocks(grad_up, 0, grad_up.dtype)
        del grad_up
        grad_r, grad_w1, grad_b1 = torch.ops.aten.convolution_backward(
            grad_z, r.to(dtype), w1, [w1.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True])
        del grad_z, w1
        grad = _relu_backward_(grad_r.to(c.dtype), r)
        del r, grad_r
        grad_c, grad_weight, grad_bias = _norm_backward(grad, c, weight, mean, invstd, ctx.eps)
        grad_up_weight, grad_up_bias = _from_1x1(grad_w1, grad_b1, up_weight.shape[1])
        return (grad_c, None, grad_weight, grad_bias, None, None, None, grad_up_weight.to(up_weight.dtype),
                None if up_bias is None else grad_up_bias.to(up_bias.dtype), grad_w3.to(conv_weight.dtype))


class NormReluPool(torch.autograd.Function):
    """max_pool2x2(relu(batch_norm(c))) from the activation `r`, saving c and the statistics;
    the pooling's winners are found again in the backward pass instead of being stored."""

    @staticmethod
    def forward(ctx, c, r, weight, bias, mean, invstd, eps):  # type: ignore[override]
        ctx.save_for_backward(c, weight, bias, mean, invstd)
        ctx.eps = eps
        with torch.autocast("cpu", enabled=False):
            return F.max_pool2d(r, 2, 2)

    @staticmethod
    def backward(ctx, grad_pooled):  # type: ignore[override]
        c, weight, bias, mean, invstd = ctx.saved_tensors
        r = _renormalise(c, weight, bias, mean, invstd, ctx.eps)
        _, indices = F.max_pool2d(r, 2, 2, return_indices=True)
        grad_r = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_pooled.to(r.dtype).contiguous(memory_format=torch.channels_last), r, [2, 2], [2, 2], [0, 0],
            [1, 1], False, indices)
        del indices
        grad = _relu_backward_(grad_r, r)
        del r, grad_r
        grad_c, grad_weight, grad_bias = _norm_backward(grad, c, weight, mean, invstd, ctx.eps)
        return grad_c, None, grad_weight, grad_bias, None, None, None


def _norm_relu_conv(c: torch.Tensor, stats: _Stats, conv: nn.Module | tuple[torch.Tensor, torch.Tensor | None],
                    padding: int, r: torch.Tensor | None = None) -> torch.Tensor:
    weight, bias = (conv.weight, conv.bias) if isinstance(conv, nn.Module) else conv
    return NormReluConv.apply(c, r, stats.weight, stats.bias, stats.mean, stats.invstd, stats.eps, weight, bias,
                              padding)


def _recompute_applies(model: nn.Module) -> bool:
    """The recomputing path covers the defaults: batch norm, transposed convs, 'same' padding,
    no dropout (the other combinations run with shuffle-concat only)."""
    return model.norm == "batch" and model.up_mode == "transpose" and model.padding == "same" and not model.dropout


def _recompute_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The U-Net's forward pass (nn/unet.py), storing convolution outputs only; see the module docstring."""
    height, width = x.shape[-2:]
    x = model.pad(x)
    skips: list[tuple[torch.Tensor, _Stats]] = []
    for level in model.encoder:
        block = level.conv
        c1 = block.conv1(x)
        r1, stats1 = _normalise(c1, block.norm1)
        c2 = _norm_relu_conv(c1, stats1, block.conv2, 1, r1)
        del r1
        r2, stats2 = _normalise(c2, block.norm2)
        x = NormReluPool.apply(c2, r2, *stats2)
        skips.append((c2, stats2))
    block = model.bottleneck.conv
    c1 = block.conv1(x)
    r1, stats1 = _normalise(c1, block.norm1)
    c = _norm_relu_conv(c1, stats1, block.conv2, 1, r1)
    del r1
    r, stats = _normalise(c, block.norm2)
    for level, (skip, skip_stats) in zip(model.decoder, reversed(skips)):
        block, up = level.conv, level.up.up
        c_skip = skip.shape[1]  # views of the decoder conv's weight: saved without a copy
        w_skip, w_up = block.conv1.weight[:, :c_skip], block.conv1.weight[:, c_skip:]
        c1 = _norm_relu_conv(skip, skip_stats, (w_skip, None), 1) + NormReluUpConv.apply(
            c, r, stats.weight, stats.bias, stats.mean, stats.invstd, stats.eps, up.weight, up.bias, w_up)
        del r
        r1, stats1 = _normalise(c1, block.norm1)
        c = _norm_relu_conv(c1, stats1, block.conv2, 1, r1)
        del r1
        r, stats = _normalise(c, block.norm2)
    logits = _norm_relu_conv(c, stats, model.head, 0, r)
    return model.crop(logits, height, width)


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
