"""Augmentation: shapes for any band count, reproducibility, exact masks, padding, normalised data."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetkit.data.transforms import (
    LEVELS,
    AdditiveNoise,
    GridElastic,
    RangeGamma,
    ShiftScaleIntensity,
    UnclippedBlur,
    build_augmentation,
)
from unetkit.errors import UnetkitError


def blobs(size: int, seed: int, labels=(0, 1)) -> np.ndarray:
    """An asymmetric blob pattern so a flip or a shift shows up."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal((size, size)), 3)
    levels = np.quantile(field, np.linspace(0, 1, len(labels) + 1)[1:-1])
    return np.asarray(labels)[np.digitize(field, levels)]


def normalised(size: int, bands: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, size, bands)).astype(np.float32)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("bands", [1, 3, 10])
def test_any_band_count_gives_patch_shapes_and_dtypes(level: str, bands: int) -> None:
    aug = build_augmentation((40, 40), level=level, ignore_index=255)
    image, mask = normalised(56, bands, 0), blobs(56, 0).astype(np.int64)
    for seed in range(4):
        out_image, out_mask = aug(image, mask, seed)
        assert out_image.shape == (40, 40, bands) and out_image.dtype == np.float32
        assert out_mask.shape == (40, 40) and out_mask.dtype == np.int64
        assert np.isfinite(out_image).all()


def test_non_square_patch_and_no_patch() -> None:
    image, mask = normalised(50, 10, 1)[:, :44], blobs(50, 1).astype(np.uint8)[:, :44]
    out_image, out_mask = build_augmentation((48, 32), level="strong")(image, mask, 3)
    assert out_image.shape == (48, 32, 10) and out_mask.shape == (48, 32)
    square_image, square_mask = normalised(36, 3, 1), blobs(36, 1).astype(np.uint8)
    out_image, out_mask = build_augmentation(None, level="default")(square_image, square_mask, 3)
    assert out_image.shape == (36, 36, 3) and out_mask.shape == (36, 36)


def test_same_seed_same_output_whatever_the_global_state() -> None:
    aug = build_augmentation((32, 32), level="strong", ignore_index=255)
    image, mask = normalised(48, 3, 2), blobs(48, 2).astype(np.uint8)
    first = aug(image, mask, 7)
    np.random.seed(123)
    random.seed(456)
    np.random.rand(10)
    again = build_augmentation((32, 32), level="strong", ignore_index=255)(image, mask, 7)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    others = [aug(image, mask, seed)[0] for seed in range(8)]
    assert len({o.tobytes() for o in others}) == 8


def test_steps_draw_from_one_shared_stream() -> None:
    """albumentations' set_random_seed gives each step its own generator seeded with the same
    number, so two steps with p=0.5 would always fire together; ours share one stream."""
    aug = build_augmentation((16, 16), level="default")
    aug(normalised(20, 1, 0), np.zeros((20, 20), np.uint8), seed=5)
    steps = aug._compose(0).transforms
    assert len({id(step.py_random) for step in steps}) == 1
    assert len({id(step.random_generator) for step in steps}) == 1


@pytest.mark.parametrize("level", ["default", "strong"])
def test_masks_keep_their_labels_through_scale_rotation_and_elastic(level: str) -> None:
    aug = build_augmentation((48, 48), level=level, ignore_index=255)
    mask = blobs(64, 3, labels=(0, 3, 7)).astype(np.int64)
    image = normalised(64, 3, 3)
    seen: set[int] = set()
    for seed in range(40):  # elastic fires with p 0.3 / 0.5: some of these runs include it
        _, out_mask = aug(image, mask, seed)
        seen |= set(np.unique(out_mask).tolist())
    assert seen <= {0, 3, 7, 255}
    assert {0, 3, 7} <= seen


