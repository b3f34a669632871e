"""Honest segmentation metrics: confusion counts accumulated over a whole split, then scores.

Averaging per-batch scores over-weights small batches and turns a class missing from one
batch into a fake 0 or 1; accumulating the confusion matrix and scoring once does not.
torchmetrics does the counting; the scores from the
matrix are a few lines here (counts are summed across processes by the caller, once per
split, not by torchmetrics per image). A class with no ground truth and no prediction anywhere is
reported as empty (None), never as 1 or 0, and left out of the means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torchmetrics.classification import MulticlassConfusionMatrix, MultilabelConfusionMatrix


class ConfusionCounter:
    """Accumulates pixel confusion counts for a task; `.matrix()` is (K, K) or (L, 2, 2)."""

    def __init__(self, task: str, num_classes: int, ignore_index: int | None, device: str | torch.device = "cpu"):
        self.task = task
        if task == "multilabel":
            self.metric = MultilabelConfusionMatrix(num_labels=num_classes, ignore_index=ignore_index,
                                                    sync_on_compute=False)
        else:  # binary counts as two classes: background and foreground
            classes = 2 if task == "binary" else num_classes
            self.metric = MulticlassConfusionMatrix(num_classes=classes, ignore_index=ignore_index,
                                                    sync_on_compute=False)
        self.metric.to(device)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """predicted: decoded labels, (N, H, W) ids or (N, L, H, W) 0/1; target alike."""
        self.metric.update(predicted.long(), target.long())

    def matrix(self) -> torch.Tensor:
        return self.metric.compute().cpu().to(torch.int64)

    def reset(self) -> None:
        self.metric.reset()


def scores(matrix: torch.Tensor | np.ndarray, class_names: list[str], task: str) -> dict[str, Any]:
    """Per-class IoU, Dice, precision, recall and support; pixel accuracy; their means with
    and without background (class 0, for binary and multiclass). `headline` is the number
    training selects on: foreground Dice (binary), mean Dice without background
    (multiclass), mean Dice over labels (multilabel)."""
    m = np.asarray(matrix, dtype=np.float64)
    if task == "multilabel":
        tn, fp, fn, tp = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
        accuracy = _ratio((tp + tn).sum(), m.sum())
    else:
        tp = np.diag(m)
        fp = m.sum(0) - tp
        fn = m.sum(1) - tp
        accuracy = _ratio(tp.sum(), m.sum())
    per_class = []
    for k, name in enumerate(class_names):
        empty = tp[k] + fp[k] + fn[k] == 0
        per_class.append(
            {
                "id": k,
                "name": name,
                "iou": None if empty else _ratio(tp[k], tp[k] + fp[k] + fn[k]),
                "dice": None if empty else _ratio(2 * tp[k], 2 * tp[k] + fp[k] + fn[k]),
                "precision": _ratio(tp[k], tp[k] + fp[k]),
                "recall": _ratio(tp[k], tp[k] + fn[k]),
                "support": int(tp[k] + fn[k]),
                "predicted": int(tp[k] + fp[k]),
            }
        )
    foreground = per_class if task == "multilabel" else per_class[1:]
    result = {
        "pixel_accuracy": accuracy,
        "pixel_error": None if accuracy is None else 1.0 - accuracy,
        "mean_iou": _mean(c["iou"] for c in per_class),
        "mean_dice": _mean(c["dice"] for c in per_class),
        "mean_iou_fg": _mean(c["iou"] for c in foreground),
        "mean_dice_fg": _mean(c["dice"] for c in foreground),
        "per_class": per_class,
    }
    result["headline"] = result["mean_dice_fg"]
    return result


def adapted_rand_error(
    predicted: np.ndarray, target: np.ndarray, objects: str = "foreground", ignore_index: int | None = None
) -> float | None:
    """The ISBI 2012 challenge's adapted Rand error (1 - F-score of the Rand index over
    object pairs) between the connected components of two binary masks. objects="foreground"
    scores the class-1 regions (cells); "background" the class-0 regions that class 1
    separates (cells between membranes, as in ISBI 2012). Ground-truth pixels outside the
    objects (label 0 after labelling) are ignored, as the challenge does."""
    from skimage.metrics import adapted_rand_error as skimage_are

    want = 1 if objects == "foreground" else 0
    true_regions = target == want
    if ignore_index is not None:
        true_regions &= target != ignore_index
    if not true_regions.any():
        return None
    true_labels, _ = ndimage.label(true_regions)
    test_labels, _ = ndimage.label(predicted == want)
    error, _, _ = skimage_are(true_labels, test_labels)
    return float(error)


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else float(a / b)


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None
