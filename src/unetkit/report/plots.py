"""progress.png: the training curves a person checks first (loss, validation metric, lr)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def draw_progress(run_dir: str | Path) -> Path:
    """RUN_DIR/progress.png from the run's metrics.csv and timing.csv (the trainer calls this
    after every epoch through its `on_epoch` hook; `unetkit report` draws it again)."""
    from unetkit.train.run_folder import read_history

    path = Path(run_dir) / "progress.png"
    plot_progress(read_history(Path(run_dir)), path)
    return path


def plot_progress(history: list[dict[str, Any]], path: str | Path) -> None:
    """Draw loss (train and val), validation Dice/IoU and the learning rate per epoch;
    written atomically so a viewer never sees half a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from unetkit.train.checkpoint import atomic_write_bytes

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_metric, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    _line(ax_loss, history, epochs, "train_loss", "train")
    _line(ax_loss, history, epochs, "val_loss", "validation")
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
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _line(ax: Any, history: list[dict[str, Any]], epochs: list[int], key: str, label: str) -> None:
    points = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=label)


def plot_confusion(matrix: Any, names: list[str], path: str | Path) -> None:
    """Row-normalised confusion matrix (true class per row), with the raw counts printed."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from unetkit.train.checkpoint import atomic_write_bytes

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
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
