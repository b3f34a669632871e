"""Accuracy in a fixed wall-clock budget: unetkit (its defaults) against MONAI's BasicUNet on ISBI 2012.

    .venv/bin/python benchmarks/accuracy.py                 # 20 minutes per network
    .venv/bin/python benchmarks/accuracy.py --minutes 5     # a shorter budget

Both networks train in the same loop (unetkit's Trainer: same data, augmentation, loss,
optimizer, schedule, precision, channels-last) for the same wall-clock budget, one after the
other. The trainer's poly learning-rate schedule needs an end, so a short pilot run (not
counted) measures each network's seconds per epoch and the epoch count is set to fill the
budget; `max_minutes` stops a run that would overshoot. Each network is then scored, with
its final weights, on splits/val.txt (whole 512 x 512 slices, the trainer's precision):
membrane Dice and IoU, pixel error, and the ISBI 2012 challenge's adapted Rand error of the
regions between membranes. Skips with a message when the data set is absent.

Then the quality check of the speed settings (`--no-quality` skips it): on a generated `cells`
set, the same training run (fixed epochs, same seed) with unetkit's defaults, in fp32 with the
fused paths off (UNETKIT_FUSED=0: "fp32 eager"), and in bf16; each run's final validation Dice,
and how many validation pixels the masks of the defaults-trained model, predicted the default
way, share with the same model's fp32 eager masks.

Writes benchmarks/results/accuracy-<date>.json and the accuracy (and quality) sections of
BENCHMARKS.md.
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

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "isbi2012"
MONAI_FEATURES = (64, 128, 256, 512, 1024, 64)


def basic_unet(in_channels: int, num_outputs: int) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_outputs, features=MONAI_FEATURES,
                     norm="batch", act="relu")


NETWORKS = {"unetkit": None, "basicunet": basic_unet}


def train(name: str, data: Path, minutes: float, options: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Pilot, then the budgeted run; returns the trained Trainer's scores and counts."""
    from unetkit.train.config import TrainConfig
    from unetkit.train.trainer import Trainer

    factory = NETWORKS[name]
    base = {"data": str(data), "progress": False, "overwrite": True, **options}
    pilot_epochs = 3
    pilot = Trainer(TrainConfig.from_dict({**base, "out": str(folder / f"{name}-pilot"), "epochs": pilot_epochs}),
                    model_factory=factory)
    start = time.monotonic()
    pilot.fit()
    per_epoch = (time.monotonic() - start) / pilot_epochs  # includes validation and checkpoints
    epochs = max(1, math.floor(minutes * 60 / per_epoch))
    config = TrainConfig.from_dict({**base, "out": str(folder / name), "epochs": epochs, "max_minutes": minutes})
    trainer = Trainer(config, model_factory=factory)
    start = time.monotonic()
    run = trainer.fit()
    seconds = time.monotonic() - start
    images = sum(round(row["images_per_s"] * row["seconds"]) for row in run.history)
    result = {
        "network": name, "epochs_planned": epochs, "epochs_done": run.epochs_done, "stopped": run.stopped,
        "train_seconds": seconds, "images_seen": images, "pilot_seconds_per_epoch": per_epoch,
        "precision": trainer.precision, "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "config": {k: v for k, v in config.to_dict().items() if k in options or k in ("epochs", "max_minutes")},
    }
    result.update(score(trainer))
    return result


