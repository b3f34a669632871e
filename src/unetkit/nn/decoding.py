"""Turn logits into probabilities and masks, by task.

The model always emits logits; the task decides the activation: softmax over classes for
"multiclass" (exactly one class per pixel), an independent sigmoid per channel for
"binary" (one channel: foreground) and "multilabel" (one channel per label, any number on).
"""

from __future__ import annotations

import torch

from unetkit.nn.options import UNetError

TASKS = ("binary", "multiclass", "multilabel")


def check_task(task: str, num_classes: int) -> None:
    """Refuse a task/channel pairing that would silently decode wrongly."""
    if task not in TASKS:
        raise UNetError(f"task={task!r} is not known: use 'binary', 'multiclass' or 'multilabel'.")
    if task == "binary" and num_classes != 1:
        raise UNetError(
            f"task='binary' needs num_classes=1 (one foreground logit), not {num_classes}: "
            "use task='multiclass' for mutually exclusive classes."
        )
    if task == "multiclass" and num_classes < 2:
        raise UNetError("task='multiclass' needs num_classes >= 2: use task='binary' for one foreground class.")


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """(N, C, H, W) logits -> (N, C, H, W) probabilities: softmax over C, or sigmoid per C."""
    check_task(task, logits.shape[1])
    if task == "multiclass":
        return torch.softmax(logits, dim=1)
    return torch.sigmoid(logits)


def decode(logits: torch.Tensor, task: str, threshold: float = 0.5) -> torch.Tensor:
    """Logits -> labels. multiclass: (N, H, W) class ids by arg-max. binary: (N, H, W) of
    0/1 where sigmoid > threshold. multilabel: (N, C, H, W) of 0/1, one plane per label."""
    check_task(task, logits.shape[1])
    if not 0.0 < threshold < 1.0:
        raise UNetError(f"threshold={threshold} must lie strictly between 0 and 1.")
    if task == "multiclass":
        return logits.argmax(dim=1)
    # sigmoid(z) > t  <=>  z > log(t / (1 - t)): no need to compute the sigmoid.
    on = logits > torch.logit(torch.tensor(threshold, dtype=torch.float64)).item()
    on = on.to(torch.uint8)
    return on[:, 0] if task == "binary" else on
