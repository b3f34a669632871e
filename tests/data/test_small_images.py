"""Images far smaller than the patch (down to 1x1) train at every augmentation level.

A 1x1 image passed `data check` and then crashed training in OpenCV: RandomScale shrank a
1-pixel side to 0 and cv2.resize refused it.
"""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data import SegmentationDataset, inspect_dataset
from unetkit.data.check import check_dataset
from unetkit.data.transforms import FLIPS, LEVELS, MIN_SIDE, build_augmentation

from .conftest import noise_image

SHAPES = [(1, 1), (1, 5), (3, 2), (5, 1), (7, 40)]
SEEDS = range(12)  # the zoom-out that broke fires in about 1 call of 4 at "default"


def tiny(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = (rng.standard_normal((*shape, 3)) + 5).astype(np.float32)  # nowhere 0, so padding shows
    mask = rng.choice(np.array([3, 7]), shape).astype(np.int64)
    return image, mask


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
@pytest.mark.parametrize("flips", FLIPS)
def test_tiny_images_give_a_full_patch(level, shape, flips):
    aug = build_augmentation((32, 32), level=level, flips=flips)
    image, mask = tiny(shape)
    for seed in SEEDS:
        out_image, out_mask = aug(image, mask, seed)
        assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32) and out_mask.dtype == mask.dtype
        assert set(np.unique(out_mask)) <= {3, 7, 0}  # the input's labels and the fill label, nothing else
        assert np.isfinite(out_image).all()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("patch", [(48, 32), (32, 48), None])
def test_tiny_images_with_other_patches_and_an_ignore_index(level, patch):
    aug = build_augmentation(patch, level=level, ignore_index=255)
    for shape in SHAPES:
        image, mask = tiny(shape, 1)
        for seed in SEEDS:
            out_image, out_mask = aug(image, mask, seed)
            if patch is not None:
                assert out_image.shape[:2] == out_mask.shape == patch
            else:  # no patch: the image comes back at least MIN_SIDE on each side
                assert min(out_mask.shape) >= min(MIN_SIDE, *shape) and out_image.shape[:2] == out_mask.shape
            assert set(np.unique(out_mask)) <= {3, 7, 255}


def test_level_none_keeps_the_single_pixel_exactly():
    aug = build_augmentation((16, 16), level="none", ignore_index=255)
    image, mask = tiny((1, 1), 2)
    for seed in SEEDS:
        out_image, out_mask = aug(image, mask, seed)
        (row,), (col,) = np.nonzero(out_mask != 255)
        assert out_mask[row, col] == mask[0, 0]
        np.testing.assert_array_equal(out_image[row, col], image[0, 0])
        assert (np.delete(out_image.reshape(-1, 3), row * 16 + col, axis=0) == 0).all()


def test_multilabel_stacks_of_a_tiny_image():
    aug = build_augmentation((32, 32), level="strong", ignore_index=255)
    image = tiny((1, 5))[0]
    mask = np.array([[[0, 1], [1, 1], [1, 0], [0, 0], [1, 0]]], np.uint8)  # (1, 5, 2 labels)
    for seed in SEEDS:
        out_image, out_mask = aug(image, mask, seed)
        assert out_mask.shape == (32, 32, 2) and set(np.unique(out_mask)) <= {0, 1, 255}


def test_a_set_with_a_one_pixel_image_trains(builder):
    builder.pairs(4, size=(12, 10))
    builder.pair("dot", noise_image(1, 1, 3, 9), np.array([[1]], np.uint8))
    builder.pair("line", noise_image(1, 6, 3, 8), np.array([[0, 1, 1, 0, 1, 0]], np.uint8))
    assert check_dataset(builder.root).ok
    spec, _ = inspect_dataset(builder.root)
    stems = ["dot", "line", "p00"]
    for level in ("default", "strong"):
        aug = build_augmentation((32, 32), level=level, ignore_index=spec.ignore_index)
        dataset = SegmentationDataset(builder.root, stems, spec, transform=aug, patch_size=(32, 32))
        for epoch in range(8):
            dataset.set_epoch(epoch)
            for item in dataset:
                assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32)
                assert set(item["mask"].unique().tolist()) <= {0, 1}
