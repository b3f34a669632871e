"""What training, evaluation and prediction must agree on about the data, and mask decoding.

`DataSpec` records the task, the class map, the ignore index, the band count and the
per-band normalisation; it is saved in every checkpoint's config.json. `decode_mask`
turns a mask as stored (ids, colours, 0/255, pages) into training targets with the same
rules everywhere, so a mask can never mean one thing to the trainer and another to the
checker. Targets are class *indices* (positions in `classes`): identical to the ids when
the ids are 0..K-1, and still valid output channels when they are not (e.g. {0, 3, 7}).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from unetkit.data.io import PixelLimit, pack_rgb, read_mask_raw
from unetkit.errors import UnetkitError

TASKS = ("binary", "multiclass", "multilabel")
CLASSES_FILE = "classes.json"


@dataclass
class DataSpec:
    """The data contract of a trained model; JSON-able through to_dict / from_dict."""

    task: str
    classes: list[dict]
    ignore_index: int | None
    in_channels: int
    mean: list[float]
    std: list[float]
    binary_255: bool = False  # masks stored as 0/255 are read as 0/1
    color_coded: bool = False  # RGB masks are mapped through the classes' colours
    include_alpha: bool = False  # RGBA images keep their alpha band
    class_names: list[str] = field(init=False, repr=False, compare=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UnetkitError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        self.classes = [
            {"id": int(c["id"]), "name": str(c["name"]), "color": [int(v) for v in c["color"]]} for c in self.classes
        ]
        self.class_names = [c["name"] for c in self.classes]

    @property
    def num_outputs(self) -> int:
        """Logit channels: 1 for binary (sigmoid), one per class or label otherwise."""
        return 1 if self.task == "binary" else len(self.classes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("class_names")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DataSpec:
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in data.items() if k in names})


# --- classes.json --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassesFile:
    """A data set's classes.json: class names, colours, ids, and the ignore index."""

    path: Path
    classes: list[dict]
    ignore_index: int | None
    has_colors: bool
    task: str | None = None