def score(trainer: Any) -> dict[str, Any]:
    """Final weights on the validation split: membrane Dice/IoU, pixel error, adapted Rand error."""
    from unetkit.nn import decode
    from unetkit.train.device import autocast, eval_mode
    from unetkit.train.metrics import ConfusionCounter, adapted_rand_error, scores

    spec = trainer.spec
    names = [c["name"] for c in spec.classes]
    counter = ConfusionCounter(spec.task, len(spec.classes), spec.ignore_index)
    rand_errors = []
    model = trainer.model
    with eval_mode(model):
        for i in range(len(trainer.val_set)):
            item = trainer.val_set[i]
            x = item["image"][None].contiguous(memory_format=torch.channels_last)
            with autocast(trainer.device, trainer.precision):
                logits = model(x)
            predicted = decode(logits.float(), spec.task, trainer.config.threshold)
            target = item["mask"][None]
            counter.update(predicted, target)
            error = adapted_rand_error(predicted[0].numpy(), target[0].numpy(), objects="background",
                                       ignore_index=spec.ignore_index)
            if error is not None:
                rand_errors.append(error)
    result = scores(counter.matrix(), names, spec.task)
    membrane = next(c for c in result["per_class"] if c["name"] == "membrane")
    return {
        "membrane_dice": membrane["dice"], "membrane_iou": membrane["iou"],
        "pixel_error": 1 - result["pixel_accuracy"], "adapted_rand_error": float(np.mean(rand_errors)),
        "val_images": len(trainer.val_set),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['date']} with `{result['command']}`: a budget of {result['minutes']:g} minutes of "
        f"training per network (validation and checkpoints inside it), on {result['machine']} "
        f"(load average {result['load_before']:.2f} before, {result['load_after']:.2f} after, this benchmark's "
        "own training included).",
        "",
        f"Data: ISBI 2012 ({result['data']}), 24 training slices, scored on the 6 of splits/val.txt with the "
        "final weights, whole 512 x 512 slices. Same loop for both: unetkit's Trainer at its defaults "
        f"({result['defaults']}); the epoch count fills the budget (from a pilot run) so that the poly "
        "schedule ends with it.",
        "",
        "| network | parameters | images seen | epochs | membrane Dice | membrane IoU | pixel error "
        "| adapted Rand error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"unetkit": "unetkit UNet (defaults)", "basicunet": f"MONAI BasicUNet{MONAI_FEATURES}, batch norm, ReLU"}
    for r in result["runs"]:
        lines.append(
            f"| {labels[r['network']]} | {r['parameters'] / 1e6:.1f} M | {r['images_seen']} | {r['epochs_done']} | "
            f"{r['membrane_dice']:.4f} | {r['membrane_iou']:.4f} | {r['pixel_error']:.4f} | "
            f"{r['adapted_rand_error']:.4f} |")
    lines += ["", "Lower is better for pixel error and adapted Rand error. Adjacent ISBI slices are strongly "
              "correlated, so these validation scores are optimistic against the challenge's hidden test stack."]
    return "\n".join(lines)


QUALITY_MODES = {  # mode: (TrainConfig precision, environment)
    "defaults": ("auto", {}),
    "fp32-eager": ("fp32", {"UNETKIT_FUSED": "0"}),
    "bf16": ("bf16", {}),
}


def quality_worker(mode: str, data: Path, out: Path, epochs: int) -> int:
    """Train on `data` as `mode` says; save the final weights and the last validation scores."""
    from unetkit.train.config import TrainConfig
    from unetkit.train.trainer import Trainer

    precision, _ = QUALITY_MODES[mode]
    config = TrainConfig.from_dict({"data": str(data), "out": str(out / mode), "epochs": epochs, "progress": False,
                                    "precision": precision, "overwrite": True})
    trainer = Trainer(config)
    start = time.monotonic()
    run = trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"{mode}.pt")
    last = run.history[-1]
    (out / f"{mode}.json").write_text(json.dumps({
        "mode": mode, "precision": trainer.precision, "epochs": epochs, "val_dice": last["val_dice"],
        "best_val_dice": run.best_metric, "seconds": time.monotonic() - start, "config": trainer.model.config,
    }))
    return 0


