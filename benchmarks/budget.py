"""Training to a time budget: `train --minutes N` against the fixed defaults and a peer network.

    .venv/bin/python benchmarks/budget.py                          # every set at 5, 10 and 20 minutes
    .venv/bin/python benchmarks/budget.py --sets isbi2012 --minutes 20
    .venv/bin/python benchmarks/budget.py --minutes 1 --sets cells --no-markdown   # a smoke run
    .venv/bin/python benchmarks/budget.py --minutes 5 --seed 1 --no-markdown       # the same runs, another seed

For each data set (ISBI 2012 from ../shared/datasets when present, and the three generated
sets: cells, scenes, multispectral) and each budget, three contenders, one after another,
each in a fresh process (nothing else may run on the machine meanwhile):
- plan: `unetkit train --minutes N` (the planner chooses the whole recipe);
- fixed: the fixed defaults, stopped by `--max_minutes N` (what a user got before);
- basicunet: MONAI's BasicUNet (its default features) trained in the same loop with the
  plan's recipe and budget (only the network differs); MONAI comes with
  `make .venv/.installed-bench`.
Scores are those of the best validation epoch (the checkpoint a user would keep), on the
validation split, through unetkit's predictor: Dice of the foreground (binary) or the mean
Dice without background (multiclass), and for ISBI 2012 the pixel error and the adapted
Rand error. `--seed` (default 0) reseeds the weights, crops and augmentation of every contender
alike, to see how far apart two runs of one recipe land. Writes benchmarks/results/budget-<date>.json
and the budget section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
ISBI = ROOT.parent / "shared" / "datasets" / "isbi2012"
GENERATED = {"cells": dict(count=240, size=128), "scenes": dict(count=240, size=128),
             "multispectral": dict(count=240, size=128)}
CONTENDERS = ("plan", "fixed", "basicunet")


def child(contender: str, data: str, out: str, minutes: float, seed: int = 0,
          given: dict[str, Any] | None = None) -> int:
    """One run in this process; prints its result as the last line (JSON). `given`: settings the plan
    contender gets as flags (they win over the plan, as on the command line)."""
    import torch

    from unetkit import runtime
    from unetkit.train.config import TrainConfig
    from unetkit.train.trainer import Trainer

    runtime.configure()

    class Recorded(Trainer):
        """The trainer, keeping every validation's scores (the peer writes no model folders)."""

        scores: list[dict[str, Any]] = []

        def validate(self) -> dict[str, Any]:
            result = super().validate()
            self.scores.append({k: result.get(k) for k in ("headline", "pixel_error", "adapted_rand_error",
                                                           "mean_iou_fg")})
            return result

    class Peer(Recorded):
        def build_network(self, in_channels: int, num_outputs: int) -> torch.nn.Module:
            from monai.networks.nets import BasicUNet

            return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_outputs, norm="batch",
                             act="relu")

    base = {"data": data, "out": out, "progress": False, "overwrite": True, "seed": seed}
    if contender == "fixed":
        config = TrainConfig.from_dict({**base, "max_minutes": minutes})
        cls = Recorded
    else:
        config = TrainConfig.from_dict({**base, "minutes": minutes, **(given if contender == "plan" else {})})
        cls = Peer if contender == "basicunet" else Recorded
    trainer = cls(config.validate())
    started = time.monotonic()
    run = trainer.fit()
    wall = time.monotonic() - started
    best = max(trainer.scores, key=lambda s: -1 if s["headline"] is None else s["headline"]) if trainer.scores else {}
    images = sum(round((row.get("images_per_s") or 0) * (row.get("seconds") or 0)) for row in run.history)
    c = trainer.config
    print(json.dumps({
        "contender": contender, "minutes": minutes, "seed": seed, "wall_seconds": wall, "images_seen": images,
        "steps": run.history[-1]["step"] if run.history else 0, "epochs": run.epochs_done, "stopped": run.stopped,
        "dice": best.get("headline"), "pixel_error": best.get("pixel_error"),
        "adapted_rand_error": best.get("adapted_rand_error"), "network": type(trainer.model).__name__,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "recipe": {k: getattr(c, k) for k in ("base_channels", "depth", "patch_size", "batch_size", "precision",
                                               "epochs", "steps_per_epoch", "flips", "class_weights")},
        "precision": trainer.precision, "channels_last": trainer.channels_last,
    }))
    return 0


