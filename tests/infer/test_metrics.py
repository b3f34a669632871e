"""Metrics from accumulated confusion counts, checked against a matrix computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit.infer.metrics import ConfusionCounter, adapted_rand_error, scores


def test_confusion_counts_match_a_hand_count_and_skip_ignored_pixels():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    predicted = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 1]]])
    counter = ConfusionCounter("multiclass", 3, ignore_index=255)
    counter.update(predicted[:, :, :2], target[:, :, :2])  # accumulate over two updates
    counter.update(predicted[:, :, 2:], target[:, :, 2:])
    # rows = true class, cols = predicted; the 255 pixel is left out
    expected = np.array([[1, 1, 0], [0, 3, 0], [1, 0, 1]])
    assert counter.matrix().numpy().tolist() == expected.tolist()


def test_scores_from_a_known_matrix():
    m = np.array([[50, 10, 0], [10, 30, 0], [0, 0, 0]])
    s = scores(m, ["background", "a", "b"], "multiclass")
    a = s["per_class"][1]
    assert a["iou"] == pytest.approx(30 / (30 + 10 + 10))
    assert a["dice"] == pytest.approx(60 / (60 + 10 + 10))
    assert a["precision"] == pytest.approx(30 / 40) and a["recall"] == pytest.approx(30 / 40)
    assert s["per_class"][2]["iou"] is None and s["per_class"][2]["dice"] is None  # empty, not 0 or 1
    assert s["pixel_accuracy"] == pytest.approx(80 / 100)
    assert s["mean_dice_fg"] == pytest.approx(a["dice"])  # the empty class is left out of the mean
    assert s["mean_iou"] == pytest.approx(np.mean([50 / 70, 30 / 50]))
    assert s["headline"] == s["mean_dice_fg"]


def test_class_with_predictions_but_no_truth_scores_zero_not_empty():
    m = np.array([[8, 2], [0, 0]])
    s = scores(m, ["bg", "fg"], "binary")
    assert s["per_class"][1]["dice"] == 0.0
    assert s["per_class"][1]["recall"] is None


def test_multilabel_counts_each_label_independently():
    target = torch.tensor([[[[1, 0]], [[1, 1]]]])  # (N=1, L=2, H=1, W=2)
    predicted = torch.tensor([[[[1, 1]], [[0, 1]]]])
    counter = ConfusionCounter("multilabel", 2, ignore_index=None)
    counter.update(predicted, target)
    s = scores(counter.matrix(), ["a", "b"], "multilabel")
    assert s["per_class"][0]["dice"] == pytest.approx(2 / 3)
    assert s["per_class"][1]["dice"] == pytest.approx(2 / 3)


def test_adapted_rand_error_is_zero_for_identical_objects_and_grows_with_merges():
    truth = np.zeros((10, 10), np.uint8)
    truth[1:4, 1:9] = 1
    truth[6:9, 1:9] = 1
    assert adapted_rand_error(truth, truth) == pytest.approx(0.0)
    merged = truth.copy()
    merged[4:6, 4] = 1  # a bridge joins the two objects
    assert adapted_rand_error(merged, truth) > 0.2