def quality(epochs: int) -> dict[str, Any]:
    """Train the three ways on generated cells; compare Dice and predicted masks."""
    from unetkit.data.synth import write_dataset
    from unetkit.nn import UNet, decode

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_dataset("cells", root / "cells", count=120, size=128, seed=0)
        runs = {}
        for mode, (_, env) in QUALITY_MODES.items():
            print(f"quality: training {mode} ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, __file__, "--quality-worker", mode, "--quality-data", str(root / "cells"),
                            "--quality-out", str(root), "--quality-epochs", str(epochs)],
                           env={**os.environ, **env}, check=True)
            runs[mode] = json.loads((root / f"{mode}.json").read_text())
        # masks of the defaults-trained model: default inference vs fp32 eager, on the validation split
        from unetkit.data import SegmentationDataset, inspect_dataset
        from unetkit.train.device import autocast, pick_precision

        spec, splits = inspect_dataset(str(root / "cells"), val_fraction=0.2, seed=0)
        val = SegmentationDataset(str(root / "cells"), splits["val"], spec)
        model = UNet(**runs["defaults"]["config"])
        model.load_state_dict(torch.load(root / "defaults.pt"))
        model = model.to(memory_format=torch.channels_last).eval()
        cpu = torch.device("cpu")
        agree = {}
        for name, precision in (("defaults", pick_precision("auto", cpu)), ("bf16", "bf16")):
            same = total = 0
            for i in range(len(val)):
                x = val[i]["image"][None].contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    _fused(model, True)
                    with autocast(cpu, precision):
                        fast = decode(model(x).float(), spec.task)
                    _fused(model, False)
                    plain = decode(model(x.float()), spec.task)
                same += int((fast == plain).sum())
                total += plain.numel()
            agree[name] = {"precision": precision, "agreement": same / total, "pixels": total}
    return {"epochs": epochs, "runs": runs, "mask_agreement_with_fp32_eager": agree, "data": "cells, 120 x 128^2"}


def _fused(model: Any, on: bool) -> None:
    model.fused_inference = on
    for block in model.decoder:
        block.shuffle_concat = on


def quality_markdown(q: dict[str, Any]) -> str:
    r = q["runs"]
    lines = [
        f"Generated `cells` set ({q['data']}, 96 train / 24 val), trainer defaults, {q['epochs']} epochs, same "
        "seed; final validation Dice of each run and, for the defaults-trained model, the share of validation "
        "pixels whose predicted class equals its fp32 eager prediction (fused paths off).",
        "",
        "| run | precision | final val Dice | best val Dice | seconds |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, run in r.items():
        lines.append(f"| {mode} | {run['precision']} | {run['val_dice']:.4f} | {run['best_val_dice']:.4f} | "
                     f"{run['seconds']:.0f} |")
    a = q["mask_agreement_with_fp32_eager"]
    lines += ["", "Masks of the defaults-trained model against its fp32 eager masks: "
              + "; ".join(f"{k} inference ({v['precision']}) {v['agreement']:.4%} of {v['pixels']} pixels"
                          for k, v in a.items()) + "."]
    gap = abs(r["defaults"]["val_dice"] - r["fp32-eager"]["val_dice"])
    lines += [f"Dice gap defaults vs fp32 eager: {gap:.4f} (target <= 0.01); bf16 vs fp32 eager: "
              f"{abs(r['bf16']['val_dice'] - r['fp32-eager']['val_dice']):.4f}."]
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
    parser.add_argument("--quality-epochs", type=int, default=15)
    parser.add_argument("--quality-worker", help=argparse.SUPPRESS)
    parser.add_argument("--quality-data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quality-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-isbi", action="store_true", help="skip the ISBI 2012 comparison")
    args = parser.parse_args()
    if args.quality_worker:
        return quality_worker(args.quality_worker, args.quality_data, args.quality_out, args.quality_epochs)
    from speed import machine, update_markdown  # beside this file

    if not args.no_quality:
        q = quality(args.quality_epochs)
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / f"quality-{dt.date.today().isoformat()}.json").write_text(json.dumps(q, indent=1))
        text = quality_markdown(q)
        print(text)
        if not args.no_markdown:
            update_markdown("quality", text)
    if args.no_isbi:
        return 0
    if not (args.data / "images").is_dir():
        print(f"accuracy benchmark skipped: no ISBI 2012 data at {args.data} (images/, masks/, splits/).")
        return 0
    from unetkit import runtime

    runtime.configure()
    options = dict(field.split("=", 1) for field in args.set)
    from unetkit.train.config import TrainConfig

    options = {k: v for k, v in TrainConfig.from_dict(options).to_dict().items() if k in options}
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.networks:
            print(f"training {name} for {args.minutes:g} min ...", file=sys.stderr, flush=True)
            runs.append(train(name, args.data, args.minutes, options, Path(folder)))
    defaults = TrainConfig()
    result = {
        "date": dt.date.today().isoformat(),
        "command": "make bench  (.venv/bin/python benchmarks/accuracy.py --minutes " f"{args.minutes:g}"
        + (" --set " + " ".join(args.set) if args.set else "") + ")",
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
