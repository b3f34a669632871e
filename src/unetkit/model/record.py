"""The saved model, as one typed record: written once by training, read by everything else.

A model folder's config.json (and an exported .onnx file's metadata) holds this record:
the network's options, the task and threshold, the data contract (classes, colours, ignore
index, bands, normalisation), what the training images looked like (dtype and range, so a
16-bit image given to an 8-bit model is noticed), how it was trained (patch size, split,
epoch), the plan that chose the recipe, and the validation scores. Evaluation, prediction,
export, the report and the server read it through `SavedModel`, never as a free-form dict.

Files written by earlier versions load: missing parts get their old defaults. A malformed
value is refused with one sentence naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from unetkit.data.spec import TASKS, DataSpec, default_colors
from unetkit.errors import UnetkitError
from unetkit.nn.options import UNetError, UNetOptions

FORMAT = "unetkit-model/1"
DEFAULT_TILE = 512
NODATA = 255  # mask value written where the input had no data, unless that is a class id


@dataclass(frozen=True)
class InputRange:
    """What the training images were: their dtype and per-band range (min, max)."""

    dtype: str | None = None
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "low": None if self.low is None else list(self.low),
                "high": None if self.high is None else list(self.high)}


@dataclass(frozen=True)
class SavedModel:
    """Everything needed to use a trained network besides its weights."""

    options: UNetOptions
    task: str
    threshold: float = 0.5
    data: DataSpec | None = None  # None for a bare network: images are used as given
    input: InputRange = field(default_factory=InputRange)
    patch_size: int | None = None
    seed: int = 0
    val_fraction: float = 0.2
    epoch: int | None = None
    plan: dict[str, Any] | None = None
    scores: dict[str, Any] | None = None
    source: str = "the model"  # the folder or file it was read from, for messages

    # --- reading and writing ---------------------------------------------------------------

    @classmethod
    def for_network(cls, options: UNetOptions | Mapping[str, Any], source: str = "the model") -> SavedModel:
        """A bare network without training data: no normalisation, the task from the outputs."""
        options = options if isinstance(options, UNetOptions) else UNetOptions.from_dict(dict(options))
        return cls(options, "binary" if options.num_classes == 1 else "multiclass", source=source)

    @classmethod
    def from_json(cls, values: Mapping[str, Any], source: str) -> SavedModel:
        """From config.json (or ONNX metadata); one sentence naming `source` when a field is bad."""
        if not isinstance(values, Mapping):
            raise UnetkitError(f"{source}: not a unetkit model record; pass a folder written by `unetkit train`.")
        fmt = values.get("format", FORMAT)
        if fmt != FORMAT:
            raise UnetkitError(f"{source}: format {fmt!r} is not {FORMAT!r}; it was written by another tool.")
        try:
            options = UNetOptions.from_dict(dict(_mapping(values.get("model", {}), "model", source)), source)
        except (UNetError, TypeError) as error:
            raise UnetkitError(f"{source}: the model options are invalid ({error}); restore the file or retrain.") \
                from None
        data = values.get("data")
        spec = _spec(data, options, source) if data else None
        task = values.get("task") or (spec.task if spec else None)
        task = task or ("binary" if options.num_classes == 1 else "multiclass")
        if task not in TASKS:
            raise UnetkitError(f"{source}: task {task!r} is not one of {', '.join(TASKS)}; restore the file.")
        train = _mapping(values.get("train") or {}, "train", source)
        patch = train.get("patch_size")
        if isinstance(patch, (list, tuple)):
            patch = max(patch)
        raw_input = _mapping(values.get("input") or {}, "input", source)
        return cls(
            options=options,
            task=task,
            threshold=_number(values.get("threshold", 0.5), "threshold", source, low=0.0, high=1.0, open_=True),
            data=spec,
            input=InputRange(
                dtype=raw_input.get("dtype"),
                low=_numbers(raw_input.get("low"), "input.low", source, options.in_channels),
                high=_numbers(raw_input.get("high"), "input.high", source, options.in_channels),
            ),
            patch_size=None if patch is None else _whole(patch, "train.patch_size", source),
            seed=_whole(train.get("seed", 0), "train.seed", source, low=0),
            val_fraction=_number(train.get("val_fraction", 0.2), "train.val_fraction", source, low=0.0, high=1.0),
            epoch=None if train.get("epoch") is None else _whole(train["epoch"], "train.epoch", source, low=0),
            plan=values.get("plan") if isinstance(values.get("plan"), dict) else None,
            scores=values.get("metrics") if isinstance(values.get("metrics"), dict) else None,
            source=source,
        )

    def to_json(self) -> dict[str, Any]:
        """The config.json dictionary (the same keys earlier versions wrote, plus input and plan)."""
        return {
            "format": FORMAT,
            "model": self.options.to_dict(),
            "task": self.task,
            "threshold": self.threshold,
            "data": self.data.to_dict() if self.data else None,
            "input": self.input.to_json(),
            "train": {"patch_size": self.patch_size, "seed": self.seed, "val_fraction": self.val_fraction,
                      "epoch": self.epoch},
            "plan": self.plan,
            "metrics": self.scores,
        }

    def with_source(self, source: str) -> SavedModel:
        return replace(self, source=source)

    # The record also answers `record["task"]` and `record.get("data")`, as the dict that
    # `unetkit.load` returned before it was typed did.
    def __getitem__(self, key: str) -> Any:
        view = {**self.to_json(), "folder": self.source}
        return view[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    # --- what prediction reads ---------------------------------------------------------------

    @property
    def in_channels(self) -> int:
        return self.options.in_channels

    @property
    def num_outputs(self) -> int:
        return self.options.num_classes

    @property
    def depth(self) -> int:
        return self.options.depth

    @property
    def padding(self) -> str:
        return self.options.padding

    @property
    def multiple(self) -> int:
        """Tile sides are multiples of this, so the model's pad-to-multiple adds nothing."""
        return 2**self.options.depth

    @property
    def mean(self) -> tuple[float, ...] | None:
        return tuple(self.data.mean) if self.data and self.data.mean else None

    @property
    def std(self) -> tuple[float, ...] | None:
        return tuple(self.data.std) if self.data and self.data.std else None

    @property
    def classes(self) -> list[dict]:
        return list(self.data.classes) if self.data else []

    @property
    def class_names(self) -> list[str]:
        count = len(self.class_ids()) if self.task != "multilabel" else self.num_outputs
        if len(self.classes) == count:
            return [c["name"] for c in self.classes]
        return [str(i) for i in range(count)]

    @property
    def include_alpha(self) -> bool:
        return bool(self.data and self.data.include_alpha)

    @property
    def ignore_index(self) -> int | None:
        return self.data.ignore_index if self.data else None

    def default_tile(self) -> int:
        """Twice the training patch (context like training's, fewer seams), as a multiple of
        2**depth; 512 when the patch size is unknown."""
        wanted = 2 * self.patch_size if self.patch_size else DEFAULT_TILE
        return round_up(wanted, self.multiple)

    def class_ids(self) -> np.ndarray:
        """Mask value per decoded index: the classes' ids (which need not be 0..K-1)."""
        count = 2 if self.task == "binary" else self.num_outputs
        if len(self.classes) == count:
            return np.array([int(c["id"]) for c in self.classes], dtype=np.int64)
        return np.arange(count, dtype=np.int64)

    def colors(self) -> list[tuple[int, int, int]]:
        """One colour per decoded index (per label for multilabel), from the classes or VOC."""
        count = len(self.class_ids()) if self.task != "multilabel" else self.num_outputs
        if len(self.classes) == count and all("color" in c for c in self.classes):
            return [tuple(int(v) for v in c["color"]) for c in self.classes]  # type: ignore[misc]
        return [tuple(c) for c in default_colors(count)]  # type: ignore[misc]

    def overlay_colors(self) -> list[tuple[int, int, int] | None]:
        """The colour each class is drawn with over an image, None for the background (drawn
        clear). A grey or white class colour would vanish over a greyscale image, so such
        classes are drawn in a vivid colour instead (their own colour still fills the mask)."""
        vivid = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (120, 255, 80), (230, 80, 255), (255, 140, 40)]
        drawn: list[tuple[int, int, int] | None] = []
        spare = iter(vivid * 8)
        for index, color in enumerate(self.colors()):
            if self.task != "multilabel" and index == 0 and not any(color):
                drawn.append(None)
            elif max(color) - min(color) < 48:  # black, grey or white: no hue to see
                drawn.append(next(spare))
            else:
                drawn.append(color)
        return drawn

    def palette(self) -> list[tuple[int, int, int]] | None:
        """A 256-entry PNG palette with each class's colour at its id; None when ids exceed 255."""
        ids = self.class_ids()
        if self.task == "multilabel" or ids.max(initial=0) > 255:
            return None
        table = [(0, 0, 0)] * 256
        for class_id, color in zip(ids, self.colors()):
            table[int(class_id)] = color
        return table

    def nodata_value(self) -> int:
        """The mask value written where the input had no data: the ignore index, else 255,
        else the first value above every class id."""
        if self.ignore_index is not None:
            return int(self.ignore_index)
        ids = set(self.class_ids().tolist())
        return NODATA if NODATA not in ids else max(ids) + 1

    def check_bands(self, bands: int, name: str) -> None:
        """Refuse an image whose band count differs from the model's, naming the fix."""
        if bands != self.in_channels:
            hint = (" (RGBA: the alpha band is dropped unless the model was trained with it)"
                    if bands == 4 or self.in_channels == 4 else "")
            raise UnetkitError(
                f"{name} has {bands} band(s) but {self.source} was trained on {self.in_channels}{hint}: "
                f"convert the image to {self.in_channels} band(s) or use a model trained on such images."
            )


