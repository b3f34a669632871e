"""Accuracy in a fixed wall-clock budget: unetkit (its defaults) against MONAI's BasicUNet on ISBI 2012.

    .venv/bin/python benchmarks/accuracy.py                 # both checks: quality, then 20 minutes per network
    .venv/bin/python benchmarks/accuracy.py --minutes 5     # a shorter budget
    .venv/bin/python benchmarks/accuracy.py --only-quality  # the bf16-vs-fp32 training check alone

Both networks train in the same loop (unetkit's Trainer: same data, augmentation, loss,
optimizer, schedule, precision, channels-last; BasicUNet through a Trainer subclass whose
`build_network` returns it, a run that writes no model folders) for the same wall-clock
budget, one after the other. The trainer's poly learning-rate schedule needs an end, so a
short pilot run (not counted) measures each network's seconds per epoch and the epoch count
is set to fill the budget; `max_minutes` stops a run that would overshoot. Each network is
then scored, with its final weights, on splits/val.txt through unetkit's Predictor (whole
512 x 512 slices: one tile each; the trainer's precision): membrane Dice and IoU, pixel
error, and the ISBI 2012 challenge's adapted Rand error of the regions between membranes.
Skips with a message when the data set is absent.

Then the quality check (`--only-quality` runs it alone, `--no-quality` skips it): the speed
issue's check that bf16 training keeps validation Dice within 0.01 of fp32 training. On a
generated `cells` set, the same training run (fixed epochs, same seed) with unetkit's
defaults (precision auto: the trainer's probe picks bf16 where it pays) and with
`precision="fp32"` forced (everything else default); and with `precision="bf16"` forced
when the defaults did not pick bf16, so that bf16 training is always compared. Each run's
final validation Dice, and how many validation pixels the masks of the defaults-trained
model, predicted the default way (the predictor's engine at precision auto), share with the
same model's fp32 masks from the network as written (TorchEngine fast=False).

Writes benchmarks/results/accuracy-<date>.json (and quality-<date>.json) and the accuracy (and
quality) sections of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "isbi2012"
MONAI_FEATURES = (64, 128, 256, 512, 1024, 64)


def basic_unet(in_channels: int, num_outputs: int) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_outputs, features=MONAI_FEATURES,
                     norm="batch", act="relu")


NETWORKS = {"unetkit": None, "basicunet": basic_unet}  # name: the peer's network builder (None: unetkit's own)


def trainer_class(name: str) -> type:
    """unetkit's Trainer, or a subclass of it that trains the peer network in the same loop."""
    from unetkit.train.trainer import Trainer

    build = NETWORKS[name]
    if build is None:
        return Trainer

    class PeerTrainer(Trainer):
        """unetkit's training loop with another network (such a run writes no model folders;
        validation still runs through the Predictor with the trainer's record)."""

        def build_network(self, in_channels: int, num_outputs: int) -> torch.nn.Module:
            return build(in_channels, num_outputs)

    PeerTrainer.__name__ = PeerTrainer.__qualname__ = f"{name}Trainer"
    return PeerTrainer


def train(name: str, data: Path, minutes: float, options: dict[str, Any], folder: Path,
          pilot_epochs: int = 3) -> dict[str, Any]:
    """Pilot, then the budgeted run; returns the trained Trainer's scores and counts."""
    from unetkit.train.config import TrainConfig

    cls = trainer_class(name)
    base = {"data": str(data), "progress": False, "overwrite": True, **options}
    pilot = cls(TrainConfig.from_dict({**base, "out": str(folder / f"{name}-pilot"), "epochs": pilot_epochs}))
    start = time.monotonic()
    pilot.fit()
    per_epoch = (time.monotonic() - start) / pilot_epochs  # includes validation and checkpoints
    epochs = max(1, math.floor(minutes * 60 / per_epoch))
    config = TrainConfig.from_dict({**base, "out": str(folder / name), "epochs": epochs, "max_minutes": minutes})
    trainer = cls(config)
    start = time.monotonic()
    run = trainer.fit()
    seconds = time.monotonic() - start
    images = sum(round(row["images_per_s"] * row["seconds"]) for row in run.history)
    result = {
        "network": name, "epochs_planned": epochs, "epochs_done": run.epochs_done, "stopped": run.stopped,
        "train_seconds": seconds, "images_seen": images, "pilot_seconds_per_epoch": per_epoch,
        "precision": trainer.precision, "precision_reason": trainer.precision_reason,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "config": {k: v for k, v in config.to_dict().items() if k in options or k in ("epochs", "max_minutes")},
    }
    result.update(score(trainer))
    return result


