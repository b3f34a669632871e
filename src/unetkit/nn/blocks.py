"""The U-Net's building blocks, each readable in one screen (in the spirit of milesial's unet_parts.py).

Every operation in the forward pass is a module (even the skip concatenation, the centre
crop and the internal pad/crop), so that forward hooks see all of it: `summary.py` builds
the `unetkit explain model` table from those hooks instead of from a formula kept apart.
The CPU speed paths (folded batch norms, fused ReLUs, the transposed conv written straight
into the concatenation) are not here: they live in `fused.py` and compute this same network.
"""

from __future__ import annotations

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
            raise UNetError(f"up_mode={up_mode!r} is not known: use 'transpose', 'nearest' or 'bilinear'.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class CenterCrop(nn.Module):
    """Crop the skip to the decoder's size ('valid' padding: the encoder map is larger)."""

    def forward(self, skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return crop_center(skip, like.shape[-2], like.shape[-1])


class SkipConcat(nn.Module):
    """Join the skip (encoder features, fine detail) and the up-sampled decoder features
    (coarse context) along the channel axis: skip first, then decoder."""

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return torch.cat([skip, up], dim=1)


class DecoderBlock(nn.Module):
    """One level of the expanding path: up-sample, concatenate the skip, double conv."""

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
        up = self.up(x)
        return self.conv(self.concat(self.crop(skip, up), up))


class PadToMultiple(nn.Module):
    """'same' padding for any size: zero-pad H and W (centred) up to a multiple of
    2**depth so that every max-pool halves exactly; `CropBack` removes it at the end."""

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x, self.multiple)


class CropBack(nn.Module):
    """Undo `PadToMultiple`: crop the logits back to the input's height and width."""

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return crop_center(x, height, width)


def pad_to_multiple(x: torch.Tensor, multiple: int, always: bool = False) -> torch.Tensor:
    """Zero-pad H and W, centred, up to multiples of `multiple`. `always` pads by zero too
    instead of returning `x` (an exporter then records the pad amounts as formulas)."""
    height, width = x.shape[-2:]
    ph = (multiple - height % multiple) % multiple
    pw = (multiple - width % multiple) % multiple
    if not (always or ph or pw):
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def crop_center(x: torch.Tensor, height: int, width: int, always: bool = False) -> torch.Tensor:
    """The centred height x width window of `x` (the inverse of `pad_to_multiple`)."""
    dh = x.shape[-2] - height
    dw = x.shape[-1] - width
    if not (always or dh or dw):
        return x
    return x[..., dh // 2 : dh // 2 + height, dw // 2 : dw // 2 + width]