def record_for(model: Any, meta: SavedModel | Mapping[str, Any] | None) -> SavedModel:
    """The record of an in-memory network: `meta` (a SavedModel, or the dict of a config.json)
    with the network's own options, or a bare record (no normalisation) without one."""
    options = getattr(model, "options", None)
    if isinstance(meta, SavedModel):
        return meta
    if meta:
        values = dict(meta)
        if options is not None:
            values["model"] = options.to_dict()
        return SavedModel.from_json(values, str(values.get("folder") or "the model"))
    if options is None:
        raise UnetkitError("a network other than unetkit's UNet needs its record: pass meta=SavedModel(...).")
    return SavedModel.for_network(options)


def round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-int(value) // multiple) * multiple)


# --- checking the fields of a file -------------------------------------------------------------


def _spec(data: Any, options: UNetOptions, source: str) -> DataSpec:
    data = _mapping(data, "data", source)
    in_channels = _whole(data.get("in_channels", options.in_channels), "data.in_channels", source, low=1)
    if in_channels != options.in_channels:
        raise UnetkitError(f"{source}: data.in_channels is {in_channels} but the model takes "
                           f"{options.in_channels} bands; restore the file or retrain.")
    mean = _numbers(data.get("mean") or None, "data.mean", source, in_channels)
    std = _numbers(data.get("std") or None, "data.std", source, in_channels)
    if std is not None and min(std) <= 0:
        raise UnetkitError(f"{source}: data.std holds {min(std)}, but a standard deviation is > 0; restore the file.")
    classes = data.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, Mapping) and "id" in c for c in classes):
        raise UnetkitError(f"{source}: data.classes must be a list of {{id, name, color}}; restore the file.")
    ignore = data.get("ignore_index")
    try:
        return DataSpec(
            task=data.get("task") or ("binary" if options.num_classes == 1 else "multiclass"),
            classes=[{"id": int(c["id"]), "name": str(c.get("name", c["id"])),
                      "color": list(c.get("color") or [0, 0, 0])} for c in classes],
            ignore_index=None if ignore is None else _whole(ignore, "data.ignore_index", source, low=0),
            in_channels=in_channels,
            mean=list(mean) if mean else [],
            std=list(std) if std else [],
            binary_255=bool(data.get("binary_255", False)),
            color_coded=bool(data.get("color_coded", False)),
            include_alpha=bool(data.get("include_alpha", False)),
        )
    except (TypeError, ValueError, KeyError, UnetkitError) as error:
        raise UnetkitError(f"{source}: data is malformed ({error}); restore the file or retrain.") from None


