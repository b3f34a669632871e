"""The U-Net's building blocks, each readable in one screen.

Every operation in the forward pass is a module (even the skip concatenation, the centre
crop and the internal pad/crop), so that forward hooks see all of it: `summary.py` builds
the `unetkit explain model` table from those hooks instead of from a formula kept apart.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.nn.options import NORMS, PADDINGS, UP_MODES, UNetError  # noqa: F401 (re-exported)


def make_norm(norm: str | None, channels: int) -> nn.Module:
    """Normalisation after each 3x3 convolution; `None` keeps the conv's own bias instead."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(_group_count(channels), channels)
    if norm is None:
        return nn.Identity()
    raise UNetError(f"norm={norm!r} is not known: use one of 'batch', 'instance', 'group' or None.")


def _group_count(channels: int) -> int:
    """Up to 32 groups (Wu & He's default), always a divisor of the channel count."""
    groups = min(32, channels)
    while channels % groups:
        groups -= 1
    return groups


class DoubleConv(nn.Module):
    """(3x3 conv -> norm -> ReLU) twice: the unit of every encoder and decoder level."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None, padding: str) -> None:
        super().__init__()
        pad = 1 if padding == "same" else 0
        bias = norm is None  # a norm's shift makes a conv bias redundant
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=bias)
        self.norm1 = make_norm(norm, out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=pad, bias=bias)
        self.norm2 = make_norm(norm, out_channels)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        return self.relu2(self.norm2(self.conv2(x)))


class EncoderBlock(nn.Module):
    """One level of the contracting path: double conv (kept as the skip), then 2x2 max-pool."""

    def __init__(
        self, in_channels: int, out_channels: int, norm: str | None, padding: str, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels, norm, padding)
        # The paper drops out at the end of the contracting path; only the last level gets a rate.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pool = nn.MaxPool2d(2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.dropout(self.conv(x))
        return self.pool(skip), skip


class Bottleneck(nn.Module):
    """Two 3x3 convolutions at the lowest resolution, where the context is widest."""

    def __init__(
        self, in_channels: int, out_channels: int, norm: str | None, padding: str, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels, norm, padding)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv(x))


class UpSample(nn.Module):
    """Double the height and width and halve the channels.

    `"transpose"`: a learned 2x2 transposed convolution with stride 2 (each input value
    spreads over a 2x2 block of the output). `"nearest"` / `"bilinear"`: parameter-free
    resizing followed by a 3x3 convolution (Odena et al.'s resize-convolution, which avoids
    checkerboard artefacts); its padding of 1 keeps the size at exactly twice the input in
    both padding modes.
    """

    def __init__(self, in_channels: int, out_channels: int, up_mode: str) -> None:
        super().__init__()
        self.up_mode = up_mode
        if up_mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        elif up_mode in ("nearest", "bilinear"):
            align = False if up_mode == "bilinear" else None
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=up_mode, align_corners=align),
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
            )
        else:
            raise UNetError(
                f"up_mode={up_mode!r} is not known: use 'transpose', 'nearest' or 'bilinear'."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class CenterCrop(nn.Module):
    """Crop the skip to the decoder's size ('valid' padding: the encoder map is larger)."""

    def forward(self, skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        dh = skip.shape[-2] - like.shape[-2]
        dw = skip.shape[-1] - like.shape[-1]
        if dh == 0 and dw == 0:
            return skip
        return skip[..., dh // 2 : dh // 2 + like.shape[-2], dw // 2 : dw // 2 + like.shape[-1]]


class SkipConcat(nn.Module):
    """Join the skip (encoder features, fine detail) and the up-sampled decoder features
    (coarse context) along the channel axis: skip first, then decoder."""

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return torch.cat([skip, up], dim=1)


class ShuffleConcat(torch.autograd.Function):
    """Concatenate [skip, up] where `up` is given as z, a 2x2 stride-2 transposed convolution
    computed as a 1x1 convolution to 4 x C channels: channel (i * 2 + j) * C + c of z at
    (y, x) is channel c of `up` at (2y + i, 2x + j). One channels-last buffer receives the skip
    and the rearranged z, so the up-sampled map is written once, straight into its place.

    The same sums as ConvTranspose2d (each output pixel of a 2x2 stride-2 transposed
    convolution receives exactly one tap), done by oneDNN's 1x1 convolution, which runs near
    the machine's peak where its deconvolution does not (BENCHMARKS.md)."""

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


def _hooked(*modules: nn.Module) -> bool:
    """Whether anything asked to observe these modules run (then they must really run)."""
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


class DecoderBlock(nn.Module):
    """One level of the expanding path: up-sample, concatenate the skip, double conv.

    Speed: with `up_mode="transpose"`, on the CPU, in float32 or bfloat16 (autocast) with
    channels-last tensors, the transposed convolution runs as a 1x1 convolution whose output
    goes straight into the concatenation (`ShuffleConcat`): the same sums, about 20 % less
    time for the up-sampling and concatenation, forward and backward. float64, other devices,
    tracing, compiling and hooks on the up-sampling or concatenation see the modules run as
    written. `shuffle_concat = False` on a block (or UNETKIT_FUSED=0) turns it off."""

    shuffle_concat: bool = os.environ.get("UNETKIT_FUSED", "1") != "0"

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        up_mode: str,
        norm: str | None,
        padding: str,
    ) -> None:
        super().__init__()
        self.up = UpSample(in_channels, in_channels // 2, up_mode)
        self.crop = CenterCrop()
        self.concat = SkipConcat()
        self.conv = DoubleConv(skip_channels + in_channels // 2, out_channels, norm, padding)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self._can_shuffle(x, skip):
            return self.conv(self._shuffle_concat(x, skip))
        up = self.up(x)
        return self.conv(self.concat(self.crop(skip, up), up))

    def _can_shuffle(self, x: torch.Tensor, skip: torch.Tensor) -> bool:
        if not self.shuffle_concat or self.up.up_mode != "transpose" or x.device.type != "cpu":
            return False
        low = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        if not (x.dtype == torch.float32 or x.dtype == torch.bfloat16 or low) or skip.dtype == torch.float64:
            return False
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return False
        layout = torch.channels_last
        if not (x.is_contiguous(memory_format=layout) and skip.is_contiguous(memory_format=layout)):
            return False
        return not _hooked(self.up, self.crop, self.concat)

    def _shuffle_concat(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up.up
        c_in, c_out = up.weight.shape[:2]
        weight = up.weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in, 1, 1)
        bias = up.bias.repeat(4) if up.bias is not None else None
        z = F.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)
        h, w = 2 * x.shape[-2], 2 * x.shape[-1]
        dh, dw = skip.shape[-2] - h, skip.shape[-1] - w
        if dh or dw:  # 'valid' padding: centre-crop the skip, as CenterCrop does
            skip = skip[..., dh // 2 : dh // 2 + h, dw // 2 : dw // 2 + w]
        return ShuffleConcat.apply(skip, z)


class PadToMultiple(nn.Module):
    """'same' padding for any size: zero-pad H and W (centred) up to a multiple of
    2**depth so that every max-pool halves exactly; `CropBack` removes it at the end."""

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph = -h % self.multiple
        pw = -w % self.multiple
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class CropBack(nn.Module):
    """Undo `PadToMultiple`: crop the logits back to the input's height and width."""

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        dh = x.shape[-2] - height
        dw = x.shape[-1] - width
        if dh == 0 and dw == 0:
            return x
        return x[..., dh // 2 : dh // 2 + height, dw // 2 : dw // 2 + width]