def prepare(name: str, folder: Path) -> Path | None:
    if name == "isbi2012":
        return ISBI if ISBI.is_dir() else None
    from unetkit.data.synth import write_dataset

    target = folder / name
    if not target.exists():
        write_dataset(name, target, seed=0, **GENERATED[name])
    return target


def machine() -> dict[str, Any]:
    """The CPU as the probe's caches tell it apart (its name and the vector instructions that pick
    the kernels) and the cores this process may use."""
    from unetkit import runtime
    from unetkit.model.device import SPEED_FLAGS, _cpu_flags, _cpu_generation, _cpu_model

    return {"cpu": _cpu_model(), "generation": _cpu_generation(), "cores": runtime.cores(),
            "isa": sorted(_cpu_flags() & set(SPEED_FLAGS))}


def describe(m: dict[str, Any]) -> str:
    generation = f", {m['generation']}" if m.get("generation") else ""
    return f"{m['cpu']}{generation}, {m['cores']} cores ({', '.join(m['isa']) or 'no AVX2'})"


def key(row: dict[str, Any]) -> tuple[str, float, str, int, str, str]:
    """What makes a run the same run in two invocations (rows before seeds existed ran seed 0;
    a row of another machine, or with other given settings, is another run)."""
    return (row["set"], row["minutes"], row["contender"], row.get("seed", 0),
            json.dumps(row.get("machine"), sort_keys=True), json.dumps(row.get("given") or {}, sort_keys=True))


def label(row: dict[str, Any]) -> str:
    given = ", ".join(f"--{k} {v}" for k, v in (row.get("given") or {}).items())
    notes = [n for n in (given, f"seed {row['seed']}" if row.get("seed", 0) else "") if n]
    return row["contender"] + (f" ({'; '.join(notes)})" if notes else "")