def read_classes_file(root: str | Path) -> ClassesFile | None:
    """Parse ROOT/classes.json, or None when there is none; a malformed one is refused."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return None

    def refuse(why: str) -> UnetkitError:
        return UnetkitError(
            f"{path}: {why}; expected e.g. "
            '{"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}, ...], "ignore_index": 255}'
        )

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise refuse(f"not valid JSON (line {error.lineno}: {error.msg})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UnetkitError(f"cannot read {path}: {error}; check the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise refuse('it needs a non-empty "classes" list')
    classes, has_colors = [], True
    palette = default_colors(len(data["classes"]))
    for position, entry in enumerate(data["classes"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or entry["id"] < 0:
            raise refuse(f'class {position + 1} needs an integer "id" >= 0')
        color = entry.get("color")
        if color is None:
            has_colors, color = False, palette[position]
        elif not (isinstance(color, list) and len(color) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in color)):
            raise refuse(f'class {entry["id"]} has colour {color!r}, not [r, g, b] with values 0..255')
        classes.append({"id": entry["id"], "name": str(entry.get("name", entry["id"])), "color": list(color)})
    ids = [c["id"] for c in classes]
    if len(set(ids)) != len(ids):
        raise refuse("two classes share an id")
    colors = [tuple(c["color"]) for c in classes]
    if has_colors and len(set(colors)) != len(colors):
        has_colors = False  # colours are for display only when they cannot tell classes apart
    ignore = data.get("ignore_index")
    if ignore is not None and (not isinstance(ignore, int) or ignore < 0 or ignore in ids):
        raise refuse(f'"ignore_index" {ignore!r} must be an integer >= 0 that is not a class id')
    task = data.get("task")
    if task is not None and task not in TASKS:
        raise refuse(f'"task" {task!r} must be one of {", ".join(TASKS)}')
    return ClassesFile(path, classes, ignore, has_colors, task)


def default_colors(count: int) -> list[list[int]]:
    """The PASCAL VOC colour map: distinct, stable colours for classes without one."""
    if count == 2:
        return [[0, 0, 0], [255, 255, 255]]
    colors = []
    for index in range(count):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colors.append([r, g, b])
    return colors


def classes_by_id(ids: Sequence[int]) -> list[dict]:
    """Classes discovered from the masks: named by id, VOC colours."""
    palette = default_colors(len(ids))
    return [{"id": int(i), "name": str(i), "color": palette[k]} for k, i in enumerate(sorted(ids))]


# --- mask decoding -------------------------------------------------------------------------


def value_indices(spec: DataSpec, values: np.ndarray, kind: str) -> np.ndarray:
    """Map stored mask values to class indices; ignored -> ignore_index; unknown -> -1.

    `values` are ids for kind "ids", packed r<<16|g<<8|b colours for kind "rgb" (grey
    colours when the spec is not colour coded are read as their grey level), page values
    for "multilabel".
    """
    values = np.asarray(values, dtype=np.int64)
    ignore = spec.ignore_index
    if kind == "rgb":
        if spec.color_coded:
            keys = np.array([(c["color"][0] << 16) | (c["color"][1] << 8) | c["color"][2] for c in spec.classes])
            return _lookup(values, keys, np.arange(len(keys)), None)
        grey = values & 0xFF
        is_grey = ((values >> 16) == grey) & (((values >> 8) & 0xFF) == grey)
        return np.where(is_grey, value_indices(spec, grey, "ids"), -1)
    if spec.binary_255:
        values = np.where(values == 255, 1, values)
    if kind == "multilabel":
        allowed = (values == 0) | (values == 1)
        if ignore is not None:
            allowed |= values == ignore
        return np.where(allowed, values, -1)
    ids = np.array([c["id"] for c in spec.classes])
    return _lookup(values, ids, np.arange(len(ids)), ignore)


def _lookup(values: np.ndarray, keys: np.ndarray, targets: np.ndarray, ignore: int | None) -> np.ndarray:
    order = np.argsort(keys)
    keys, targets = keys[order], targets[order]
    position = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
    found = keys[position] == values
    result = np.where(found, targets[position], -1)
    if ignore is not None:
        result = np.where(values == ignore, ignore, result)
    return result


def decode_mask(spec: DataSpec, raw: np.ndarray, kind: str, path: str | Path) -> np.ndarray:
    """A stored mask -> int64 targets: (H, W) class indices or (L, H, W) 0/1 labels.

    Refuses, naming the file, a mask whose kind or values the spec cannot account for.
    """
    multilabel = spec.task == "multilabel"
    if multilabel != (kind == "multilabel"):
        want = "a multi-page TIFF or a folder per label" if multilabel else "a single-channel image of class ids"
        raise UnetkitError(f"mask {path} does not match the {spec.task} task; it must be {want}")
    if kind == "multilabel" and raw.shape[0] != len(spec.classes):
        raise UnetkitError(
            f"mask {path} has {raw.shape[0]} labels, the data set has {len(spec.classes)}; give every mask the same labels"
        )
    if kind == "rgb" and not spec.color_coded and not _grey(raw):
        raise UnetkitError(
            f"mask {path} is colour coded (RGB) but the data set has no colour map; "
            "list each class's colour in classes.json"
        )
    values = pack_rgb(raw) if kind == "rgb" else raw
    uniques, inverse = np.unique(values, return_inverse=True)
    mapped = value_indices(spec, uniques, kind)
    if (mapped < 0).any():
        bad = uniques[mapped < 0][:5]
        shown = [show_value(int(v), kind) for v in bad]
        raise UnetkitError(
            f"mask {path} holds label values {', '.join(shown)} outside the class map; "
            "fix the mask or add them to classes.json"
        )
    return mapped[inverse.reshape(values.shape)].astype(np.int64)


def read_mask(path: str | Path, spec: DataSpec, *, pixel_limit: PixelLimit = ...) -> np.ndarray:
    """A mask file (or per-label folder) as training targets under `spec`: (H, W) class
    indices or (L, H, W) 0/1 labels; io reads the file as stored, the spec says what it means."""
    path = Path(path)
    raw, kind = read_mask_raw(path, labels=spec.class_names if path.is_dir() else None, pixel_limit=pixel_limit)
    return decode_mask(spec, raw[:, :, :3] if kind == "rgb" else raw, kind, path)


def _grey(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all())


def show_value(value: int, kind: str) -> str:
    """A stored mask value as a user wrote it: an id, or an (r, g, b) colour."""
    if kind == "rgb":
        return f"({value >> 16}, {(value >> 8) & 0xFF}, {value & 0xFF})"
    return str(value)
