"""The training engine: one explicit loop, every setting from TrainConfig, nothing to subclass.

Reproducibility is designed in rather than hoped for: the sampler's order is a function of
(seed, epoch), each sample's augmentation of (seed, epoch, draw), and the only other random
draws (dropout, the DataLoader's worker seed) come from torch's global generator, whose state
is saved at the end of every epoch with the weights, optimizer, scheduler and scaler. So a run
killed at any moment and resumed from RUN_DIR/last retraces exactly the epochs it lost.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from unetkit import progress, runtime
from unetkit.atomic import atomic_write_text
from unetkit.errors import UnetkitError
from unetkit.infer.evaluate import Tally, rand_objects_for, score, summarize
from unetkit.infer.predictor import Predictor
from unetkit.model.device import (
    autocast,
    join_process_group,
    leave_process_group,
    pick_device,
    pick_precision,
)
from unetkit.model.record import InputRange, SavedModel
from unetkit.model.store import load, save_model
from unetkit.nn import UNet, UNetOptions, fused
from unetkit.plan.planner import VALIDATION_SHARE
from unetkit.plan.probe import make_adamw, training_layout, training_precision
from unetkit.train import run_folder, state
from unetkit.train.config import DEFAULT_LOSS, TrainConfig
from unetkit.train.losses import SegmentationLoss, unet_weight_map

OnEpoch = Callable[[Path], None]  # called with the run folder after each epoch's files are written
PLAN_FILE = "plan.json"
# At a time budget's deadline, a run within this share of its planned steps of the schedule's end
# finishes them (for at most this share of the budget in overtime): a busy machine's late seconds
# would otherwise cut the poly decay just before the learning rate reaches zero.
TAIL_SHARE = 0.02
# What the planner chooses (a flag the user gives for one of these wins over the plan).
PLANNED = ("depth", "patch_size", "batch_size", "precision", "base_channels", "channels_last", "steps_per_epoch",
           "epochs", "schedule", "warmup_steps", "optimizer", "lr", "flips", "augment", "class_weights")


@dataclass
class Run:
    """What a training run leaves behind, for the API user and the CLI summary."""

    out: Path
    best_metric: float | None
    best_epoch: int | None
    epochs_done: int
    stopped: str
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True  # False on the other processes of a distributed run
    epochs_planned: int = 0

    @property
    def best(self) -> Path:
        return self.out / "best"

    @property
    def last(self) -> Path:
        return self.out / "last"


def train(config: TrainConfig | dict[str, Any] | None = None, *, on_epoch: OnEpoch | None = None,
          **overrides: Any) -> Run:
    """Train a U-Net as `config` says (a TrainConfig, or a dict of its fields, plus overrides)."""
    if config is None or isinstance(config, dict):
        config = TrainConfig.from_dict({**(config or {}), **overrides})
    elif overrides:
        given = config.explicit() | set(overrides)
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
        config.given = frozenset(given)
    config.validate()
    return Trainer(config, on_epoch=on_epoch).fit()


class EpochSampler(Sampler[int]):
    """Draws for one epoch, a function of (seed, epoch) only; sharded by rank under DDP.
    `length` may exceed the data set (several shuffled passes) or fall short of it. Pass p
    yields `index + p * size`: the data set reads image `draw % size` and seeds its crop and
    augmentation with the whole draw, so an image drawn twice in an epoch is two samples."""

    def __init__(self, size: int, length: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.length, self.seed, self.rank, self.world = size, length, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        passes = math.ceil(self.length / self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) + p * self.size
                           for p in range(passes)])[: self.length]
        return iter(order[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


class _WithBorderWeights(torch.utils.data.Dataset):
    """Adds the U-Net paper's per-pixel weight map to each (augmented) training sample."""

    def __init__(self, dataset: Any, w0: float, sigma: float, ignore_index: int | None) -> None:
        self.dataset, self.w0, self.sigma, self.ignore_index = dataset, w0, sigma, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        weights = unet_weight_map(item["mask"].numpy(), self.w0, self.sigma, self.ignore_index)
        item["weight"] = torch.from_numpy(weights)
        return item