def test_unusual_labels_survive_exactly() -> None:
    """Negative and large ids (PyTorch's -100, ids above 255) go through OpenCV unchanged."""
    mask = blobs(40, 4, labels=(-100, 2, 300, 70000)).astype(np.int32)
    for ignore in (-100, None):
        aug = build_augmentation((32, 32), level="strong", ignore_index=ignore)
        for seed in range(10):
            _, out_mask = aug(normalised(40, 1, 4), mask, seed)
            assert out_mask.dtype == np.int32
            assert set(np.unique(out_mask).tolist()) <= {-100, 0, 2, 300, 70000}


def test_multilabel_masks_keep_their_layers() -> None:
    mask = np.stack([blobs(40, s) for s in range(5)], axis=-1).astype(np.uint8)
    aug = build_augmentation((32, 32), level="strong", ignore_index=255)
    for seed in range(6):
        _, out_mask = aug(normalised(40, 10, 5), mask, seed)
        assert out_mask.shape == (32, 32, 5)
        assert set(np.unique(out_mask).tolist()) <= {0, 1, 255}


def test_image_and_mask_move_together() -> None:
    """The image is the mask (+-1): after any geometry the two must still agree."""
    mask = blobs(64, 6).astype(np.uint8)
    image = (mask.astype(np.float32) * 2 - 1)[..., None]
    aug = build_augmentation((48, 48), level="strong", ignore_index=255)
    for seed in range(20):
        out_image, out_mask = aug(image, mask, seed)
        gap = out_image[out_mask == 1].mean() - out_image[out_mask == 0].mean()
        assert gap > 1.0, seed


def test_elastic_is_a_smooth_displacement_of_a_coarse_grid() -> None:
    """Warping an x-ramp shows the displacement field: pixels, not noise, and smooth."""
    ramp = np.tile(np.arange(64, dtype=np.float32), (64, 1))[..., None]
    mask = blobs(64, 12, labels=(0, 5)).astype(np.uint8)
    elastic = GridElastic(grid=3, displacement=(0.04, 0.04), p=1.0)
    elastic.set_random_seed(0)
    out = elastic(image=ramp, mask=mask)
    shift = (out["image"].reshape(64, 64) - ramp[..., 0])[8:-8, 8:-8]
    assert 0.5 < np.abs(shift).max() < 12  # std 0.04 x 64 = 2.6 px on the grid nodes
    assert np.abs(np.diff(shift, 2, axis=1)).max() < 0.2  # no pixel-scale jitter
    assert set(np.unique(out["mask"]).tolist()) == {0, 5}


def test_padding_is_zero_in_the_image_and_ignore_in_the_mask() -> None:
    image = np.full((20, 24, 2), 3.0, np.float32)
    mask = np.ones((20, 24), np.uint8)
    out_image, out_mask = build_augmentation((32, 32), level="none", ignore_index=255)(image, mask, 0)
    padded = out_mask == 255
    assert padded.sum() == 32 * 32 - 20 * 24
    assert (out_image[padded] == 0).all() and (out_image[~padded] == 3.0).all()
    _, out_mask = build_augmentation((32, 32), level="none", ignore_index=None)(image, mask, 0)
    assert (out_mask == 0).sum() == 32 * 32 - 20 * 24


def test_level_none_is_an_exact_window() -> None:
    image, mask = normalised(64, 3, 8), blobs(64, 8).astype(np.uint8)
    out_image, out_mask = build_augmentation((24, 16), level="none")(image, mask, 5)
    rows, cols = np.nonzero(image[:, :, 0] == out_image[0, 0, 0])
    top, left = rows[0], cols[0]
    np.testing.assert_array_equal(out_image, image[top:top + 24, left:left + 16])
    np.testing.assert_array_equal(out_mask, mask[top:top + 24, left:left + 16])


