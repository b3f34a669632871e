"""The public API, as `import unetkit` offers it: train, plan, evaluate, load, predict, Predictor.

It sits on top of the stages, like the CLI: training here also draws RUN_DIR/progress.png
after every epoch (drawing is report/'s job, so the trainer itself imports no plotting), and
`plan` joins the data check, the fingerprint and the planner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from unetkit.plan.planner import Plan
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


def plan(data: str | Path, minutes: float, *, device: str = "auto", **given: Any) -> Plan:
    """The recipe `unetkit train --data DATA --minutes N` would train with on this machine
    (`plan.to_text()`, `plan.to_dict()`); `given` are TrainConfig settings you fix yourself
    (they win over the plan)."""
    from unetkit import runtime
    from unetkit.data.dataset import checked_dataset
    from unetkit.model.device import pick_device
    from unetkit.plan.fingerprint import fingerprint
    from unetkit.plan.planner import make_plan
    from unetkit.plan.probe import sample_cost_of
    from unetkit.train.config import TrainConfig

    runtime.configure()
    config = TrainConfig.from_dict({"data": str(data), "minutes": minutes, **given}, source="plan()").validate()
    report = checked_dataset(data, val_fraction=config.val_fraction, seed=config.seed, task=config.task,
                             include_alpha=config.include_alpha, ignore_nodata=config.ignore_nodata)
    found = fingerprint(data, report, seed=config.seed, val_fraction=config.val_fraction)
    chosen = {k: getattr(config, k) for k in given}
    return make_plan(found, minutes, pick_device(device), chosen, config.optimizer,
                     sample_cost_of(data, report, config.ignore_nodata))