def _mapping(value: Any, name: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnetkitError(f"{source}: {name} must be a mapping, not {type(value).__name__}; restore the file.")
    return value


def _whole(value: Any, name: str, source: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and
                                                                         not value.is_integer()):
        raise UnetkitError(f"{source}: {name} is {value!r}, not a whole number; restore the file or retrain.")
    if low is not None and value < low:
        raise UnetkitError(f"{source}: {name} is {value}, below {low}; restore the file or retrain.")
    return int(value)


def _number(value: Any, name: str, source: str, low: float | None = None, high: float | None = None,
            open_: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnetkitError(f"{source}: {name} is {value!r}, not a number; restore the file or retrain.")
    outside = (low is not None and (value < low or (open_ and value == low))) or (
        high is not None and (value > high or (open_ and value == high)))
    if outside:
        raise UnetkitError(f"{source}: {name} is {value}, outside {'(' if open_ else '['}{low}, {high}"
                           f"{')' if open_ else ']'}; restore the file or pass the value as a flag.")
    return float(value)


def _numbers(value: Any, name: str, source: str, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise UnetkitError(f"{source}: {name} must list {count} number(s), one per band, not {value!r}; "
                           "restore the file or retrain.")
    return tuple(_number(v, name, source) for v in value)


__all__ = ["DEFAULT_TILE", "FORMAT", "InputRange", "SavedModel", "record_for", "round_up"]