def score(trainer: Any) -> dict[str, Any]:
    """Final weights on the validation split, through unetkit's Predictor with the trainer's
    record (whole slices: one tile of 512; the trainer's precision): membrane Dice/IoU, pixel
    error, adapted Rand error of the regions between membranes."""
    from unetkit.infer.evaluate import rand_objects_for, summarize
    from unetkit.infer.evaluate import score as score_pairs
    from unetkit.infer.predictor import Predictor

    record = trainer.record()
    side = max(max(trainer.val_set.load(i)[0].shape[:2]) for i in range(len(trainer.val_set)))
    multiple = record.multiple  # the tile side the network takes: a multiple of 2**depth
    predictor = Predictor(trainer.model, meta=record, device="cpu", precision=trainer.precision,
                          tile=-(-side // multiple) * multiple)
    objects = rand_objects_for("auto", record.class_names)
    pairs = ((trainer.val_set.stems[i], *trainer.val_set.load_with_nodata(i)) for i in range(len(trainer.val_set)))
    summary = summarize(score_pairs(predictor, pairs, rand_objects=objects), record, split="val",
                        threshold=predictor.threshold, rand_objects=objects)
    trainer.model.train()
    membrane = next(c for c in summary["per_class"] if c["name"] == "membrane")
    return {
        "membrane_dice": membrane["dice"], "membrane_iou": membrane["iou"],
        "pixel_error": summary["pixel_error"], "adapted_rand_error": summary.get("adapted_rand_error"),
        "rand_objects": objects, "val_images": len(trainer.val_set), "tile": predictor.tile,
        "inference_precision": predictor.engine.precision,
    }


def _f4(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['date']} with `{result['command']}`: a budget of {result['minutes']:g} minutes of "
        f"training per network (validation and checkpoints inside it), on {result['machine']} "
        f"(load average {result['load_before']:.2f} before, {result['load_after']:.2f} after, this benchmark's "
        "own training included).",
        "",
        f"Data: ISBI 2012 ({result['data']}), 24 training slices, scored on the 6 of splits/val.txt with the "
        "final weights through unetkit's Predictor (whole 512 x 512 slices, one tile each, in the precision the "
        "run trained in). Same loop for both: unetkit's Trainer at its defaults "
        f"({result['defaults']}; BasicUNet through a Trainer subclass whose build_network returns it, so it "
        "trains in the precision the probe picks for unetkit's default network); the epoch count fills the "
        "budget (from a pilot run) so that the poly schedule ends with it.",
        "",
        "| network | parameters | precision | images seen | epochs | membrane Dice | membrane IoU | pixel error "
        "| adapted Rand error |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"unetkit": "unetkit UNet (defaults)", "basicunet": f"MONAI BasicUNet{MONAI_FEATURES}, batch norm, ReLU"}
    for r in result["runs"]:
        lines.append(
            f"| {labels[r['network']]} | {r['parameters'] / 1e6:.1f} M | {r.get('precision', '')} | "
            f"{r['images_seen']} | {r['epochs_done']} | {_f4(r['membrane_dice'])} | {_f4(r['membrane_iou'])} | "
            f"{_f4(r['pixel_error'])} | {_f4(r['adapted_rand_error'])} |")
    lines += ["", "Lower is better for pixel error and adapted Rand error. Adjacent ISBI slices are strongly "
              "correlated, so these validation scores are optimistic against the challenge's hidden test stack."]
    return "\n".join(lines)


QUALITY_MODES = {  # mode: TrainConfig precision (everything else at the trainer's defaults)
    "defaults": "auto",  # the trainer's probe picks: bf16 where a training step measures >= 1.15x faster
    "fp32": "fp32",
    "bf16": "bf16",  # run only when the defaults did not pick bf16
}
QUALITY_TARGET = 0.01  # the speed issue: bf16 training keeps validation Dice within 0.01 of fp32


def quality_worker(mode: str, data: Path, out: Path, epochs: int) -> int:
    """Train on `data` as `mode` says; save the final weights and the last validation scores."""
    from unetkit.train.config import TrainConfig
    from unetkit.train.trainer import Trainer

    config = TrainConfig.from_dict({"data": str(data), "out": str(out / mode), "epochs": epochs, "progress": False,
                                    "precision": QUALITY_MODES[mode], "overwrite": True})
    trainer = Trainer(config)
    start = time.monotonic()
    run = trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"{mode}.pt")
    last = run.history[-1]
    (out / f"{mode}.json").write_text(json.dumps({
        "mode": mode, "precision": trainer.precision, "precision_reason": trainer.precision_reason,
        "epochs": epochs, "val_dice": last["val_dice"], "best_val_dice": run.best_metric,
        "seconds": time.monotonic() - start, "config": trainer.model.config,
    }))
    return 0


def quality(epochs: int) -> dict[str, Any]:
    """Train the default way and in fp32 (and in bf16 if the default is not bf16) on generated
    cells; compare validation Dice and predicted masks."""
    from unetkit.data.synth import write_dataset
    from unetkit.infer.engines import TorchEngine
    from unetkit.nn import UNet, decode

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_dataset("cells", root / "cells", count=120, size=128, seed=0)
        runs = {}
        for mode in QUALITY_MODES:
            if mode == "bf16" and runs["defaults"]["precision"] == "bf16":
                continue  # the defaults already trained in bf16
            print(f"quality: training {mode} ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, __file__, "--quality-worker", mode, "--quality-data", str(root / "cells"),
                            "--quality-out", str(root), "--quality-epochs", str(epochs)], check=True)
            runs[mode] = json.loads((root / f"{mode}.json").read_text())
        # masks of the defaults-trained model: the predictor's engine at precision auto (and in
        # bf16) against the network as written in fp32, on the validation split
        from unetkit.data import SegmentationDataset, inspect_dataset

        spec, splits = inspect_dataset(str(root / "cells"), val_fraction=0.2, seed=0)
        val = SegmentationDataset(str(root / "cells"), splits["val"], spec)
        model = UNet(**runs["defaults"]["config"])
        model.load_state_dict(torch.load(root / "defaults.pt"))
        model = model.to(memory_format=torch.channels_last).eval()
        reference = TorchEngine(model, "cpu", "fp32", fast=False)
        agree = {}
        for name, engine in (("defaults", TorchEngine(model, "cpu", "auto")), ("bf16", TorchEngine(model, "cpu", "bf16"))):
            same = total = 0
            for i in range(len(val)):
                x = val[i]["image"][None]
                fast = decode(engine(x), spec.task)
                plain = decode(reference(x), spec.task)
                same += int((fast == plain).sum())
                total += plain.numel()
            agree[name] = {"precision": engine.precision, "fused_engine": engine.fast, "agreement": same / total,
                           "pixels": total}
    bf16_run = "defaults" if runs["defaults"]["precision"] == "bf16" else "bf16"
    gap = abs(runs[bf16_run]["val_dice"] - runs["fp32"]["val_dice"])
    return {"epochs": epochs, "runs": runs, "mask_agreement_with_fp32_as_written": agree,
            "data": "cells, 120 x 128^2", "bf16_run": bf16_run, "bf16_vs_fp32_dice_gap": gap,
            "defaults_vs_fp32_dice_gap": abs(runs["defaults"]["val_dice"] - runs["fp32"]["val_dice"]),
            "target": QUALITY_TARGET, "met": gap <= QUALITY_TARGET}


