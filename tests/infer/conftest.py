"""Fixtures for tests/infer: small untrained models saved as model folders, smooth test images.

The helpers are plain functions handed out by factory fixtures of the same name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from unetkit.data.spec import default_colors
from unetkit.model.store import save_model
from unetkit.nn import UNet


def _make_meta(task: str = "multiclass", class_ids: list[int] | None = None, in_channels: int = 1,
              mean: float = 100.0, std: float = 50.0, threshold: float = 0.5, patch_size: int = 32,
              colors: list[list[int]] | None = None) -> dict:
    """A config.json dictionary as the trainer writes it."""
    class_ids = class_ids if class_ids is not None else [0, 1, 2]
    colors = colors or default_colors(len(class_ids))
    classes = [{"id": i, "name": f"class{i}", "color": c} for i, c in zip(class_ids, colors)]
    data = {"task": task, "classes": classes, "ignore_index": None, "in_channels": in_channels,
            "mean": [mean] * in_channels, "std": [std] * in_channels}
    return {"task": task, "threshold": threshold, "data": data, "train": {"patch_size": patch_size}}


def _make_model(num_classes: int = 3, in_channels: int = 1, depth: int = 2, base: int = 8, seed: int = 0,
               **options) -> UNet:
    torch.manual_seed(seed)
    return UNet(in_channels=in_channels, num_classes=num_classes, depth=depth, base_channels=base, **options).eval()


def _constant_logits(model: UNet, logits: list[float]) -> UNet:
    """Make the head emit `logits` at every pixel (zero weights, chosen biases)."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(logits))
    return model


def _save(folder: Path, model: UNet, meta: dict) -> Path:
    return save_model(folder, model, meta)


def _smooth_image(height: int, width: int, seed: int = 0, bands: int = 1) -> np.ndarray:
    """uint8 image of blurred noise: structure at several scales, like a real picture."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal((height, width, bands)), (2, 2, 0))
    field = (field - field.mean()) / (field.std() + 1e-9)
    return np.clip(128 + 50 * field, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def make_meta():
    return _make_meta


@pytest.fixture(scope="session")
def make_model():
    return _make_model


@pytest.fixture(scope="session")
def constant_logits():
    return _constant_logits


@pytest.fixture(scope="session")
def smooth_image():
    return _smooth_image


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A 3-class model (ids 0, 3, 7) over one band, normalised with mean 100, std 50."""
    return _save(tmp_path / "model", _make_model(), _make_meta(class_ids=[0, 3, 7]))
