"""One dataclass holds every training setting; each field is also a CLI flag of the same name.

A YAML file (`--config run.yaml`) sets fields by name; flags given on the command line win
over the file. Unknown keys and out-of-range values are refused with one sentence naming
the key and the fix. Each field carries its help text and allowed values, which the CLI's
`--help` prints. The model's options are not listed here: they are made from
`unetkit.nn.options.UNetOptions` (with the trainer's own default width), so a new network
option is a training flag at once. RUN_DIR/config.yaml holds the resolved settings (the
task, loss, learning rate and workers as they were decided, not `null`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from unetkit.errors import UnetkitError
from unetkit.nn.options import DATA_OPTIONS, OPTION_NAMES, UNetOptions

TASKS = ("binary", "multiclass", "multilabel")
LOSSES = ("ce", "bce", "dice", "focal", "ce+dice", "bce+dice", "focal+dice")
DEFAULT_LOSS = {"binary": "bce+dice", "multiclass": "ce+dice", "multilabel": "bce+dice"}
DEFAULT_LR = {"adamw": 3e-3, "sgd": 1e-2}
# The trainer's network is narrower than the paper's: base 16 (16-32-64-128, bottleneck 256)
# trains well on 2 CPU cores in minutes (BENCHMARKS.md); raise it on a GPU.
TRAIN_MODEL_DEFAULTS = {"base_channels": 16}
# What `--resume` may change: how long and how visibly to go on, not what is being trained.
CHANGEABLE_ON_RESUME = ("epochs", "minutes", "max_minutes", "progress", "workers", "device", "val_every",
                        "early_stopping", "compile", "data", "max_pixels")


def setting(default: Any, help: str, choices: tuple | None = None, default_text: str | None = None) -> Any:
    """A config field with its `--help` text, its allowed values and how its default reads."""
    return field(default=default, metadata={"help": help, "choices": choices, "default_text": default_text})


def _model_fields() -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(UNetOptions)
    made = []
    for f in fields(UNetOptions):
        if f.name in DATA_OPTIONS:
            continue
        default = TRAIN_MODEL_DEFAULTS.get(f.name, f.default)
        made.append((f.name, hints[f.name], field(default=default, metadata={**f.metadata, "group": "model"})))
    return made


ModelSettings = dataclasses.make_dataclass("ModelSettings", _model_fields())
ModelSettings.__module__ = __name__
ModelSettings.__doc__ = "The U-Net's options that training chooses (bands and classes come from the data)."


@dataclass
class TrainConfig(ModelSettings):  # type: ignore[misc, valid-type]
    """Every setting of a training run. Defaults suit 2 CPU cores and a few hundred images."""

    # where
    data: str = setting("", "the data set folder (images/ and masks/, see `unetkit data check`)")
    out: str = setting("", "the run folder: checkpoints, metrics, curves, report")
    resume: bool = setting(False, "continue the run in --out (or give the run folder: --resume RUN_DIR) with its "
                           "saved settings; only epochs, max_minutes, progress, workers, device, val_every, "
                           "early_stopping, compile and data may change")
    overwrite: bool = setting(False, "replace a run already in --out (deletes its checkpoints and metrics)")
    # task and data
    task: str | None = setting(None, "what each pixel gets", (None, *TASKS),
                               "inferred from the masks: binary for 2 classes, multiclass for more, "
                               "multilabel for per-label masks")
    val_fraction: float = setting(0.2, "share of the pairs held out for validation when there is no splits/val.txt")
    patch_size: int = setting(128, "side of the square training crops, a multiple of 2**depth")
    batch_size: int = setting(8, "crops per optimisation step (split across processes under torchrun)")
    augment: str = setting("default", "augmentation strength: none, light (flips, mild intensity), default "
                           "(+ scale, elastic, gamma, noise, blur) or strong", ("none", "light", "default", "strong"))
    flips: str = setting("all", "all: the 8 flips and 90-degree turns (images without an up: microscopy, aerial); "
                         "horizontal: mirror only (scenes with a sky); none", ("all", "horizontal", "none"))
    cache: bool = setting(False, "keep decoded image/mask pairs in memory (small data sets)")
    workers: int | None = setting(None, "DataLoader worker processes", default_text="0 on 2 cores (the model "
                                  "needs them), else up to 4")
    include_alpha: bool = setting(False, "keep the alpha band of RGBA images as an input band")
    ignore_nodata: bool = setting(False, "leave labelled pixels without data (NaN, GeoTIFF nodata) out of the loss "
                                  "and the metrics; by default they are filled with the band mean and trained on")
    max_pixels: int = setting(250_000_000, "largest image accepted, in pixels (a guard against decompression "
                              "bombs); raise it for bigger scenes")
    # loss
    loss: str | None = setting(None, "loss terms, summed", (None, *LOSSES),
                               "ce+dice for multiclass, bce+dice for binary and multilabel")
    class_weights: list[float] | None = setting(None, "one weight per output class for ce/bce/focal "
                                                "(e.g. 1 5 for a rare foreground)", default_text="equal")
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing, in [0, 1)")
    focal_gamma: float = setting(2.0, "focusing exponent of the focal loss")
    border_weights: bool = setting(False, "the U-Net paper's weight map that stresses the gaps between touching "
                                   "objects (binary tasks)")
    border_w0: float = setting(10.0, "weight-map peak for gaps between objects (paper: 10)")
    border_sigma: float = setting(5.0, "weight-map width in pixels (paper: 5)")
    # optimisation
    optimizer: str = setting("adamw", "adamw, or sgd with Nesterov momentum", ("adamw", "sgd"))
    lr: float | None = setting(None, "peak learning rate", default_text="3e-3 for adamw, 1e-2 for sgd")
    weight_decay: float = setting(1e-4, "decoupled weight decay (adamw) or L2 penalty (sgd)")
    momentum: float = setting(0.99, "sgd momentum (the paper: 0.99)")
    schedule: str = setting("poly", "learning-rate schedule after the warm-up: poly (1-t)^0.9, cosine or constant",
                            ("poly", "cosine", "constant"))
    warmup_steps: int = setting(0, "steps of linear warm-up from 0 to --lr")
    grad_clip: float | None = setting(12.0, "clip the gradient norm to this (none: no clipping)")
    epochs: int = setting(50, "epochs to train (raise it with --resume to go on)")
    steps_per_epoch: int | None = setting(None, "optimisation steps per epoch",
                                          default_text="one pass over the training split")
    minutes: float | None = setting(None, "a time budget: plan the whole recipe (network width and depth, patch, "
                                    "batch, precision, steps, schedule, augmentation) from the data and a measurement "
                                    "of this machine so that training, validation included, ends after this many "
                                    "minutes; every setting you give yourself wins over the plan (see `unetkit plan`)",
                                    default_text="none: the fixed defaults")
    max_minutes: float | None = setting(None, "stop after this many minutes of training, keeping the checkpoints "
                                        "(the schedule is not shortened: for that, use --minutes)",
                                        default_text="no limit")
    val_every: int = setting(1, "validate every N epochs (and after the last)")
    early_stopping: int | None = setting(None, "stop after N validations without a better score",
                                         default_text="never")
    threshold: float = setting(0.5, "probability above which a binary/multilabel pixel is on, in (0, 1)")
    # speed
    device: str = setting("auto", "where to train", ("auto", "cpu", "cuda", "mps"),
                          "cuda, then mps, then cpu")
    precision: str = setting("auto", "arithmetic: auto picks bf16 or fp16 on CUDA and measures whether bf16 "
                             "pays on the CPU", ("auto", "fp32", "bf16", "fp16"))
    channels_last: bool | None = setting(
        None, "training memory layout: --channels_last trains the fused channels-last network, "
        "--no-channels_last the network as written in NCHW; unset, a probe times a training step in both "
        "and takes the faster (channels-last unless NCHW is at least 10% faster; on a GPU channels-last); "
        "with --minutes the plan measures it for each width it weighs",
        default_text="measured")
    compile: bool = setting(False, "torch.compile the network (slow start, sometimes faster steps)")
    seed: int = setting(0, "seed of the split, the crops, the augmentation and the weights")
    progress: bool = setting(True, "a live progress bar on a terminal (one line per epoch otherwise)")

    def validate(self) -> TrainConfig:
        """Refuse values that cannot work, naming the flag; return self for chaining."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices is not None:
                _choice(f.name, getattr(self, f.name), choices)
        _range("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        for name in ("patch_size", "batch_size", "depth", "base_channels", "epochs", "val_every", "max_pixels"):
            _range(name, getattr(self, name), 1, None)
        for name in ("steps_per_epoch", "early_stopping"):
            if getattr(self, name) is not None:
                _range(name, getattr(self, name), 1, None)
        _range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _range("threshold", self.threshold, 0.0, 1.0, low_open=True, high_open=True)
        _range("warmup_steps", self.warmup_steps, 0, None)
        _range("weight_decay", self.weight_decay, 0.0, None)
        _range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _range("border_sigma", self.border_sigma, 0.0, None, low_open=True)
        if self.base_channels < 2:
            raise UnetkitError(f"--base_channels {self.base_channels} must be at least 2 (the decoder halves it).")
        if self.lr is not None:
            _range("lr", self.lr, 0.0, None, low_open=True)
        if self.grad_clip is not None:
            _range("grad_clip", self.grad_clip, 0.0, None, low_open=True)
        if self.max_minutes is not None:
            _range("max_minutes", self.max_minutes, 0.0, None, low_open=True)
        if self.minutes is not None:
            _range("minutes", self.minutes, 0.0, None, low_open=True)
        if self.workers is not None:
            _range("workers", self.workers, 0, None)
        if self.class_weights is not None:
            for weight in self.class_weights:
                _range("class_weights", weight, 0.0, None)
        if self.padding == "same" and self.patch_size % 2**self.depth:
            raise UnetkitError(
                f"--patch_size {self.patch_size} is not a multiple of 2**depth = {2**self.depth}: "
                f"use {self.patch_size - self.patch_size % 2**self.depth or 2**self.depth} or "
                f"{self.patch_size + (-self.patch_size) % 2**self.depth}."
            )
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def model_options(self) -> dict[str, Any]:
        """The U-Net options training chooses; in_channels and num_classes come from the data."""
        return {name: getattr(self, name) for name in OPTION_NAMES if name not in DATA_OPTIONS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the config") -> TrainConfig:
        """From YAML or flags. `resume` may be a run folder (then it is also `out`)."""
        values = dict(values)
        known = {f.name: f for f in fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnetkitError(f"{source}: {key!r} is not a setting{hint}; see `unetkit train --help`.")
        _resume_folder(values, source)
        coerced = {key: coerce(known[key], value, source) for key, value in values.items()}
        config = cls(**coerced)
        config.given = frozenset(values)  # what was set explicitly (a resumed run checks these)
        return config

    def explicit(self) -> set[str]:
        """Settings set explicitly: those given to `from_dict`, else those that differ from the default."""
        given = getattr(self, "given", None)
        if given is not None:
            return set(given)
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}

    def write_yaml(self, path: Path) -> None:
        from unetkit.atomic import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _resume_folder(values: dict[str, Any], source: str) -> None:
    """`resume: RUN_DIR` (the CLI's `--resume RUN_DIR`) means resume=True, out=RUN_DIR."""
    resume = values.get("resume")
    if not isinstance(resume, str) or resume.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off", ""):
        return
    out = values.get("out")
    if out and Path(str(out)) != Path(resume):
        raise UnetkitError(f"{source}: --resume {resume} and --out {out} name different runs; give one of them.")
    values["out"], values["resume"] = resume, True


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a run.yaml into a dict of settings (validated by TrainConfig.from_dict)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UnetkitError(f"{path}: no such config file; check the --config path.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UnetkitError(f"{path}: cannot be read ({error}); check the --config path.") from None
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
            return [_scalar(base, v, f.name, source) for v in items]
        return _scalar(base, value, f.name, source)
    except (TypeError, ValueError, OverflowError):
        raise UnetkitError(f"{source}: {f.name}={value!r} is not a {base.__name__}.") from None


def _scalar(base: type, value: Any, name: str, source: str) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if base is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
    if base is float:
        number = float(value)
        if not math.isfinite(number):
            raise UnetkitError(f"{source}: {name}={value!r} is not a finite number; give a real value.")
        return number
    return base(value)


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
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise UnetkitError(f"--{name} {value} is out of range: it must be {' and '.join(x for x in (lo, hi) if x)}.")


CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig))
