"""The report's plots, drawn from a run's files: training curves (progress.png) and the confusion matrix.

Each plot is made as PNG bytes (the report embeds them) and can be written as a file
(atomically, so a viewer never sees half a PNG).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from unetkit.atomic import atomic_write_bytes

LOG_SCALE_RATIO = 10.0  # a loss whose largest value is this many times its typical one reads better on a log axis


def draw_progress(run_dir: str | Path) -> Path:
    """RUN_DIR/progress.png from the run's metrics.csv and timing.csv (the trainer calls this
    after every epoch through its `on_epoch` hook; the report draws it again)."""
    from unetkit.train.run_folder import read_history, read_run_info

    run_dir = Path(run_dir)
    path = run_dir / "progress.png"
    atomic_write_bytes(path, progress_png(read_history(run_dir), read_run_info(run_dir).get("best_epoch")))
    return path


def progress_png(history: list[dict[str, Any]], best_epoch: int | None = None) -> bytes:
    """Loss (train and validation), validation Dice/IoU and the learning rate per epoch, with
    the best epoch marked; the loss axis turns logarithmic when the first epochs dwarf the rest."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_metric, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    _line(ax_loss, history, epochs, "train_loss", "train")
    _line(ax_loss, history, epochs, "val_loss", "validation")
    if loss_scale(history) == "log":
        ax_loss.set_yscale("log")
        ax_loss.set_title("loss (log scale)")
    else:
        ax_loss.set_title("loss")
    _line(ax_metric, history, epochs, "val_dice", "Dice")
    _line(ax_metric, history, epochs, "val_iou", "IoU")
    ax_metric.set_title("validation")
    ax_metric.set_ylim(0, 1)
    _line(ax_lr, history, epochs, "lr", "lr")
    ax_lr.set_title("learning rate")
    for ax in (ax_loss, ax_metric, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1,
                       label=f"best (epoch {best_epoch})" if ax is ax_metric else None)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _png(fig)


def loss_scale(history: list[dict[str, Any]]) -> str:
    """"log" when the largest loss is LOG_SCALE_RATIO times the median (a first epoch far above
    the rest would flatten every later one on a linear axis), else "linear"."""
    losses = sorted(row[k] for row in history for k in ("train_loss", "val_loss") if row.get(k))
    if losses and losses[0] > 0 and losses[-1] / losses[len(losses) // 2] >= LOG_SCALE_RATIO:
        return "log"
    return "linear"


def confusion_png(matrix: Any, names: list[str]) -> bytes:
    """Row-normalised confusion matrix (true class per row), with the raw counts printed."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 1.6 + 0.7 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rates[i, j]:.2f}\n{int(counts[i, j]):,}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("confusion (rows sum to 1)")
    return _png(fig)


def plot_confusion(matrix: Any, names: list[str], path: str | Path) -> None:
    atomic_write_bytes(path, confusion_png(matrix, names))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    _pyplot().close(fig)
    return buffer.getvalue()


def _line(ax: Any, history: list[dict[str, Any]], epochs: list[int], key: str, label: str) -> None:
    points = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=label)
