"""Pictures for the report: masks in class colours and error maps.

Everything returns (H, W, 3) uint8 RGB arrays, ready for PNG; none of it feeds training.
Images are shown with `unetkit.infer.outputs.display_rgb`, the same stretch as the
predictor's overlays.
"""

from __future__ import annotations

import numpy as np

FALSE_POSITIVE = (255, 0, 255)  # magenta: predicted, not true
FALSE_NEGATIVE = (0, 200, 255)  # cyan: true, missed
IGNORED = (90, 90, 90)


def colorize(mask: np.ndarray, colors: list[list[int]], ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class ids -> RGB with each class's colour; ignored pixels grey."""
    palette = np.zeros((max(len(colors), int(mask.max(initial=0)) + 1, 256), 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    if ignore_index is not None and ignore_index < len(palette):
        palette[ignore_index] = IGNORED
    return palette[mask.astype(np.int64)]


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