def quality_markdown(q: dict[str, Any]) -> str:
    r = q["runs"]
    lines = [
        f"Generated `cells` set ({q['data']}, 96 train / 24 val), trainer defaults, {q['epochs']} epochs, same "
        "seed, one run per precision: `defaults` (precision auto: the trainer's probe picks bf16 where a training "
        "step measures at least 1.15x faster) and `fp32` forced (and `bf16` forced when the defaults did not pick "
        "it). Final validation Dice of each run and, for the defaults-trained model, the share of validation pixels "
        "whose predicted class equals its fp32 prediction by the network as written (no fused engine). Command: "
        f"`.venv/bin/python benchmarks/accuracy.py --only-quality --quality-epochs {q['epochs']}`.",
        "",
        "| run | precision | final val Dice | best val Dice | seconds |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, run in r.items():
        lines.append(f"| {mode} | {run['precision']} | {run['val_dice']:.4f} | {run['best_val_dice']:.4f} | "
                     f"{run['seconds']:.0f} |")
    a = q["mask_agreement_with_fp32_as_written"]
    lines += ["", "Masks of the defaults-trained model against its fp32 masks from the network as written: "
              + "; ".join(f"{k} inference ({v['precision']}{', fused engine' if v.get('fused_engine') else ''}) "
                          f"{v['agreement']:.4%} of {v['pixels']} pixels" for k, v in a.items()) + "."]
    lines += [f"bf16 training (`{q['bf16_run']}`) vs fp32 training: Dice gap {q['bf16_vs_fp32_dice_gap']:.4f} "
              f"(target <= {q['target']}: {'met' if q['met'] else '**not met**'}); defaults vs fp32: "
              f"{q['defaults_vs_fp32_dice_gap']:.4f}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per network")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig fields to change for both networks (e.g. batch_size=4)")
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality check on generated cells")
    parser.add_argument("--only-quality", action="store_true",
                        help="run only the quality check: bf16 (the default where it pays) vs fp32 training, "
                             "validation Dice within 0.01")
    parser.add_argument("--quality-epochs", type=int, default=15, help="epochs of each quality run")
    parser.add_argument("--pilot-epochs", type=int, default=3, help="epochs of the pilot that sizes each ISBI run")
    parser.add_argument("--quality-worker", help=argparse.SUPPRESS)
    parser.add_argument("--quality-data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quality-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-isbi", action="store_true", help="skip the ISBI 2012 comparison")
    args = parser.parse_args()
    from unetkit import runtime

    runtime.configure()  # as the CLI does, at the start of every process
    if args.quality_worker:
        return quality_worker(args.quality_worker, args.quality_data, args.quality_out, args.quality_epochs)
    if args.only_quality and args.no_quality:
        parser.error("--only-quality and --no-quality exclude each other")
    from speed import machine, update_markdown  # beside this file

    if not args.no_quality:
        q = quality(args.quality_epochs)
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / f"quality-{dt.date.today().isoformat()}.json").write_text(json.dumps(q, indent=1))
        text = quality_markdown(q)
        print(text)
        if not args.no_markdown:
            update_markdown("quality", text)
    if args.no_isbi or args.only_quality:
        return 0
    if not (args.data / "images").is_dir():
        print(f"accuracy benchmark skipped: no ISBI 2012 data at {args.data} (images/, masks/, splits/).")
        return 0
    options = dict(field.split("=", 1) for field in args.set)
    from unetkit.train.config import TrainConfig

    options = {k: v for k, v in TrainConfig.from_dict(options).to_dict().items() if k in options}
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.networks:
            print(f"training {name} for {args.minutes:g} min ...", file=sys.stderr, flush=True)
            runs.append(train(name, args.data, args.minutes, options, Path(folder), args.pilot_epochs))
    defaults = TrainConfig()
    result = {
        "date": dt.date.today().isoformat(),
        "command": ".venv/bin/python benchmarks/accuracy.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "minutes": args.minutes, "data": str(args.data), "machine": "{cpu}, {cores} cores, torch {torch}".format(**machine()),
        "defaults": f"base_channels {defaults.base_channels}, patch {defaults.patch_size}, batch "
                    f"{defaults.batch_size}, augment {defaults.augment}, AdamW lr {defaults.learning_rate:g}, "
                    f"poly schedule, precision auto" + (", changed: " + ", ".join(args.set) if args.set else ""),
        "load_before": load_before, "load_after": os.getloadavg()[0], "runs": runs,
    }
    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / f"accuracy-{result['date']}.json"
    out.write_text(json.dumps(result, indent=1))
    text = markdown(result)
    print(text)
    if not args.no_markdown:
        update_markdown("accuracy", text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
