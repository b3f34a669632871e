"""One dataclass holds every training setting; each field is also a CLI flag of the same name.

A YAML file (`--config run.yaml`) sets fields by name; flags given on the command line win
over the file. Unknown keys and out-of-range values are refused with one sentence naming
the key and the fix. The resolved config is written to RUN_DIR/config.yaml at the start.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from unetkit.errors import UnetkitError


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults suit 2 CPU cores and a few hundred images."""

    # where
    data: str = ""
    out: str = ""
    resume: bool = False
    overwrite: bool = False
    # task and data
    task: str | None = None  # binary | multiclass | multilabel; inferred from the data when None
    val_fraction: float = 0.2
    patch_size: int = 128
    batch_size: int = 8
    augment: str = "default"  # none | light | default | strong
    flips: str = "all"  # all (8 flips/90-degree turns: microscopy, aerial) | horizontal (scenes with an up) | none
    cache: bool = False
    workers: int | None = None  # DataLoader workers; None = chosen from the cores
    include_alpha: bool = False
    # model (the UNet's constructor options)
    depth: int = 4
    base_channels: int = 16  # 16-32-64-128, bottleneck 256: fits 2 CPU cores (BENCHMARKS.md)
    up_mode: str = "transpose"
    norm: str | None = "batch"
    dropout: float = 0.0
    padding: str = "same"
    # loss
    loss: str | None = None  # ce | bce | dice | focal | ce+dice | bce+dice | focal+dice; None = by task
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    border_weights: bool = False  # the U-Net paper's weight map for touching objects (binary)
    border_w0: float = 10.0
    border_sigma: float = 5.0
    # optimisation
    optimizer: str = "adamw"  # adamw | sgd
    lr: float | None = None  # None = 3e-3 for AdamW, 1e-2 for SGD
    weight_decay: float = 1e-4
    momentum: float = 0.99
    schedule: str = "poly"  # poly | cosine | constant
    warmup_steps: int = 0
    grad_clip: float | None = 12.0
    epochs: int = 50
    steps_per_epoch: int | None = None  # None = one pass over the training split
    max_minutes: float | None = None  # stop (and keep the checkpoints) after this wall-clock time
    val_every: int = 1
    early_stopping: int | None = None  # validations without improvement before stopping
    threshold: float = 0.5
    # speed
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on CUDA, fp32 for CPU training)
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    progress: bool = True

    def validate(self) -> TrainConfig:
        """Refuse values that cannot work, naming the flag; return self for chaining."""
        _choice("task", self.task, (None, "binary", "multiclass", "multilabel"))
        _choice("augment", self.augment, ("none", "light", "default", "strong"))
        _choice("flips", self.flips, ("all", "horizontal", "none"))
        _choice("up_mode", self.up_mode, ("transpose", "nearest", "bilinear"))
        _choice("norm", self.norm, ("batch", "instance", "group", None))
        _choice("padding", self.padding, ("same", "valid"))
        _choice("loss", self.loss, (None, "ce", "bce", "dice", "focal", "ce+dice", "bce+dice", "focal+dice"))
        _choice("optimizer", self.optimizer, ("adamw", "sgd"))
        _choice("schedule", self.schedule, ("poly", "cosine", "constant"))
        _choice("device", self.device, ("auto", "cpu", "cuda", "mps"))
        _choice("precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _range("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        for name in ("patch_size", "batch_size", "depth", "base_channels", "epochs", "val_every"):
            _range(name, getattr(self, name), 1, None)
        for name in ("steps_per_epoch", "early_stopping"):
            if getattr(self, name) is not None:
                _range(name, getattr(self, name), 1, None)
        _range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _range("threshold", self.threshold, 0.0, 1.0, low_open=True, high_open=True)
        _range("warmup_steps", self.warmup_steps, 0, None)
        _range("weight_decay", self.weight_decay, 0.0, None)
        if self.lr is not None:
            _range("lr", self.lr, 0.0, None, low_open=True)
        if self.grad_clip is not None:
            _range("grad_clip", self.grad_clip, 0.0, None, low_open=True)
        if self.max_minutes is not None:
            _range("max_minutes", self.max_minutes, 0.0, None, low_open=True)
        if self.workers is not None:
            _range("workers", self.workers, 0, None)
        if self.padding == "same" and self.patch_size % 2**self.depth:
            raise UnetkitError(
                f"--patch_size {self.patch_size} is not a multiple of 2**depth = {2**self.depth}: "
                f"use {self.patch_size - self.patch_size % 2**self.depth or 2**self.depth} or "
                f"{self.patch_size + (-self.patch_size) % 2**self.depth}."
            )
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (3e-3 if self.optimizer == "adamw" else 1e-2)

    def model_options(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "base_channels": self.base_channels,
            "up_mode": self.up_mode,
            "norm": self.norm,
            "dropout": self.dropout,
            "padding": self.padding,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the config") -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnetkitError(f"{source}: {key!r} is not a setting{hint}; see `unetkit train --help`.")
        coerced = {key: coerce(known[key], value, source) for key, value in values.items()}
        return cls(**coerced)

    def write_yaml(self, path: Path) -> None:
        from unetkit.train.checkpoint import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a run.yaml into a dict of settings (validated by TrainConfig.from_dict)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UnetkitError(f"{path}: no such config file; check the --config path.") from None
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UnetkitError(f"{path}: not valid YAML{where}; fix the file or pass the settings as flags.") from None
    if not isinstance(values, dict):
        raise UnetkitError(f"{path}: expected a mapping of setting: value; see `unetkit train --help`.")
    return values


def field_type(f: dataclasses.Field) -> tuple[type, bool, bool]:
    """(base type, optional?, list?) of a config field, for flag parsing and coercion."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    core = next((a for a in args if a is not type(None)), hint) if args else hint
    if typing.get_origin(core) is list:
        return typing.get_args(core)[0], optional, True
    return core, optional, False


def coerce(f: dataclasses.Field, value: Any, source: str = "the config") -> Any:
    """Turn a YAML or command-line value into the field's type, or say why it can't."""
    base, optional, is_list = field_type(f)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise UnetkitError(f"{source}: {f.name} cannot be empty; give a {base.__name__}.")
    try:
        if is_list:
            items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
            return [base(v) for v in items]
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise UnetkitError(f"{source}: {f.name}={value!r} is not a {base.__name__}.") from None


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join("none" if a is None else a for a in allowed)
        raise UnetkitError(f"--{name} {value!r} is not allowed: use one of {shown}.")


def _range(
    name: str, value: float, low: float | None, high: float | None, low_open: bool = False, high_open: bool = False
) -> None:
    bad = (low is not None and (value < low or (low_open and value == low))) or (
        high is not None and (value > high or (high_open and value == high))
    )
    if bad:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise UnetkitError(f"--{name} {value} is out of range: it must be {' and '.join(x for x in (lo, hi) if x)}.")


CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig))
