"""Tiny data sets built in tmp_path: a few small images and masks, written with unetkit's own io."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unetkit.data.io import write_image, write_mask


def blob_mask(height: int, width: int, seed: int, classes: int = 2) -> np.ndarray:
    """Class ids with every class present: horizontal bands plus a seeded square of class 1."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(height)[:, None] * classes // height).repeat(width, axis=1).astype(np.uint8)
    top, left = rng.integers(0, max(height - 3, 1)), rng.integers(0, max(width - 3, 1))
    mask[top:top + 3, left:left + 3] = 1
    return mask


def noise_image(height: int, width: int, bands: int, seed: int, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = {np.uint8: 255, np.uint16: 4000}.get(dtype, 1)
    image = rng.random((height, width, bands)) * top
    return image.astype(dtype)


class DataSetBuilder:
    """Write images/ + masks/ (+ classes.json, splits/) under one root, pair by pair."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)

    def pair(self, stem: str, image: np.ndarray, mask: np.ndarray | None, *, image_ext: str = ".png",
             mask_ext: str = ".png", palette=None) -> DataSetBuilder:
        write_image(self.root / "images" / f"{stem}{image_ext}", image)
        if mask is not None:
            if mask.ndim == 3 and mask.shape[2] == 3:  # colour-coded RGB mask
                write_image(self.root / "masks" / f"{stem}{mask_ext}", mask)
            else:
                write_mask(self.root / "masks" / f"{stem}{mask_ext}", mask, palette=palette)
        return self

    def pairs(self, count: int, *, size=(12, 10), bands: int = 3, classes: int = 2, dtype=np.uint8,
              prefix: str = "p") -> DataSetBuilder:
        ext = ".png" if bands in (1, 3, 4) and dtype != np.float32 else ".tif"
        for i in range(count):
            self.pair(f"{prefix}{i:02d}", noise_image(*size, bands, i, dtype), blob_mask(*size, i, classes),
                      image_ext=ext)
        return self

    def classes(self, classes: list[dict], ignore_index: int | None = None, **extra) -> DataSetBuilder:
        payload = {"classes": classes, "ignore_index": ignore_index, **extra}
        (self.root / "classes.json").write_text(json.dumps(payload))
        return self

    def split(self, name: str, stems: list[str]) -> DataSetBuilder:
        (self.root / "splits").mkdir(exist_ok=True)
        (self.root / "splits" / f"{name}.txt").write_text("\n".join(stems) + "\n")
        return self


@pytest.fixture
def builder(tmp_path: Path) -> DataSetBuilder:
    return DataSetBuilder(tmp_path / "set")
