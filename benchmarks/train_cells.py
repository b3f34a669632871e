"""Train with unetkit's default settings on a generated `cells` set for a wall-clock budget.

The issue's bar: validation Dice above 0.9 within 5 minutes on 2 CPU cores, with defaults.
Records, per epoch, the seconds since training started and the validation Dice, and when
Dice first passed 0.9. Run:

    .venv/bin/python benchmarks/train_cells.py --minutes 5 [--precision auto|fp32|bf16]

Writes benchmarks/results/train-cells-<date>-<precision>.json and prints a Markdown row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from unetkit import runtime
from unetkit.data.synth import write_dataset
from unetkit.train import TrainConfig
from unetkit.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runtime.configure()  # as the CLI does, at the start of the process

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cells"
        write_dataset("cells", data, count=args.count, size=args.size, seed=args.seed)
        config = TrainConfig(data=str(data), out=str(Path(tmp) / "run"), max_minutes=args.minutes,
                             precision=args.precision, seed=args.seed, progress=False).validate()
        trainer = Trainer(config)
        started = time.monotonic()
        run = trainer.fit()
        wall = time.monotonic() - started
    elapsed, rows = 0.0, []
    for row in run.history:
        elapsed += row.get("seconds") or 0.0
        rows.append({"epoch": row["epoch"], "train_seconds": round(elapsed, 1), "val_dice": row.get("val_dice")})
    first = next((r for r in rows if r["val_dice"] is not None and r["val_dice"] > 0.9), None)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "command": f"benchmarks/train_cells.py --minutes {args.minutes} --precision {args.precision}",
        "precision_used": trainer.precision,
        "precision_reason": trainer.precision_reason,
        "wall_seconds": round(wall, 1),
        "best_dice": run.best_metric,
        "epochs": run.epochs_done,
        "first_above_0.9": first,
        "history": rows,
    }
    out = Path(__file__).parent / "results" / f"train-cells-{result['date']}-{args.precision}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    passed = f"epoch {first['epoch']} at {first['train_seconds']} s" if first else "never"
    print(f"| {args.precision} ({trainer.precision}) | {args.minutes} min | {run.epochs_done} | "
          f"{run.best_metric:.4f} | {passed} | {wall:.0f} s |")


if __name__ == "__main__":
    main()
