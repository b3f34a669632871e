"""The U-Net's options, declared once: names, types, defaults, allowed values and what they do.

`UNet(**options)` takes exactly these (positionally too, in this order), `model.config`
returns them, a saved model stores them, and the CLI flags and the training config are made
from this list, so an option cannot exist in one place and be missing in another. Plain
Python, no torch: `unetkit --help` reads it without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

NORMS = ("batch", "instance", "group", None)
UP_MODES = ("transpose", "nearest", "bilinear")
PADDINGS = ("same", "valid")


class UNetError(ValueError):
    """A model option or input size that cannot work; the message says what to use instead."""


def _option(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class UNetOptions:
    """Everything that defines a U-Net's architecture (its weights aside)."""

    in_channels: int = _option(1, "input bands (1 grey, 3 RGB, any number for multispectral)")
    num_classes: int = _option(2, "output channels: 1 for a binary task, else one per class or label")
    depth: int = _option(4, "encoder levels, each halving the resolution (the paper: 4)")
    base_channels: int = _option(64, "channels of the first level, doubled at each level below (the paper: 64)")
    up_mode: str = _option(
        "transpose", "decoder up-sampling: transpose (learned 2x2 transposed conv), nearest or bilinear "
        "(resize, then a 3x3 conv)", UP_MODES,
    )
    norm: str | None = _option("batch", "normalisation after every 3x3 conv: batch, instance, group or none", NORMS)
    dropout: float = _option(0.0, "dropout rate at the end of the encoder and in the bottleneck, in [0, 1)")
    padding: str = _option(
        "same", "same: zero-padded convs, output size = input size for any input; valid: the paper's "
        "unpadded convs (572 -> 388)", PADDINGS,
    )

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "depth", "base_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UNetError(f"{name}={value!r} must be a whole number of at least 1.")
        if self.base_channels < 2:
            raise UNetError(f"base_channels={self.base_channels} must be at least 2 (the decoder halves it).")
        for name in ("up_mode", "norm", "padding"):
            allowed = option_field(name).metadata["choices"]
            if getattr(self, name) not in allowed:
                shown = ", ".join("None" if a is None else repr(a) for a in allowed)
                raise UNetError(f"{name}={getattr(self, name)!r} is not known: use {shown}.")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise UNetError(f"dropout={self.dropout!r} must be a rate in [0, 1).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the model options") -> UNetOptions:
        """From a saved config: unknown keys and wrong types are refused with one sentence."""
        if not isinstance(values, dict):
            raise UNetError(f"{source}: expected a mapping of option: value, got {type(values).__name__}.")
        unknown = sorted(set(values) - set(OPTION_NAMES))
        if unknown:
            raise UNetError(f"{source}: {unknown[0]!r} is not a U-Net option (known: {', '.join(OPTION_NAMES)}).")
        return cls(**values)


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(UNetOptions))
DATA_OPTIONS = ("in_channels", "num_classes")  # fixed by the data, not chosen by the user in training


def option_field(name: str) -> dataclasses.Field:
    """The dataclass field of one option (its default, help and choices)."""
    return next(f for f in dataclasses.fields(UNetOptions) if f.name == name)


__all__ = ["DATA_OPTIONS", "NORMS", "OPTION_NAMES", "PADDINGS", "UNetError", "UNetOptions", "UP_MODES",
           "option_field"]
