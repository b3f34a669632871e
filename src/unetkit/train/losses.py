"""Losses for every task, all honouring ignore_index.

Shapes: logits (N, C, H, W). Targets: (N, H, W) class ids for binary/multiclass (binary: 0/1,
C = 1) and (N, L, H, W) of 0/1 for multilabel; pixels equal to ignore_index count nowhere.

Soft Dice policy for classes absent from a batch: Dice is computed per class over the whole
batch (all images' pixels pooled, as nnU-Net's batch Dice) with a smoothing of 1 in numerator
and denominator. A class absent from the batch's ground truth therefore scores 1 / (1 + sum of
its predicted probability): perfect when nothing is predicted, and pushed down by false
positives, instead of being dropped or counted as a hard 0. Multiclass Dice leaves out the
background (class 0), which would otherwise dominate; binary uses the foreground channel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from unetkit.errors import UnetkitError

DEFAULT_LOSS = {"binary": "bce+dice", "multiclass": "ce+dice", "multilabel": "bce+dice"}


class SegmentationLoss(torch.nn.Module):
    """The sum of the named terms, e.g. "ce+dice"; `weights` is an optional per-pixel map."""

    def __init__(
        self,
        name: str,
        task: str,
        ignore_index: int | None = None,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.terms = name.split("+")
        self.task = task
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        multiclass_only = {"ce"} & set(self.terms)
        if task != "multiclass" and multiclass_only:
            raise UnetkitError(f"--loss {name} needs --task multiclass; for {task} use bce, bce+dice or focal.")
        if task == "multiclass" and "bce" in self.terms:
            raise UnetkitError(f"--loss {name}: bce is for binary/multilabel; for multiclass use ce or ce+dice.")
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, pixel_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = logits.float()
        total = logits.new_zeros(())
        for term in self.terms:
            if term == "ce":
                total = total + cross_entropy(
                    logits, target, self.ignore_index, self.class_weights, self.label_smoothing, pixel_weights
                )
            elif term == "bce":
                total = total + binary_cross_entropy(logits, target, self.ignore_index, pixel_weights)
            elif term == "focal":
                total = total + focal(logits, target, self.task, self.ignore_index, self.focal_gamma)
            elif term == "dice":
                total = total + soft_dice_loss(logits, target, self.task, self.ignore_index)
        return total


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log softmax(z)_y averaged over the pixels that are not ignored (weighted if asked)."""
    ignore = -100 if ignore_index is None else ignore_index
    if pixel_weights is None:
        return F.cross_entropy(
            logits, target, weight=class_weights, ignore_index=ignore, label_smoothing=label_smoothing
        )
    per_pixel = F.cross_entropy(
        logits, target, weight=class_weights, ignore_index=ignore, label_smoothing=label_smoothing, reduction="none"
    )
    valid = (target != ignore).float()
    return (per_pixel * pixel_weights * valid).sum() / valid.sum().clamp_min(1)


def binary_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None, pixel_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sigmoid BCE per channel, averaged over pixels that are not ignored."""
    target = _channel_target(target, logits)
    valid = _valid(target, ignore_index)
    per_pixel = F.binary_cross_entropy_with_logits(logits, (target * valid).float(), reduction="none")
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights.unsqueeze(1)
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1)


def focal(
    logits: torch.Tensor, target: torch.Tensor, task: str, ignore_index: int | None = None, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): -(1 - p_t)^gamma log p_t, easy pixels down-weighted."""
    if task == "multiclass":
        ignore = -100 if ignore_index is None else ignore_index
        valid = target != ignore
        log_p = F.log_softmax(logits, dim=1).gather(1, target.clamp_min(0).where(valid, 0).unsqueeze(1)).squeeze(1)
        loss = -((1 - log_p.exp()) ** gamma) * log_p
        return (loss * valid).sum() / valid.sum().clamp_min(1)
    target = _channel_target(target, logits)
    valid = _valid(target, ignore_index)
    t = (target * valid).float()
    log_p = -F.binary_cross_entropy_with_logits(logits, t, reduction="none")  # log p_t
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    return (loss * valid).sum() / valid.sum().clamp_min(1)


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, task: str, ignore_index: int | None = None, smooth: float = 1.0
) -> torch.Tensor:
    """1 - mean over classes of (2 sum p*y + s) / (sum p + sum y + s), pooled over the batch."""
    if task == "multiclass":
        ignore = -100 if ignore_index is None else ignore_index
        valid = (target != ignore).unsqueeze(1)
        probs = torch.softmax(logits, dim=1)[:, 1:]  # background left out
        onehot = F.one_hot(target.where(valid.squeeze(1), 0), logits.shape[1]).permute(0, 3, 1, 2)[:, 1:]
    else:
        target = _channel_target(target, logits)
        valid = _valid(target, ignore_index)
        probs = torch.sigmoid(logits)
        onehot = target * valid
    probs = probs * valid
    onehot = onehot.to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    dice = (2 * intersection + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    return 1 - dice.mean()


def _channel_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Binary targets come as (N, H, W); give them the channel axis the logits have."""
    return target.unsqueeze(1) if target.dim() == logits.dim() - 1 else target


def _valid(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def unet_weight_map(
    mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0, ignore_index: int | None = None
) -> np.ndarray:
    """The U-Net paper's weight map for touching objects (Ronneberger et al. 2015, eq. 2):
    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)) on background pixels, with
    d1, d2 the distances to the nearest and second-nearest object and w_c balancing the
    class frequencies, so the thin gaps between touching cells weigh most."""
    valid = mask != ignore_index if ignore_index is not None else np.ones(mask.shape, bool)
    foreground = (mask == 1) & valid
    weights = np.ones(mask.shape, np.float32)
    n_fg, n_bg = foreground.sum(), (~foreground & valid).sum()
    if n_fg and n_bg:  # w_c: each class weighs as much as the other in total
        weights[foreground] = 0.5 * valid.sum() / n_fg
        weights[~foreground & valid] = 0.5 * valid.sum() / n_bg
    labels, count = ndimage.label(foreground)
    if count >= 2:
        distances = np.stack([ndimage.distance_transform_edt(labels != i) for i in range(1, count + 1)])
        nearest_two = np.partition(distances, 1, axis=0)[:2]
        border = w0 * np.exp(-((nearest_two[0] + nearest_two[1]) ** 2) / (2 * sigma**2))
        weights += np.where(foreground, 0.0, border).astype(np.float32)
    weights[~valid] = 0.0
    return weights