class Trainer:
    """Holds the pieces of one run; `fit` is the loop."""

    def __init__(self, config: TrainConfig, on_epoch: OnEpoch | None = None) -> None:
        runtime.configure()
        self.config = config
        self.on_epoch = on_epoch
        self.out = Path(config.out) if config.out else None
        self.rank, self.world, self._owns_group = join_process_group()
        self.is_main = self.rank == 0
        self.resume_from: Path | None = None

    def build_network(self, in_channels: int, num_outputs: int) -> torch.nn.Module:
        """The network to train: a U-Net of the config's options. (Benchmarks override this to
        train a peer network in the same loop; such a run writes no model folders.)"""
        return UNet(self.options)

    # --- set-up ------------------------------------------------------------------------

    def _on_rank0(self, make: Callable[[], Any]) -> Any:
        """`make()` run by rank 0 and its result (or its one-sentence error) given to every
        process: the others must not look for themselves, rank 0 may already have written."""
        result: Any = None
        if self.is_main:
            try:
                result = make()
            except UnetkitError as error:
                if self.world == 1:
                    raise
                result = _Refused(str(error))
        if self.world > 1:
            payload = [result]
            dist.broadcast_object_list(payload, src=0)
            result = payload[0]
        if isinstance(result, _Refused):
            raise UnetkitError(result.message)
        return result

    def _claim(self) -> None:
        """Rank 0 claims the run folder and tells the other processes what it decided."""
        claimed = self._on_rank0(lambda: run_folder.claim(self.config, True))
        self.config, self.resume_from = claimed.config, claimed.resume_from
        for note in claimed.notes:
            self._say(note)

    def _build(self) -> None:
        from unetkit.data.dataset import SegmentationDataset, checked_dataset
        from unetkit.data.io import set_max_pixels
        from unetkit.data.transforms import build_augmentation

        c = self.config
        self.device = pick_device(c.device)
        _seed_everything(c.seed)

        set_max_pixels(c.max_pixels)
        report = checked_dataset(c.data, val_fraction=c.val_fraction, seed=c.seed, task=c.task,
                                 include_alpha=c.include_alpha, ignore_nodata=c.ignore_nodata)
        self.spec, self.splits = report.spec, report.splits
        self.input_range = InputRange(report.input_dtype, _maybe_tuple(report.band_low), _maybe_tuple(report.band_high))
        if not self.splits.get("train"):
            raise UnetkitError(f"{c.data}: the training split is empty; add images or check splits/train.txt.")
        self.plan = self._plan(report) if c.minutes else None
        c = self.config
        spec = self.spec
        self.options = UNetOptions(in_channels=spec.in_channels, num_classes=spec.num_outputs, **c.model_options())
        batch = max(1, c.batch_size // self.world)  # each process's share
        # measured by rank 0 alone (processes timing at once on shared cores measure each other)
        if c.precision == "auto":
            self.precision, self.precision_reason = self._on_rank0(
                lambda: training_precision(self.options, c.patch_size, batch, self.device))
        else:
            self.precision = pick_precision(c.precision, self.device, training=True)
            self.precision_reason = self._why_set("precision")
        if c.channels_last is None:
            self.channels_last, self.layout_reason = self._on_rank0(
                lambda: training_layout(self.options, c.patch_size, batch, self.precision, self.device))
        else:
            self.channels_last, self.layout_reason = c.channels_last, self._why_set("channels_last")
        if c.class_weights is not None and len(c.class_weights) != spec.num_outputs:
            raise UnetkitError(
                f"--class_weights has {len(c.class_weights)} values but the data has {spec.num_outputs} "
                f"output classes ({', '.join(cl['name'] for cl in spec.classes)}): give one weight each."
            )
        if c.border_weights and spec.task != "binary":
            raise UnetkitError("--border_weights is for binary tasks (touching objects vs background).")
        patch = (c.patch_size, c.patch_size)
        augmentation = build_augmentation(patch, level=c.augment, ignore_index=spec.ignore_index, flips=c.flips)
        train_set = SegmentationDataset(
            c.data, self.splits["train"], spec, transform=augmentation, patch_size=patch, cache=c.cache, seed=c.seed,
            ignore_nodata=c.ignore_nodata,
        )
        if c.border_weights:
            train_set = _WithBorderWeights(train_set, c.border_w0, c.border_sigma, spec.ignore_index)
        self.train_set = train_set
        val_stems = self.splits.get("val") or []
        self.val_set = SegmentationDataset(c.data, val_stems[self.rank :: self.world], spec, cache=c.cache,
                                           ignore_nodata=c.ignore_nodata)

        if c.batch_size % self.world:
            raise UnetkitError(f"--batch_size {c.batch_size} must be a multiple of the {self.world} processes.")
        self.steps_per_epoch = c.steps_per_epoch or max(1, len(train_set) // c.batch_size)
        self.sampler = EpochSampler(len(train_set), self.steps_per_epoch * c.batch_size, c.seed, self.rank, self.world)
        workers = runtime.default_workers() if c.workers is None else c.workers
        runtime.share_with_loaders(workers)
        self.train_loader = DataLoader(
            train_set,
            batch_size=c.batch_size // self.world,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=workers > 0,
            worker_init_fn=runtime.loader_worker_init if workers > 0 else None,
        )
        self.workers = workers

        self.model = self.build_network(spec.in_channels, spec.num_outputs)
        self.saves_models = isinstance(self.model, UNet)
        if c.norm == "batch" and self.world > 1 and self.device.type == "cuda":
            # batch statistics over the global batch; on the CPU (gloo) torch has no SyncBatchNorm,
            # so each process normalises with its own share of the batch.
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_name = c.loss or DEFAULT_LOSS[spec.task]
        self.loss = SegmentationLoss(
            self.loss_name,
            spec.task,
            ignore_index=spec.ignore_index,
            class_weights=c.class_weights,
            label_smoothing=c.label_smoothing,
            focal_gamma=c.focal_gamma,
        ).to(self.device)
        params = self.model.parameters()
        if c.optimizer == "adamw":
            self.optimizer = make_adamw(params, c.learning_rate, c.weight_decay, self.device)
        else:
            self.optimizer = torch.optim.SGD(
                params, lr=c.learning_rate, momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay
            )
        self.budget = c.minutes * 60.0 if c.minutes else None
        self.total_steps = c.epochs * self.steps_per_epoch  # with a budget, re-estimated after every epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(c.schedule, c.warmup_steps, lambda: self.total_steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        # channels-last: the same network through the fused training path (nn/fused.py); NCHW: as written
        fast = self.saves_models and self.channels_last
        self.network: torch.nn.Module = fused.training_network(self.model) if fast else self.model
        if self.world > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if c.compile:
            self.network = torch.compile(self.network)

    def _plan(self, report: Any) -> Any:
        """With --minutes: the recipe for the budget, planned by rank 0 (once: a resumed run goes
        on with its plan.json), applied to every setting the user did not give."""
        from unetkit.plan.fingerprint import fingerprint
        from unetkit.plan.planner import Plan, make_plan
        from unetkit.plan.probe import sample_cost_of

        path = self.out / PLAN_FILE
        existed = path.is_file()

        def make() -> Plan:
            if existed:
                return Plan.from_dict(json.loads(path.read_text()))
            found = fingerprint(self.config.data, report, seed=self.config.seed, val_fraction=self.config.val_fraction)
            return make_plan(found, self.config.minutes, self.device, self._given(), self.config.optimizer,
                             sample_cost_of(self.config.data, report, self.config.ignore_nodata))

        plan = self._on_rank0(make)
        given = getattr(self.config, "given", frozenset())
        settings = {k: v for k, v in plan.settings.items() if k not in self._given()}
        self.config = dataclasses.replace(self.config, **settings).validate()
        self.config.given = frozenset(given)
        if self.is_main and not existed:
            atomic_write_text(path, json.dumps(plan.to_dict(), indent=2))
            self._say(plan.to_text())
        return plan

    def _why_set(self, setting: str) -> str:
        """Why a setting that was not measured in this process has its value: the plan's reason, or asked."""
        planned = next((ch.reason for ch in self.plan.choices if ch.setting == setting and not ch.given), None) \
            if self.plan is not None else None
        return f"planned: {planned}" if planned else "asked"

    def _given(self) -> dict[str, Any]:
        """The planned settings the user chose. A config read back from a run's config.yaml
        counts every setting as given, so there only those that differ from the defaults count."""
        c = self.config
        names = c.explicit() if not c.resume else {
            f.name for f in dataclasses.fields(c) if getattr(c, f.name) != f.default}
        return {name: getattr(c, name) for name in names if name in PLANNED}

    def record(self, epoch: int | None = None, metrics: dict[str, Any] | None = None) -> SavedModel:
        """The saved model's record: what prediction needs to read new images as training did."""
        c = self.config
        options = getattr(self.model, "options", None) or self.options
        scores = {k: v for k, v in metrics.items() if k != "per_image"} if metrics else None
        plan = self.plan.to_dict() if getattr(self, "plan", None) is not None else None
        return SavedModel(options=options, task=self.spec.task, threshold=c.threshold, data=self.spec,
                          input=self.input_range, patch_size=c.patch_size, seed=c.seed, val_fraction=c.val_fraction,
                          epoch=epoch, plan=plan, scores=scores,
                          source=str(self.out / "best") if self.out else "the model")

    # --- the loop --------------------------------------------------------------------------

    def fit(self) -> Run:
        """Train to the end (or the time limit / early stop); a process group this run opened is
        closed before returning, since gloo threads left to interpreter shutdown abort the process."""
        try:
            return self._fit()
        finally:
            leave_process_group(self._owns_group)

    def _fit(self) -> Run:
        self._claim()
        self._build()
        c = self.config
        start_epoch, best, best_epoch, history, stale = 0, None, None, [], 0
        step, spent = 0, 0.0
        if self.resume_from is not None:
            start_epoch, best, best_epoch, history, stale, step, spent = self._restore(self.resume_from)
        if self.is_main:
            self.resolved_config().write_yaml(self.out / run_folder.CONFIG_FILE)
        self._say(
            f"training a U-Net ({self.spec.task}, {self.spec.in_channels} band(s) -> {self.spec.num_outputs} "
            f"output(s)) on {len(self.splits['train'])} images, validating on {len(self.splits.get('val') or [])}; "
            f"{self.device.type} {self.precision} ({self.precision_reason}), "
            f"{'channels-last' if self.channels_last else 'NCHW'} ({self.layout_reason}), {self.steps_per_epoch} steps/epoch x "
            f"{self.epochs_planned()} epochs" + (f" in {c.minutes:g} minutes" if self.budget else "")
            + (f", resuming after epoch {start_epoch}" if start_epoch else "")
        )
        started = time.monotonic()
        self.deadline = started + (self.budget - spent) if self.budget else None
        self.last_check, self.check_seconds = started, []
        if self.budget:  # training seconds between validations, from the plan (then measured)
            e = self.plan.estimate
            self.check_interval = e["train_seconds"] / max(1, e["validations"])
        info = self._run_info(history)
        stopped = "completed" if step < self.total_steps else f"already trained for {start_epoch} epochs"
        epoch, trained_steps, trained_seconds = start_epoch, 0, 0.0
        while step < self.total_steps:
            limit = min(self.steps_per_epoch, self.total_steps - step)
            train_loss, images, seconds, out_of_time, steps = self._train_epoch(epoch, started, limit, step)
            step, trained_steps, trained_seconds = step + steps, trained_steps + steps, trained_seconds + seconds
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": train_loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "images_per_s": round(images / max(seconds, 1e-9), 3),
            }
            due = self._on_any_rank(self._check_due(epoch, time.monotonic()), by_clock=bool(self.budget))
            if self.budget and step < self.total_steps and not out_of_time:
                # before deciding to validate: when no more steps fit, this epoch is the last and
                # must be scored (the replan keeps that validation's cost in hand)
                self._replan(step, trained_steps, trained_seconds, started, spent, checking_now=due)
            check_started = time.monotonic()
            metrics = None
            last = step >= self.total_steps or out_of_time
            if last or due:
                metrics = self.validate()
                row.update(
                    val_loss=metrics["loss"], val_dice=metrics["headline"], val_iou=metrics["mean_iou_fg"],
                    val_pixel_accuracy=metrics["pixel_accuracy"], val_seconds=round(time.monotonic() - check_started, 3),
                )
            history.append(row)
            epoch += 1
            improved = metrics is not None and metrics["headline"] is not None and (
                best is None or metrics["headline"] > best
            )
            if improved:
                best, best_epoch, stale = metrics["headline"], epoch, 0
            elif metrics is not None:
                stale += 1
            if out_of_time:
                stopped = (f"time budget: --minutes {c.minutes:g} spent after {epoch} epochs" if self.budget else
                           f"time limit: --max_minutes {c.max_minutes} reached after {epoch} of {c.epochs} epochs")
            elif c.early_stopping and stale >= c.early_stopping:
                stopped = f"early stopping: {stale} validations without a better score (--early_stopping)"
            elif step >= self.total_steps and self.budget:
                stopped = f"completed: the {c.minutes:g}-minute plan's {step:,} steps"
            used = spent + time.monotonic() - started
            if self.is_main:
                run_folder.write_history(self.out, history)
                if self.saves_models and (metrics is not None or not self.budget):
                    record = self.record(epoch, metrics)
                    if improved:
                        save_model(self.out / "best", self.model, record)
                    resume = state.capture(epoch, best, best_epoch, stale, self.optimizer, self.scheduler,
                                           self.scaler, step=step, total_steps=self.total_steps,
                                           budget_spent=used)
                    save_model(self.out / "last", self.model, record, extra=state.writer(resume))
                info.update(epochs_done=epoch, epochs_planned=self.epochs_planned(), best_epoch=best_epoch,
                            best_metric=best, stopped=stopped, steps_done=step,
                            training_seconds=round(info["training_seconds"] + seconds, 3),
                            budget_seconds_spent=round(used, 1) if self.budget else None,
                            finished=_now() if step >= self.total_steps or stopped != "completed" else None)
                run_folder.write_run_info(self.out, info)
                if self.on_epoch is not None:
                    self.on_epoch(self.out)
            if metrics is not None:
                self.last_check = time.monotonic()
                self.check_seconds.append(self.last_check - check_started)
            self._say(_epoch_line(row, self.epochs_planned(), improved))
            if stopped != "completed" and not stopped.startswith("completed:"):
                break
        if self.world > 1:
            dist.barrier()
        self._say(f"stopped: {stopped}")
        return Run(self.out, best, best_epoch, epoch, stopped, history, self.is_main, self.epochs_planned())

    def epochs_planned(self) -> int:
        return max(1, math.ceil(self.total_steps / self.steps_per_epoch))

    def _check_due(self, epoch: int, now: float) -> bool:
        """Validate (and write the checkpoints) now? Every --val_every epochs; with a time budget,
        every `check_interval` seconds of training, so that checks stay about a tenth of it."""
        if not self.budget:
            return (epoch + 1) % self.config.val_every == 0
        return now - self.last_check >= self.check_interval

    def _out_of_time(self, now: float, started: float, step: int) -> bool:
        """Stop training after this step? --max_minutes is a hard limit; a --minutes deadline lets a
        run that is `TAIL_SHARE` of its steps from the schedule's end finish them."""
        c = self.config
        if c.max_minutes and now - started > c.max_minutes * 60:
            return True
        return self.deadline is not None and past_deadline(now, self.deadline, self.budget, step, self.total_steps)

    def _on_any_rank(self, flag: bool, by_clock: bool) -> bool:
        """True on every process when it is on one. A decision read from each process's own clock
        (`by_clock`: a validation due with a time budget, a stop at a deadline) must be agreed, or
        ranks that disagree pair a validation's collectives with a training step's, or one rank's
        next step waits on a rank that has left the loop (a hang)."""
        if self.world == 1 or not by_clock:
            return flag
        agreed = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return bool(agreed.item())

    def _check_cost(self) -> float:
        """Seconds of one validation with its checkpoints: measured (the first one, which builds
        the inference engine, left out once there are others), else the plan's estimate."""
        measured = self.check_seconds[1:] or self.check_seconds
        return float(np.median(measured)) if measured else self.plan.estimate["validation_seconds"]

    def _replan(self, step: int, trained_steps: int, trained_seconds: float, started: float, spent: float,
                checking_now: bool = False) -> None:
        """With a time budget: the steps that still fit it, from this run's measured rates (a step,
        a validation with its checkpoints), keeping the last validation's cost in hand (and the cost
        of the one about to run, `checking_now`); checks spaced so that they take about a tenth of
        what is left. The poly schedule follows the new total, so the learning rate reaches its end
        with the budget. A total equal to `step` makes this epoch the last."""
        per_step = trained_seconds / max(1, trained_steps)
        per_check = self._check_cost()
        remaining = self.budget - (spent + time.monotonic() - started) - per_check * (1 + checking_now)
        self.check_interval = max(self.check_interval, per_check / VALIDATION_SHARE)
        checks_left = remaining / (self.check_interval + per_check) if remaining > 0 else 0.0
        steps_left = (remaining - checks_left * per_check) / per_step if remaining > 0 else 0.0
        total = step + max(0, int(steps_left))
        if self.world > 1:  # every process must stop at the same step
            agreed = torch.tensor([total], dtype=torch.float64, device=self.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            total = int(agreed.item())
        self.total_steps = total

    def resolved_config(self) -> TrainConfig:
        """The config as this run uses it: task, loss, learning rate, workers, precision and layout decided,
        not None or auto (a resumed run goes on in the precision it began in, whatever a new probe says)."""
        c = self.config
        resolved = dataclasses.replace(c, task=self.spec.task, loss=self.loss_name, lr=c.learning_rate,
                                       workers=self.workers, precision=self.precision,
                                       channels_last=self.channels_last)
        resolved.given = getattr(c, "given", frozenset())
        return resolved

    def _run_info(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """run.json: what the report shows about the run besides its curves."""
        previous = run_folder.read_run_info(self.out) if self.resume_from is not None else {}
        return {
            "started": previous.get("started") or _now(),
            "finished": None,
            "device": self.device.type,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "processes": self.world,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "network": type(self.model).__name__,
            "epochs_planned": self.config.epochs,
            "epochs_done": len(history),
            "steps_per_epoch": self.steps_per_epoch,
            "best_epoch": None,
            "best_metric": None,
            "stopped": None,
            "training_seconds": float(sum(row.get("seconds") or 0 for row in history)),
            "torch": torch.__version__,
        }

    def _train_epoch(self, epoch: int, started: float, limit: int, first_step: int = 0
                     ) -> tuple[float, int, float, bool, int]:
        """Up to `limit` steps of epoch `epoch`, the run's steps from `first_step` on: (mean loss,
        images, seconds, out of time, steps)."""
        c = self.config
        self.network.train()
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        t0 = time.monotonic()
        total_loss, images, out_of_time, steps = 0.0, 0, False, 0
        bar = progress.bar(limit, f"epoch {epoch + 1}/{self.epochs_planned()}", "step",
                           enabled=c.progress and self.is_main and sys.stderr.isatty())
        for batch in self.train_loader:
            if steps >= limit:
                break
            x = batch["image"].to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["mask"].to(self.device, non_blocking=True)
            weights = batch.get("weight")
            if weights is not None:
                weights = weights.to(self.device)
            try:
                with autocast(self.device, self.precision):
                    logits = self.network(x)
                loss = self.loss(logits, y, weights)
                self.scaler.scale(loss).backward()
            except torch.OutOfMemoryError:
                raise UnetkitError(
                    f"out of memory at --batch_size {c.batch_size} and --patch_size {c.patch_size}: lower one of them."
                ) from None
            if not torch.isfinite(loss):
                raise UnetkitError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}: lower --lr (now {c.learning_rate}) "
                    "or set --grad_clip."
                )
            if c.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # Free the gradients now, not before the next backward pass: kept, they would sit
            # beside the next forward pass's stored activations (and through validation),
            # adding a whole fp32 copy of the parameters to the step's peak memory.
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            total_loss += loss.item() * x.shape[0]
            images += x.shape[0]
            steps += 1
            if bar is not None:
                elapsed = time.monotonic() - t0
                bar.set_postfix(loss=f"{total_loss / images:.4f}", img_s=f"{images * self.world / elapsed:.1f}")
                bar.update(1)
            if self._on_any_rank(self._out_of_time(time.monotonic(), started, first_step + steps),
                                 by_clock=bool(self.deadline or c.max_minutes)):
                out_of_time = True
                break
        if bar is not None:
            bar.close()
        sums = torch.tensor([total_loss, float(images)], dtype=torch.float64)
        if self.world > 1:  # on the process group's device: NCCL reduces CUDA tensors only
            sums = sums.to(self.device)
            dist.all_reduce(sums)
        return float(sums[0] / sums[1].clamp_min(1)), int(sums[1]), time.monotonic() - t0, out_of_time, steps

    def validate(self) -> dict[str, Any]:
        """Loss and scores over the whole validation split, of what `unetkit predict` would write
        with the current weights (same tiles, blending and decoding), in the precision the run
        trains in: recorded in config.yaml, so a resumed run scores its epochs as the whole run
        would (an inference probe per process could choose differently on a loaded machine)."""
        predictor = Predictor(self.model, meta=self.record(), device=str(self.device), precision=self.precision)
        objects = rand_objects_for("auto", predictor.record.class_names)
        tally = score(predictor, self._val_pairs(), loss=self.loss, rand_objects=objects)
        if self.world > 1:
            reduced = torch.from_numpy(tally.matrix.astype(np.float64)).to(self.device)
            sums = torch.tensor([tally.loss_sum, float(tally.images)], dtype=torch.float64, device=self.device)
            dist.all_reduce(reduced)
            dist.all_reduce(sums)
            tally = Tally(reduced.cpu().numpy().round().astype(np.int64), tally.rows, float(sums[0]), int(sums[1]))
        self.model.train()
        result = summarize(tally, predictor.record, split="val", threshold=predictor.threshold, rand_objects=objects)
        result["loss"] = tally.loss_sum / tally.images if tally.images else None
        return result

    def _val_pairs(self) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
        for index in range(len(self.val_set)):
            image, target, nodata = self.val_set.load_with_nodata(index)
            yield self.val_set.stems[index], image, target, nodata

    # --- state ------------------------------------------------------------------------------

    def _restore(self, folder: Path) -> tuple[int, float | None, int | None, list[dict[str, Any]], int, int, float]:
        saved = state.read(folder)
        model, meta = load(folder)
        before = meta.get("data") or {}
        if before.get("classes") != self.spec.to_dict()["classes"] or before.get("in_channels") != self.spec.in_channels:
            raise UnetkitError(
                f"{self.config.data}: its classes or bands differ from those {folder} was trained on; resume with "
                "the run's own data set, or train a new run in another --out."
            )
        try:
            self.model.load_state_dict(model.state_dict())
        except RuntimeError:
            raise state.unusable(folder / state.RESUME_FILE, "its weights do not fit the saved settings") from None
        state.restore(saved, folder / state.RESUME_FILE, self.optimizer, self.scheduler, self.scaler)
        epoch = int(saved["epoch"])
        history = run_folder.read_history(self.out, epoch)
        step = int(saved["step"]) if saved.get("step") is not None else epoch * self.steps_per_epoch
        spent = float(saved.get("budget_spent") or 0.0)
        if self.budget:  # what is left of the budget (which --minutes may have raised), at the rate measured so far
            trained = [row.get("seconds") or 0.0 for row in history]
            per_step = sum(trained) / step if step and sum(trained) else self.plan.estimate["step_seconds"]
            remaining = (self.budget - spent) * (1 - VALIDATION_SHARE)
            self.total_steps = step + max(0, int(remaining / per_step))
        if step >= self.total_steps:
            more = "raise --minutes" if self.budget else "raise --epochs"
            self._say(f"{self.out}: already trained for {epoch} epochs; {more} to train further.")
        return epoch, saved["best"], saved["best_epoch"], history, int(saved["stale"]), step, spent

    def _say(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)


@dataclass(frozen=True)
class _Refused:
    """A one-sentence refusal made on rank 0, sent to the other processes."""

    message: str


def past_deadline(now: float, deadline: float, budget: float, step: int, total: int) -> bool:
    """Has a time budget run out after `step` of `total` planned steps? At the deadline, unless the
    schedule's end is `TAIL_SHARE` of the steps away and the overtime under `TAIL_SHARE` of the budget."""
    if now <= deadline:
        return False
    near_end = total - step <= TAIL_SHARE * total
    return not (near_end and now - deadline <= TAIL_SHARE * budget)


def _schedule(kind: str, warmup: int, total: Callable[[], int]):
    """Learning-rate factor per step: linear warm-up, then poly (1 - t)^0.9, cosine or flat;
    `total()` is the planned number of steps, which a time budget may move as training goes."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total() - warmup))
        if kind == "poly":
            return (1 - t) ** 0.9
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return factor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _maybe_tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f}"]
    if row.get("val_loss") is not None:
        parts.append(f"val loss {row['val_loss']:.4f}")
    if row.get("val_dice") is not None:
        parts.append(f"val dice {row['val_dice']:.4f}")
    if row.get("val_iou") is not None:
        parts.append(f"iou {row['val_iou']:.4f}")
    parts += [f"lr {row['lr']:.2e}", f"{row['seconds']:.1f} s", f"{row['images_per_s']:.1f} img/s"]
    return "  ".join(parts) + ("  * best" if improved else "")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
