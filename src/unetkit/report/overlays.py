"""Pictures for people: images stretched for display, masks in class colours, error maps.

Everything returns (H, W, 3) uint8 RGB arrays, ready for PNG; none of it feeds training.
"""

from __future__ import annotations

import numpy as np

FALSE_POSITIVE = (255, 0, 255)  # magenta: predicted, not true
FALSE_NEGATIVE = (0, 200, 255)  # cyan: true, missed
IGNORED = (90, 90, 90)


def display_image(image: np.ndarray) -> np.ndarray:
    """Any (H, W, C) image of any dtype -> RGB uint8: bands 1-3 (or the one band as grey),
    each stretched between its 1st and 99th percentile so 16-bit and float data show."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    bands = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, axis=-1)
    low = np.nanpercentile(bands, 1, axis=(0, 1))
    high = np.nanpercentile(bands, 99, axis=(0, 1))
    scaled = (bands - low) / np.maximum(high - low, 1e-6)
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8)


def colorize(mask: np.ndarray, colors: list[list[int]], ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class ids -> RGB with each class's colour; ignored pixels grey."""
    palette = np.zeros((max(len(colors), int(mask.max(initial=0)) + 1, 256), 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    if ignore_index is not None and ignore_index < len(palette):
        palette[ignore_index] = IGNORED
    return palette[mask.astype(np.int64)]


def blend(image_rgb: np.ndarray, mask: np.ndarray, colors: list[list[int]], alpha: float = 0.45,
          background: int | None = 0) -> np.ndarray:
    """The image with each class painted over it (the background class left clear)."""
    painted = colorize(mask, colors).astype(np.float32)
    out = image_rgb.astype(np.float32)
    where = np.ones(mask.shape, bool) if background is None else mask != background
    out[where] = (1 - alpha) * out[where] + alpha * painted[where]
    return out.astype(np.uint8)


def error_map(predicted: np.ndarray, target: np.ndarray, image_rgb: np.ndarray | None = None,
              ignore_index: int | None = None) -> np.ndarray:
    """Where the prediction is wrong, over a dimmed copy of the image (or black): magenta
    where a class (not background, id 0) was predicted that is not there — a false
    positive, wrong-class pixels included — and cyan where background was predicted over a
    true class — a false negative. Ignored pixels are grey."""
    base = (image_rgb * 0.35).astype(np.uint8) if image_rgb is not None else np.zeros((*target.shape, 3), np.uint8)
    wrong = predicted != target
    if ignore_index is not None:
        wrong &= target != ignore_index
        base[target == ignore_index] = IGNORED
    false_positive = wrong & (predicted != 0)
    false_negative = wrong & (predicted == 0)
    base[false_positive] = FALSE_POSITIVE
    base[false_negative] = FALSE_NEGATIVE
    return base
