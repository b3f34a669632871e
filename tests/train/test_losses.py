"""Losses: agreement with torch where torch has one, ignore_index everywhere, the Dice policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unetkit.errors import UnetkitError
from unetkit.train.losses import (
    SegmentationLoss,
    binary_cross_entropy,
    cross_entropy,
    focal,
    soft_dice_loss,
    unet_weight_map,
)


def test_cross_entropy_ignores_pixels_and_smooths_labels():
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, :] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255, label_smoothing=0.1)
    assert torch.allclose(cross_entropy(logits, target, 255, label_smoothing=0.1), expected)
    # with unit pixel weights the weighted path agrees
    weighted = cross_entropy(logits, target, 255, pixel_weights=torch.ones(2, 4, 5))
    assert torch.allclose(weighted, F.cross_entropy(logits, target, ignore_index=255))


def test_ignored_pixels_change_no_loss_term():
    """Whatever the logits at ignored pixels, every loss and its gradient there is 0."""
    target = torch.randint(0, 2, (1, 6, 6))
    target[0, :2] = 255
    for name, task, channels in [("ce+dice", "multiclass", 2), ("bce+dice", "binary", 1), ("focal", "binary", 1),
                                 ("focal+dice", "multiclass", 2)]:
        loss = SegmentationLoss(name, task, ignore_index=255)
        logits = torch.randn(1, channels, 6, 6, requires_grad=True)
        t = target if task == "multiclass" else target
        loss(logits, t).backward()
        assert torch.all(logits.grad[..., :2, :] == 0), name
        changed = logits.detach().clone()
        changed[..., :2, :] = 100.0
        assert torch.allclose(loss(changed, t), loss(logits.detach(), t)), name


def test_binary_cross_entropy_matches_torch_without_ignore():
    logits = torch.randn(2, 1, 5, 5)
    target = torch.randint(0, 2, (2, 5, 5))
    expected = F.binary_cross_entropy_with_logits(logits, target.unsqueeze(1).float())
    assert torch.allclose(binary_cross_entropy(logits, target), expected)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    assert torch.allclose(focal(logits, target, "multiclass", None, gamma=0.0), F.cross_entropy(logits, target))
    b_logits = torch.randn(2, 1, 3, 3)
    b_target = torch.randint(0, 2, (2, 3, 3))
    assert torch.allclose(focal(b_logits, b_target, "binary", None, gamma=0.0),
                          F.binary_cross_entropy_with_logits(b_logits, b_target.unsqueeze(1).float()))


def test_dice_is_zero_for_a_perfect_prediction_and_follows_the_absent_class_policy():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    perfect = torch.where(F.one_hot(target, 3).permute(0, 3, 1, 2).bool(), 50.0, -50.0)
    # class 2 is absent from the target and not predicted: its term is 1, so the loss is ~0
    assert soft_dice_loss(perfect, target, "multiclass").item() == pytest.approx(0.0, abs=1e-6)
    # predicting the absent class everywhere costs its term: 1 - mean(d1, 1/(1+64)) with d1 ~ 0
    wrong = perfect.clone()
    wrong[:, 2] = 100.0
    expected = 1 - (((2 * 0 + 1) / (0 + 16 + 1)) + 1 / (1 + 64)) / 2
    assert soft_dice_loss(wrong, target, "multiclass").item() == pytest.approx(expected, rel=1e-4)


def test_loss_and_task_must_agree():
    with pytest.raises(UnetkitError, match="multiclass"):
        SegmentationLoss("ce+dice", "binary")
    with pytest.raises(UnetkitError, match="bce"):
        SegmentationLoss("bce", "multiclass")


def test_multilabel_bce_dice_runs_on_label_planes():
    logits = torch.randn(2, 3, 6, 6, requires_grad=True)
    target = torch.randint(0, 2, (2, 3, 6, 6))
    loss = SegmentationLoss("bce+dice", "multilabel", ignore_index=255)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_unet_weight_map_peaks_in_the_gap_between_touching_objects():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 3:14] = 1
    mask[5:15, 16:27] = 1  # a 2-pixel gap at columns 14-15
    weights = unet_weight_map(mask, w0=10, sigma=5)
    gap = weights[10, 14]
    far = weights[0, 0]
    inside = weights[10, 8]
    assert gap > far + 5  # w0 * exp(-(1+2)^2/50) ~ 8.4 on top of w_c
    assert gap > inside
    fg = mask == 1
    # class balance: both classes weigh half in total (before the border term)
    assert weights[fg].sum() == pytest.approx(0.5 * mask.size, rel=1e-5)
