"""The run folder: what it holds, and who may write there.

A run folder (`--out`) is claimed once per training process:
- new (absent or holding no run): training writes its files there, unless the folder is the
  data set's own (or inside its images/ or masks/), or already holds a file of a run's name
  that is not part of a run (refused: the user's file would be replaced);
- holding a run: refused, unless `--resume` (continue it with the settings saved in its
  config.yaml; a flag that would change what is being trained is refused with one
  sentence) or `--overwrite` (delete the run's own files, and only those);
- a run killed before its first checkpoint resumes from the first epoch with its saved
  settings, and one killed while a checkpoint was being swapped in gets it back.
What interrupted writes left behind (`unetkit.atomic` temporaries) is cleared first.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unetkit.atomic import atomic_write_text, recover_folder, remove_leftovers
from unetkit.errors import UnetkitError
from unetkit.train.config import CHANGEABLE_ON_RESUME, TrainConfig

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
TIMING_FILE = "timing.csv"  # kept apart so that metrics.csv is identical for the same seed
RUN_FILE = "run.json"  # device, sizes, timings, why the run stopped: for the report
COLUMNS = ["epoch", "step", "train_loss", "val_loss", "val_dice", "val_iou", "val_pixel_accuracy", "lr"]
TIMING_COLUMNS = ["epoch", "seconds", "images_per_s", "val_seconds"]
# Everything a run writes into its folder; --overwrite deletes these and nothing else.
RUN_FILES = ("best", "last", "eval", METRICS_FILE, TIMING_FILE, RUN_FILE, "progress.png", CONFIG_FILE,
             "report.html", "plan.json")
_LEGACY = ("best.old", "last.old", "best.tmp", "last.tmp")  # what versions before 0.2 left after a kill


@dataclass
class Claim:
    """The outcome of claiming a run folder: the settings to train with and where to resume from."""

    config: TrainConfig
    resume_from: Path | None = None  # the last/ model folder to continue, None = from the first epoch
    notes: list[str] = field(default_factory=list)


def holds_run(out: Path) -> bool:
    """Whether `out` holds (part of) a training run."""
    return any((out / name).exists() for name in (CONFIG_FILE, "last", "best", METRICS_FILE))


def claim(config: TrainConfig, is_main: bool = True) -> Claim:
    """Decide how this process may use `config.out`; see the module docstring."""
    if not config.out:
        raise UnetkitError("--out is missing: give a folder for the run (checkpoints, metrics, report).")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UnetkitError(f"--out {out} is a file; give a folder for the run.")
    notes: list[str] = []
    if is_main and out.is_dir():
        _tidy(out, notes)
    if config.resume and not holds_run(out):
        if not config.data:
            raise UnetkitError(f"{out}: holds no run to resume; give --data to start one there, or check the path.")
        notes.append(f"{out} holds no run yet (stopped before it began): starting it")
        config = dataclasses.replace(config, resume=False)
    if config.resume:
        config = resumed_config(config, out)
        _require_data(config)
        last = out / "last"
        resume_from = last if (last / "resume.pt").is_file() else None
        if resume_from is None:
            notes.append(f"{out} was stopped before its first checkpoint: training it from the first epoch "
                         "with its saved settings")
        return Claim(config, resume_from, notes)
    _require_data(config)
    _refuse_inside_data(out, config.data)
    if not holds_run(out) and not config.overwrite:
        clashes = [name for name in RUN_FILES if (out / name).exists()]
        if clashes:
            raise UnetkitError(
                f"{out / clashes[0]}: not part of a run, and training would write it; move it away, choose "
                "another --out, or pass --overwrite to let training replace it."
            )
    if holds_run(out):
        if not config.overwrite:
            raise UnetkitError(
                f"{out}: already holds a run; pass --resume {out} to continue it, or --overwrite to replace it."
            )
        if is_main:
            for name in RUN_FILES + _LEGACY:
                target = out / name
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    if is_main:
        _check_writable(out)
        config.write_yaml(out / CONFIG_FILE)  # the settings, before anything can stop the run
    return Claim(config, None, notes)


def _require_data(config: TrainConfig) -> None:
    if not config.data:
        raise UnetkitError("--data is missing: give the data set folder (with images/ and masks/).")


def _refuse_inside_data(out: Path, data: str) -> None:
    """A run's files among the data set's own would change the data set (and a later
    --overwrite would delete what it named like them): the run folder must be elsewhere."""
    root, here = Path(data).resolve(), out.resolve()
    if here == root:
        where = "the data set folder"
    elif any(here == inner or here.is_relative_to(inner) for inner in (root / "images", root / "masks")):
        where = f"inside the data set's {here.relative_to(root).parts[0]}/ folder"
    else:
        return
    raise UnetkitError(f"--out {out} is {where} ({data}); give the run a folder of its own, such as "
                       f"runs/{root.name}.")


def resumed_config(config: TrainConfig, out: Path) -> TrainConfig:
    """The run's saved settings, with the changes a resume may make; any other change is refused."""
    path = out / CONFIG_FILE
    if not path.is_file():
        raise UnetkitError(f"{path}: missing, so the run's settings are unknown; start a new run with --overwrite.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        raise UnetkitError(f"{path}: unreadable; restore it, or start a new run with --overwrite.") from None
    if not isinstance(values, dict):
        raise UnetkitError(f"{path}: not a settings file; restore it, or start a new run with --overwrite.")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = TrainConfig.from_dict({k: v for k, v in values.items() if k in known}, source=str(path))
    changes = {}
    for name in sorted(config.explicit() - {"resume", "out", "overwrite"}):
        new, old = getattr(config, name), getattr(saved, name)
        if new == old:
            continue
        if name not in CHANGEABLE_ON_RESUME:
            raise UnetkitError(
                f"--{name} {_show(new)} differs from the run's {_show(old)} ({path}): a resumed run keeps what it "
                f"trains; drop --{name}, or train a new run in another --out."
            )
        changes[name] = new
    resumed = dataclasses.replace(saved, **changes, resume=True, overwrite=False, out=str(out))
    resumed.given = frozenset(saved.given | set(changes))
    return resumed.validate()


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def _tidy(out: Path, notes: list[str]) -> None:
    """Clear interrupted writes; bring back a checkpoint a kill left set aside."""
    for name in ("best", "last"):
        if recover_folder(out / name):
            notes.append(f"{out / name} was being replaced when the run stopped: the previous one is back")
        legacy = out / f"{name}.old"
        if legacy.is_dir() and not (out / name).exists():
            legacy.rename(out / name)
            notes.append(f"{out / name} was being replaced when the run stopped: the previous one is back")
        for leftover in (out / f"{name}.tmp", legacy):
            shutil.rmtree(leftover, ignore_errors=True)
    remove_leftovers(out)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".unetkit-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError:
        raise UnetkitError(f"{out}: cannot write there; choose another --out or fix its permissions.") from None


# --- history ----------------------------------------------------------------------------------


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.csv (identical for the same seed and data) and timing.csv, atomically."""
    for name, columns in ((METRICS_FILE, COLUMNS), (TIMING_FILE, TIMING_COLUMNS)):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})
        atomic_write_text(out / name, text.getvalue())


def read_history(out: Path, last_epoch: int | None = None) -> list[dict[str, Any]]:
    """The rows of metrics.csv joined with timing.csv (up to `last_epoch`)."""
    timing = {row["epoch"]: row for row in read_csv(out / TIMING_FILE)}
    return [{**row, **timing.get(row["epoch"], {})} for row in read_csv(out / METRICS_FILE)
            if last_epoch is None or int(row["epoch"]) <= last_epoch]


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: _parse_number(v) for k, v in raw.items()} for raw in csv.DictReader(handle)]


def write_run_info(out: Path, info: dict[str, Any]) -> None:
    atomic_write_text(out / RUN_FILE, json.dumps(info, indent=2))


def read_run_info(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _parse_number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


__all__ = ["COLUMNS", "CONFIG_FILE", "Claim", "METRICS_FILE", "RUN_FILE", "RUN_FILES", "TIMING_FILE", "claim",
           "holds_run", "read_csv", "read_history", "read_run_info", "resumed_config", "write_history",
           "write_run_info"]
