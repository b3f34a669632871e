"""Decoding logits by task: softmax/arg-max, sigmoid/threshold, independent labels."""

import pytest
import torch

from unetkit.nn import UNetError, decode, probabilities


def test_multiclass_takes_the_argmax_and_probabilities_sum_to_one():
    logits = torch.randn(2, 4, 5, 6)
    assert torch.equal(decode(logits, "multiclass"), logits.argmax(1))
    p = probabilities(logits, "multiclass")
    assert torch.allclose(p.sum(1), torch.ones(2, 5, 6))


def test_binary_thresholds_the_sigmoid():
    logits = torch.tensor([[[[-3.0, -0.1, 0.1, 0.5]]]])
    assert decode(logits, "binary").tolist() == [[[0, 0, 1, 1]]]
    # sigmoid(0.5) = 0.622: below a 0.7 threshold, above 0.6
    assert decode(logits, "binary", threshold=0.7).tolist() == [[[0, 0, 0, 0]]]
    assert decode(logits, "binary", threshold=0.6).tolist() == [[[0, 0, 0, 1]]]


def test_multilabel_keeps_one_independent_plane_per_label():
    logits = torch.tensor([[[[2.0]], [[3.0]], [[-1.0]]]])
    assert decode(logits, "multilabel").flatten().tolist() == [1, 1, 0]
    p = probabilities(logits, "multilabel").flatten()
    assert torch.allclose(p, torch.sigmoid(torch.tensor([2.0, 3.0, -1.0])))


def test_mismatched_task_and_channels_are_refused():
    with pytest.raises(UNetError, match="num_classes=1"):
        decode(torch.randn(1, 3, 2, 2), "binary")
    with pytest.raises(UNetError, match="multiclass"):
        decode(torch.randn(1, 1, 2, 2), "multiclass")
    with pytest.raises(UNetError, match="threshold"):
        decode(torch.randn(1, 1, 2, 2), "binary", threshold=1.0)