def markdown(result: dict[str, Any]) -> str:
    """A table per machine (a VM of one name may be another processor from one day to the next)."""
    def machine_of(r: dict[str, Any]) -> dict[str, Any]:
        return r.get("machine", result["machine"])

    machines: list[dict[str, Any]] = []
    for r in result["runs"]:
        if machine_of(r) not in machines:
            machines.append(machine_of(r))
    lines = [f"Measured {result['date']} with `{result['command']}`, one run at a time, "
             f"{result['wall_minutes']:.0f} min in all."]
    for m in machines:
        lines += ["", f"On {describe(m)}:", "", "| budget | data set | contender | network, recipe | images seen "
                  "| best val. Dice | pixel error | adapted Rand | run (s) |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [_row(r) for r in result["runs"] if machine_of(r) == m]
    lines += ["", "plan: `unetkit train --minutes N`; fixed: the fixed defaults with `--max_minutes N`; basicunet: "
              "MONAI BasicUNet (default features) in the same loop with the plan's recipe and budget. Scores of "
              "the best validation epoch on the validation split (ISBI 2012: the 6 slices of splits/val.txt), "
              "through unetkit's predictor; 'run' is the training run's wall time (the budget covers training, "
              "validation and checkpoints; start-up is before it)."]
    return "\n".join(lines)


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['minutes']:g} min | {r['set']} | {label(r)} | failed: {r['error']} | | | | | |"
    recipe = r["recipe"]
    net = (f"{r['network']} {r['parameters'] / 1e6:.1f}M, base {recipe['base_channels']}"
           if r["network"] == "UNet" else f"{r['network']} {r['parameters'] / 1e6:.1f}M")
    net += f", patch {recipe['patch_size']} x {recipe['batch_size']}, {r['precision']}"
    net += {True: ", channels-last", False: ", NCHW"}.get(r.get("channels_last"), "")  # rows before it: unsaid

    def f(v: float | None, digits: int = 4) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    return (f"| {r['minutes']:g} min | {r['set']} | {label(r)} | {net} | {r['images_seen']:,} | {f(r['dice'])} | "
            f"{f(r['pixel_error'])} | {f(r['adapted_rand_error'])} | {r['wall_seconds']:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=["isbi2012", *GENERATED],
                        help="data sets: isbi2012 (skipped where ../shared/datasets lacks it) and the generated "
                             f"{', '.join(GENERATED)} (default: all)")
    parser.add_argument("--minutes", nargs="*", type=float, default=[5.0, 10.0, 20.0],
                        help="training budgets in minutes (default: 5 10 20)")
    parser.add_argument("--contenders", nargs="*", default=list(CONTENDERS), choices=CONTENDERS,
                        help="plan: train --minutes N; fixed: the fixed defaults with --max_minutes N; basicunet: "
                             "MONAI BasicUNet with the plan's recipe (default: all three)")
    parser.add_argument("--given", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings the plan contender gets as `unetkit train` flags, which win over the plan "
                             "(e.g. base_channels=16); its rows say so and are other runs than the plain plan's")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (weights, crops, augmentation)")
    parser.add_argument("--no-markdown", action="store_true", help="leave BENCHMARKS.md alone (results file only)")
    parser.add_argument("--no-merge", dest="merge", action="store_false",
                        help="replace the same day's results instead of adding to them")
    parser.add_argument("--into", type=Path, default=None,
                        help="the results file to add these runs to (default: results/budget-<today>.json)")
    parser.add_argument("--child", nargs=4, metavar=("CONTENDER", "DATA", "OUT", "MINUTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    given = _given(parser, args.given)
    if args.child:
        return child(args.child[0], args.child[1], args.child[2], float(args.child[3]), args.seed, given)
    if "basicunet" in args.contenders:
        try:
            import monai  # noqa: F401
        except ImportError:
            parser.error("the basicunet contender needs MONAI: run `make .venv/.installed-bench` first, "
                         "or leave it out with --contenders plan fixed")
    started = time.time()
    here = machine()
    runs = []
    with tempfile.TemporaryDirectory(prefix="unetkit-budget-") as tmp:
        folder = Path(tmp)
        for minutes in args.minutes:
            for name in args.sets:
                data = prepare(name, folder)
                if data is None:
                    print(f"  {name}: not found, skipped", file=sys.stderr)
                    continue
                for contender in args.contenders:
                    out = folder / f"{name}-{minutes:g}-{contender}"
                    done = subprocess.run([sys.executable, __file__, "--child", contender, str(data), str(out),
                                           str(minutes), "--seed", str(args.seed), "--given", *args.given],
                                          capture_output=True, text=True)
                    row: dict[str, Any] = {"set": name, "minutes": minutes, "contender": contender,
                                           "seed": args.seed, "machine": here}
                    if given and contender == "plan":
                        row["given"] = given
                    if done.returncode:
                        tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
                        row["error"] = tail[-1][:200] if tail else f"exit {done.returncode}"
                    else:
                        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                    runs.append(row)
                    print(f"  {minutes:g} min {name} {contender}: "
                          + (row.get("error") or f"Dice {row['dice']}, {row['images_seen']} images"),
                          file=sys.stderr, flush=True)
    command = ".venv/bin/python benchmarks/budget.py" + "".join(f" {a}" for a in sys.argv[1:])
    result = {"date": dt.date.today().isoformat(), "command": command, "machine": here, "runs": runs,
              "wall_minutes": (time.time() - started) / 60}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.into or RESULTS / f"budget-{result['date']}.json"
    if args.merge and out.is_file():  # earlier invocations (other budgets, sets, seeds or days) stay in the table
        earlier = json.loads(out.read_text())
        for r in earlier["runs"]:
            r.setdefault("machine", earlier["machine"])  # rows from before rows named their machine
        mine = {key(r) for r in runs}
        result["runs"] = [r for r in earlier["runs"] if key(r) not in mine] + runs
        result["runs"].sort(key=lambda r: (r["minutes"], r["set"], CONTENDERS.index(r["contender"]), r.get("seed", 0)))
        result["command"] = f"{earlier['command']}; then {command}"
        result["wall_minutes"] += earlier.get("wall_minutes", 0.0)
        if earlier["date"] != result["date"]:
            result["date"] = f"{earlier['date'].split(' to ')[0]} to {result['date']}"
    from unetkit.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=1))
    text = markdown(result)
    print(text)
    if not args.no_markdown:
        sys.path.insert(0, str(HERE))
        from speed import update_markdown

        update_markdown("budget", text)
    return 0


def _given(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs as TrainConfig settings (numbers and booleans as JSON reads them)."""
    if not pairs:
        return {}
    from unetkit.train.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    given: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in known:
            parser.error(f"--given {pair}: write KEY=VALUE with a setting of `unetkit train` (e.g. base_channels=16)")
        try:
            given[name] = json.loads(text)
        except json.JSONDecodeError:
            given[name] = text
    return given


if __name__ == "__main__":
    sys.exit(main())
