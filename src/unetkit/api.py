"""The public API, as `import unetkit` offers it: train, evaluate, load, predict, Predictor.

It sits on top of the stages, like the CLI: training here also draws RUN_DIR/progress.png
after every epoch (drawing is report/'s job, so the trainer itself imports no plotting).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig
    from unetkit.train.trainer import Run


def train(config: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> Run:
    """Train a U-Net as `config` says (a TrainConfig, or a dict of its fields, plus overrides);
    see `unetkit train --help` for every setting. Returns the run's summary."""
    from unetkit import runtime
    from unetkit.report.plots import draw_progress
    from unetkit.train.trainer import train as train_run

    runtime.configure()
    return train_run(config, on_epoch=draw_progress, **overrides)