def test_intensity_steps_are_valid_on_normalised_data() -> None:
    """albumentations' own versions clip float32 to [0, 1]; ours keep negative values."""
    image = (normalised(32, 3, 9) - 3.0).astype(np.float32)  # all around -3
    shifted = ShiftScaleIntensity(p=1).apply(image, alpha=1.5, beta=0.25)
    means = image.mean(axis=(0, 1))
    np.testing.assert_allclose(shifted.mean(axis=(0, 1)), means + 0.25, atol=1e-4)
    np.testing.assert_allclose(shifted.std(axis=(0, 1)), image.std(axis=(0, 1)) * 1.5, rtol=1e-4)
    gamma = RangeGamma(p=1).apply(image, gamma=0.7)
    np.testing.assert_allclose(gamma.min(axis=(0, 1)), image.min(axis=(0, 1)), atol=1e-3)
    np.testing.assert_allclose(gamma.max(axis=(0, 1)), image.max(axis=(0, 1)), atol=1e-3)
    assert (gamma.mean(axis=(0, 1)) > means).all()  # gamma < 1 brightens, within the band's range
    noisy = AdditiveNoise(p=1).apply(image, noise_map=np.full_like(image, -0.5))
    np.testing.assert_allclose(noisy, image - 0.5)
    flat = np.full((16, 16, 10), -2.0, np.float32)
    blurred = UnclippedBlur(p=1).apply(flat, kernel=np.array([0.25, 0.5, 0.25], np.float32))
    np.testing.assert_allclose(blurred, flat)


def test_strong_pipeline_keeps_negative_data_negative() -> None:
    image = np.full((40, 40, 3), -4.0, np.float32) + normalised(40, 3, 10) * 0.3
    aug = build_augmentation((40, 40), level="strong", ignore_index=255)
    for seed in range(10):
        out_image, out_mask = aug(image, np.zeros((40, 40), np.uint8), seed)
        valid = out_mask != 255  # padding from rotation/zoom-out is 0 by design
        assert out_image[valid].mean() < -2.5


def test_pickles_for_worker_processes() -> None:
    aug = build_augmentation((32, 32), level="default", ignore_index=255)
    image, mask = normalised(40, 3, 11), blobs(40, 11).astype(np.uint8)
    copy = pickle.loads(pickle.dumps(aug))
    for a, b in zip(aug(image, mask, 4), copy(image, mask, 4)):
        np.testing.assert_array_equal(a, b)


def _orientations(flips: str) -> set[str]:
    """Which of the 8 flips/turns of an asymmetric mask 40 seeded calls produced."""
    mask = blobs(24, 5).astype(np.uint8)
    named = {"same": mask, "left-right": mask[:, ::-1], "up-down": mask[::-1], "transpose": mask.T,
             "turn": np.rot90(mask), "turn back": np.rot90(mask, -1), "half turn": mask[::-1, ::-1],
             "anti-transpose": np.rot90(mask, 2).T}
    aug = build_augmentation(None, level="light", flips=flips)
    seen = set()
    for seed in range(40):
        _, out = aug(normalised(24, 1, seed), mask, seed)
        seen |= {name for name, candidate in named.items() if np.array_equal(out, candidate)}
    return seen


def test_flips_choose_which_orientations_training_sees() -> None:
    assert _orientations("all") == {"same", "left-right", "up-down", "transpose", "turn", "turn back",
                                    "half turn", "anti-transpose"}
    assert _orientations("horizontal") == {"same", "left-right"}  # a road scene never stands on its head
    assert _orientations("none") == {"same"}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(UnetkitError, match="level 'extreme' is unknown"):
        build_augmentation((32, 32), level="extreme")
    with pytest.raises(UnetkitError, match="flips 'vertical' is unknown"):
        build_augmentation((32, 32), flips="vertical")
    with pytest.raises(UnetkitError, match="patch size"):
        build_augmentation((0, 32))
    aug = build_augmentation((16, 16))
    with pytest.raises(ValueError, match="does not match"):
        aug(normalised(20, 3, 0), np.zeros((20, 21), np.uint8), 0)
    with pytest.raises(TypeError, match="integer"):
        aug(normalised(20, 3, 0), np.zeros((20, 20), np.float32), 0)
