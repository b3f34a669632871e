"""A data set's fingerprint: the properties a training recipe should follow.

Image sizes (from the file headers, every image), bands and their statistics, class shares
and the ignore label (from `unetkit data check`), and what only the masks tell: how large
and how thick the objects are (the 8-connected components of each class but the most frequent
one, in a sample of the training masks: cells, not the background; cars and buildings, not
the sky; the pieces of a membrane, not the cells it separates), how many there are per
image, how often pixels are ignored, and whether
the classes sit at fixed heights (a sky above a road: the images have an up, so they must
not be turned upside down). Streamed, one mask at a time; cached per data set contents in
~/.cache/unetkit/fingerprints, and written into the run's plan.json.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

SAMPLE = 200  # masks read for the object statistics (evenly spread over the training split)
VERSION = 3  # 3: objects are 8-connected
EIGHT_CONNECTED = np.ones((3, 3), bool)  # a one-pixel diagonal vessel or crack is one object, as it looks


@dataclass
class Fingerprint:
    """What the planner reads about a data set (all sizes in pixels, shares in [0, 1])."""

    root: str
    pairs: int
    train_pairs: int
    val_pairs: int
    median_size: tuple[int, int]
    min_size: tuple[int, int]
    max_size: tuple[int, int]
    bands: int
    dtype: str | None
    mean: list[float]
    std: list[float]
    task: str
    classes: list[str]
    class_shares: list[float]
    foreground_share: float
    ignore_share: float
    object_area_median: float | None = None  # connected components of every class but the most frequent
    object_area_p90: float | None = None
    object_diameter_median: float | None = None  # of a disk with the median area
    object_thickness_median: float | None = None  # twice the largest inner distance of a component
    objects_per_image: float | None = None
    vertical_layout: float = 0.0  # how much the classes' places depend on height (0: not at all, 1: fully)
    horizontal_layout: float = 0.0
    masks_read: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def has_up(self) -> bool:
        """The classes sit at fixed heights (sky, road) and not at fixed sides: no vertical flips."""
        return self.vertical_layout >= 0.3 and self.vertical_layout >= 3 * max(self.horizontal_layout, 0.02)

    @property
    def rare_classes(self) -> list[str]:
        """Classes (not the background) under 1 % of the labelled pixels."""
        start = 0 if self.task == "multilabel" else 1
        return [n for n, s in zip(self.classes[start:], self.class_shares[start:]) if 0 < s < 0.01]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "has_up": self.has_up, "rare_classes": self.rare_classes}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Fingerprint:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("median_size", "min_size", "max_size"):
            known[key] = tuple(known[key])
        return cls(**known)

    def to_text(self) -> str:
        h, w = self.median_size
        lines = [
            f"data: {self.pairs} pairs ({self.train_pairs} train, {self.val_pairs} validation) in {self.root}",
            f"  images: median {h}x{w} (min {self.min_size[0]}x{self.min_size[1]}, max {self.max_size[0]}x"
            f"{self.max_size[1]}), {self.bands} band(s) {self.dtype}",
            f"  task: {self.task}; classes " + ", ".join(
                f"{n} {100 * s:.2g}%" for n, s in zip(self.classes, self.class_shares)),
        ]
        if self.object_diameter_median is not None:
            lines.append(f"  objects: median {self.object_diameter_median:.0f} px across (area {self.object_area_median:.0f}"
                         f", 90th percentile {self.object_area_p90:.0f}), thickness {self.object_thickness_median:.0f} px, "
                         f"{self.objects_per_image:.0f} per image")
        lines.append(f"  layout: vertical {self.vertical_layout:.2f}, horizontal {self.horizontal_layout:.2f}"
                     + (" (the images have an up)" if self.has_up else "")
                     + (f"; {100 * self.ignore_share:.2g}% of pixels ignored" if self.ignore_share else ""))
        return "\n".join(lines)


def fingerprint(root: str | Path, report: Any = None, *, seed: int = 0, val_fraction: float = 0.2,
                use_cache: bool = True) -> Fingerprint:
    """The fingerprint of the data set at `root`; `report` is its `checked_dataset` report
    (made here when not given: the data check refuses data that would corrupt training)."""
    from unetkit.data.dataset import SegmentationDataset, checked_dataset
    from unetkit.data.io import image_size
    from unetkit.data.layout import scan

    root = Path(root)
    layout = scan(root)
    key = _contents_key(layout, seed, val_fraction)
    cached = _read_cache(key) if use_cache else None
    if cached is not None:
        return cached
    if report is None:
        report = checked_dataset(root, seed=seed, val_fraction=val_fraction)
    spec = report.spec
    train = report.splits.get("train") or []
    sizes = np.array([image_size(layout.images[stem]) for stem in train or layout.pairs])
    shares = [float(c.get("share", 0.0)) for c in report.classes]
    start = 0 if spec.task == "multilabel" else 1
    found = Fingerprint(
        root=str(root), pairs=len(layout.pairs), train_pairs=len(train), val_pairs=len(report.splits.get("val") or []),
        median_size=(int(np.median(sizes[:, 0])), int(np.median(sizes[:, 1]))),
        min_size=(int(sizes[:, 0].min()), int(sizes[:, 1].min())), max_size=(int(sizes[:, 0].max()),
                                                                              int(sizes[:, 1].max())),
        bands=spec.in_channels, dtype=report.input_dtype, mean=list(spec.mean), std=list(spec.std), task=spec.task,
        classes=[c["name"] for c in spec.classes], class_shares=shares, foreground_share=float(sum(shares[start:])),
        ignore_share=0.0,
    )
    sample = train[:: max(1, math.ceil(len(train) / SAMPLE))][:SAMPLE]
    dataset = SegmentationDataset(root, sample, spec)
    _masks(found, dataset, spec)
    _write_cache(key, found)
    return found


def _masks(found: Fingerprint, dataset: Any, spec: Any) -> None:
    """Objects and layout from the sampled training masks, one at a time."""
    areas: list[float] = []
    thickness: list[float] = []
    counts: list[int] = []
    ignored = total = 0
    classes = len(spec.classes)
    rows = np.zeros((classes, 2))  # per class: pixels in the top half, the bottom half
    cols = np.zeros((classes, 2))
    shares = np.asarray(found.class_shares, np.float64)
    dominant = int(np.argmax(shares)) if spec.task != "multilabel" and len(shares) == classes else None
    for index in range(len(dataset)):
        _, target = dataset.load(index)
        if target.ndim == 3:  # multilabel: layers of 0/1; the union is the foreground
            valid = ~(target == spec.ignore_index).any(0) if spec.ignore_index is not None else np.ones(
                target.shape[1:], bool)
            foreground = (target == 1).any(0) & valid
            layers = [(target[k] == 1) & valid for k in range(classes)]
        else:
            valid = target != spec.ignore_index if spec.ignore_index is not None else np.ones(target.shape, bool)
            foreground = (target > 0) & valid
            layers = [(target == k) & valid for k in range(classes)]
        ignored += int((~valid).sum())
        total += valid.size
        height, width = foreground.shape
        for k, layer in enumerate(layers):
            rows[k] += (layer[: height // 2].sum(), layer[height - height // 2 :].sum())
            cols[k] += (layer[:, : width // 2].sum(), layer[:, width - width // 2 :].sum())
        count = 0
        for k, layer in enumerate(layers):
            if k == dominant or (dominant is None and spec.task != "multilabel" and k == 0):
                continue
            labels, found_here = ndimage.label(layer, structure=EIGHT_CONNECTED)
            count += found_here
            if found_here:
                areas += np.bincount(labels.ravel())[1:].tolist()
                inner = ndimage.distance_transform_edt(layer)
                thickness += (2 * np.asarray(ndimage.maximum(inner, labels, np.arange(1, found_here + 1)))).tolist()
        counts.append(count)
    found.masks_read = len(dataset)
    found.ignore_share = ignored / total if total else 0.0
    if areas:
        found.object_area_median = float(np.median(areas))
        found.object_area_p90 = float(np.percentile(areas, 90))
        found.object_diameter_median = float(math.sqrt(4 * found.object_area_median / math.pi))
        found.object_thickness_median = float(np.median(thickness))
        found.objects_per_image = float(np.mean(counts))
    found.vertical_layout = _asymmetry(rows)
    found.horizontal_layout = _asymmetry(cols)


def _asymmetry(halves: np.ndarray) -> float:
    """Pixel-weighted mean over classes of |first half - second half| / both halves."""
    both = halves.sum(1)
    if both.sum() == 0:
        return 0.0
    share = np.abs(halves[:, 0] - halves[:, 1]) / np.maximum(both, 1)
    return float((share * both).sum() / both.sum())


def _contents_key(layout: Any, seed: int, val_fraction: float) -> str:
    """A hash of the data set's files (names, sizes, times) and the split settings."""
    digest = hashlib.sha256(f"{VERSION}|{layout.root.resolve()}|{seed}|{val_fraction}".encode())
    for stem in layout.pairs:
        for path in (layout.images[stem], layout.masks[stem]):
            try:
                stat = path.stat()
                digest.update(f"{stem}|{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            except OSError:
                digest.update(stem.encode())
    return digest.hexdigest()[:32]


def _cache_file(key: str) -> Path:
    from unetkit.model.device import _cache_dir

    return _cache_dir() / "fingerprints" / f"{key}.json"


def _read_cache(key: str) -> Fingerprint | None:
    try:
        return Fingerprint.from_dict(json.loads(_cache_file(key).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_cache(key: str, found: Fingerprint) -> None:
    from unetkit.atomic import atomic_write_text

    try:
        atomic_write_text(_cache_file(key), json.dumps(found.to_dict(), indent=1))
    except OSError:
        pass


__all__ = ["Fingerprint", "fingerprint"]
