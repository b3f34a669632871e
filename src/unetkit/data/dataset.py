"""Serve a checked data set to the trainer: streamed pairs, normalised, cropped, seeded.

`inspect_dataset` runs the same check as `unetkit data check` and refuses a data set that
would corrupt training before any work is done; it returns the `DataSpec` (saved in the
checkpoint) and the splits. `SegmentationDataset` reads one pair per item from disk (or
from an optional in-memory cache) and applies the spec, so training, evaluation and
prediction read every mask the same way. Augmentation seeds come from (seed, epoch,
index), never from a worker's RNG: a run is reproducible whatever the worker count,
and a resumed run sees the same crops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unetkit.data.check import CheckReport, check_dataset
from unetkit.data.io import max_pixels, read_image_nodata, to_chw
from unetkit.data.layout import scan
from unetkit.data.spec import DataSpec, read_mask
from unetkit.errors import UnetkitError

Transform = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def inspect_dataset(
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    task: str | None = None,
    include_alpha: bool = False,
    ignore_nodata: bool = False,
) -> tuple[DataSpec, dict[str, list[str]]]:
    """Check `root` and return (spec, splits); raise on the first problem that corrupts training.

    With `ignore_nodata` the spec has an ignore index for labelled pixels without data
    (pass the same flag to `SegmentationDataset`).
    """
    report = checked_dataset(root, val_fraction=val_fraction, seed=seed, task=task, include_alpha=include_alpha,
                             ignore_nodata=ignore_nodata)
    return report.spec, report.splits


def checked_dataset(root: str | Path, **options: Any) -> CheckReport:
    """`check_dataset`, refusing (one sentence) a data set that would corrupt training; the
    report's `spec` is then set. Options as `check_dataset`'s."""
    report = check_dataset(root, **options)
    errors = report.errors
    if errors:
        first = errors[0]
        where = f"{Path(root) / first.file}: " if first.file else f"{root}: "
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise UnetkitError(
            f"the data set cannot be trained on: {where}{first.message}{more}; "
            f"run `unetkit data check {root}` for the full list"
        )
    if report.spec is None:  # pragma: no cover - every path to None also reports an error
        raise UnetkitError(f"{root}: no usable image/mask pairs; run `unetkit data check {root}`")
    return report


class SegmentationDataset(Dataset):
    """Image/mask pairs of `stems` as {"image": (C, H, W) float32, "mask": int64, "stem": str}.

    The image is normalised with spec.mean/std (raw values, no [0, 1] scaling). The mask
    holds class indices (H, W) with the ignore index kept, or (L, H, W) 0/1 labels for
    multilabel. `transform(image HWC, mask HW or HWL, seed)` runs after normalisation;
    without one, `patch_size` takes a seeded random crop (padded with zeros / the ignore
    index when the image is smaller). `cache=True` keeps decoded pairs in memory (per
    worker process), for small data sets.

    Pixels without data (NaN, infinite, the GeoTIFF nodata value) are filled with the band
    mean, so they are 0 once normalised; `ignore_nodata=True` also sets their targets to
    spec.ignore_index, leaving them out of loss and metrics. The pixel limit in force when
    the data set is built (`unetkit.data.io.max_pixels`) travels with it to worker processes.
    """

    def __init__(
        self,
        root: str | Path,
        stems: Sequence[str],
        spec: DataSpec,
        *,
        transform: Transform | None = None,
        patch_size: tuple[int, int] | None = None,
        cache: bool = False,
        seed: int = 0,
        ignore_nodata: bool = False,
    ) -> None:
        layout = scan(root)
        missing = [s for s in stems if s not in layout.images or s not in layout.masks]
        if missing:
            raise UnetkitError(
                f"{root} has no image/mask pair named {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; run `unetkit data check` on it and use the splits it reports"
            )
        self.root = Path(root)
        self.stems = list(stems)
        self.spec = spec
        self.transform = transform
        self.patch_size = tuple(patch_size) if patch_size is not None else None
        self.cache = cache
        self.seed = int(seed)
        self.ignore_nodata = bool(ignore_nodata)
        self.pixel_limit = max_pixels()  # a spawned worker re-imports io: carry the setting along
        self.epoch = 0
        self._images = [layout.images[s] for s in self.stems]
        self._masks = [layout.masks[s] for s in self.stems]
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)
        self._stored: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return len(self.stems)

    def __iter__(self) -> Iterator[dict]:
        """One item per pair (indexing goes on past the end: further draws, see __getitem__)."""
        return (self[i] for i in range(len(self)))

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation seeds; call once per epoch (and with the epoch resumed at)."""
        self.epoch = int(epoch)

    def sample_seed(self, index: int) -> int:
        """The seed of draw `index` this epoch: a hash of (seed, epoch, draw), 0 .. 2**31-1."""
        digest = hashlib.blake2b(f"{self.seed}\0{self.epoch}\0{index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & 0x7FFFFFFF

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair as stored: image (H, W, C) native dtype (no-data pixels as they are), targets
        (H, W) or (L, H, W) int64 (no-data pixels ignored when `ignore_nodata`)."""
        image, target, _ = self.load_with_nodata(index)
        return image, target

    def load_with_nodata(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`load`, and the (H, W) mask of pixels without data (None when there are none)."""
        if index in self._stored:
            image, target, nodata = self._stored[index]
            return image, target.astype(np.int64), nodata
        image_path, mask_path = self._images[index], self._masks[index]
        image, nodata = read_image_nodata(image_path, include_alpha=self.spec.include_alpha,
                                          pixel_limit=self.pixel_limit)
        if image.shape[2] != self.spec.in_channels:
            raise UnetkitError(
                f"{image_path} has {image.shape[2]} band(s), the model takes {self.spec.in_channels}; "
                "give every image the same bands"
            )
        target = read_mask(mask_path, self.spec, pixel_limit=self.pixel_limit)
        if target.shape[-2:] != image.shape[:2]:
            raise UnetkitError(
                f"{mask_path} is {target.shape[-2]}x{target.shape[-1]} but its image is "
                f"{image.shape[0]}x{image.shape[1]}; resize the mask or re-export the pair"
            )
        if nodata is not None and self.ignore_nodata:
            if self.spec.ignore_index is None:
                raise UnetkitError(
                    f"{image_path} has pixels without data but the data spec has no ignore index to leave them "
                    "out with; build the spec with inspect_dataset(..., ignore_nodata=True)"
                )
            target[..., nodata] = self.spec.ignore_index
        if self.cache:
            small = np.uint8 if target.max(initial=0) <= 255 else np.int32
            self._stored[index] = (image, target.astype(small), nodata)
        return image, target, nodata

    def __getitem__(self, index: int) -> dict:
        """Item `index`; an index past the end is a further draw of image `index % len(self)`
        (a sampler's second pass over the data in one epoch), with a crop and augmentation of its own."""
        image, target, nodata = self.load_with_nodata(index % len(self.stems))
        image = (image.astype(np.float32) - self._mean) / self._std
        if nodata is not None:
            image[nodata] = 0.0  # the band mean, normalised: no NaN reaches the network
        seed = self.sample_seed(index)
        if self.transform is not None:
            mask = target if target.ndim == 2 else np.moveaxis(target, 0, -1)
            image, mask = self.transform(image, mask, seed)
            mask = np.asarray(mask)
            target = mask if mask.ndim == 2 else np.moveaxis(mask, -1, 0)
        elif self.patch_size is not None:
            image, target = random_crop(image, target, self.patch_size, np.random.default_rng(seed), self._pad_label)
        return {
            "image": torch.from_numpy(to_chw(np.asarray(image, np.float32))),
            "mask": torch.from_numpy(np.ascontiguousarray(target, dtype=np.int64)),
            "stem": self.stems[index % len(self.stems)],
        }

    @property
    def _pad_label(self) -> int:
        return self.spec.ignore_index if self.spec.ignore_index is not None else 0


def random_crop(
    image: np.ndarray, target: np.ndarray, size: tuple[int, int], rng: np.random.Generator, pad_label: int
) -> tuple[np.ndarray, np.ndarray]:
    """A `size` window of image (H, W, C) and target (H, W) / (L, H, W) at a random place.

    An image smaller than the window is padded at the bottom and right: zeros for the
    (normalised) image, `pad_label` for the target, so padding never counts as a class.
    """
    height, width = image.shape[:2]
    ph, pw = size
    grow_h, grow_w = max(ph - height, 0), max(pw - width, 0)
    if grow_h or grow_w:
        image = np.pad(image, ((0, grow_h), (0, grow_w), (0, 0)))
        spatial = ((0, grow_h), (0, grow_w))
        target = np.pad(target, spatial if target.ndim == 2 else ((0, 0), *spatial), constant_values=pad_label)
        height, width = image.shape[:2]
    top = int(rng.integers(0, height - ph + 1))
    left = int(rng.integers(0, width - pw + 1))
    return image[top:top + ph, left:left + pw], target[..., top:top + ph, left:left + pw]


__all__ = ["DataSpec", "SegmentationDataset", "inspect_dataset", "random_crop"]
