"""`unetkit demo`: the whole job on an embedded default, for someone who just cloned the repo.

Generate the `cells` set (and with --scenes the road scenes), train with settings suited to a
2-core CPU, evaluate, predict held-out images including one larger than the training patches
(so the tiled path runs), export to ONNX and check it, write the report, and print what each
stage took. Everything lands in one folder, marked as the demo's so a re-run may replace it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit.errors import UnetkitError

MARKER = ".unetkit-demo"

# Training plans its own recipe for a two-minute budget (`train --minutes 2`): the whole
# demo stays inside about four minutes on 2 CPU cores.
CELLS = dict(count=240, size=128, minutes=2.0)
SCENES = dict(count=240, size=128, minutes=2.0)


@dataclass
class DemoResult:
    """Timings per stage, the headline scores and where everything is."""

    out: Path
    stages: dict[str, float] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = ["", "unetkit demo summary", "--------------------"]
        for name, seconds in self.stages.items():
            lines.append(f"{name:<32} {seconds:7.1f} s")
        lines.append(f"{'total':<32} {sum(self.stages.values()):7.1f} s")
        for name, s in self.scores.items():
            lines.append(
                f"{name}: validation Dice {s['dice']:.4f} (IoU {s['iou']:.4f}, pixel accuracy {s['accuracy']:.4f})"
            )
        lines += self.notes
        for name, path in self.reports.items():
            lines.append(f"{name} report: {path}")
        return "\n".join(lines)


def run_demo(out: str | Path = "demo-run", *, scenes: bool = False, seed: int = 0, progress: bool = True,
             say: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into `out` (replaced if an earlier demo made it; refused otherwise)."""
    out = Path(out)
    _claim(out)
    result = DemoResult(out)
    _one_set("cells", CELLS, out, seed, result, say, progress)
    if scenes:
        _one_set("scenes", SCENES, out, seed, result, say, progress)
    return result


def _one_set(name: str, recipe: dict[str, Any], out: Path, seed: int, result: DemoResult,
             say: Callable[[str], None], progress: bool) -> None:
    from unetkit.api import train
    from unetkit.data.io import write_image
    from unetkit.data.synth import generate, write_dataset
    from unetkit.infer.evaluate import evaluate, format_table
    from unetkit.infer.export import export
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.run import predict_files
    from unetkit.report.html import build_report

    data, run, new, predictions = out / name / "data", out / name / "run", out / name / "new", out / name / "predicted"

    @contextmanager
    def stage(label: str) -> Iterator[None]:
        say(f"\n== {name}: {label}")
        started = time.monotonic()
        yield
        result.stages[f"{name}: {label}"] = time.monotonic() - started

    with stage("generate data"):
        say(write_dataset(name, data, count=recipe["count"], size=recipe["size"], seed=seed).to_text())
        # held-out images the model never saw: new seeds, and one 3x larger than a patch
        for index in range(3):
            image, _ = generate(name, recipe["size"], seed + 1000, index)
            write_image(new / f"heldout_{index}.png", image)
        large, _ = generate(name, 3 * recipe["size"] + 40, seed + 2000, 0)
        write_image(new / "large.png", large)
    with stage("train"):
        options = {k: v for k, v in recipe.items() if k not in ("count", "size")}
        run_summary = train(data=str(data), out=str(run), seed=seed, progress=progress, **options)
        result.notes.append(f"{name}: trained {run_summary.epochs_done} of {run_summary.epochs_planned} epochs; "
                            f"stopped: {run_summary.stopped}")
    with stage("evaluate"):
        summary = evaluate(run / "best", data, out=run / "eval")
        result.scores[name] = {"dice": summary["headline"], "iou": summary["mean_iou_fg"],
                               "accuracy": summary["pixel_accuracy"]}
        say(format_table(summary))
    with stage("predict (tiled for large)"):
        predictor = Predictor(run / "best")
        files = predict_files(predictor, [new], predictions, overlay=True)
        if files.failed:
            raise UnetkitError(f"the demo could not predict {files.failed[0][0]}: {files.failed[0][1]}")
        tiles = predictor.tile_count(*large.shape[:2])
        say(f"segmented {len(files.done)} new images into {predictions} "
            f"(large.png: {large.shape[0]}x{large.shape[1]} in {tiles} overlapping tiles of {predictor.tile})")
    with stage("export ONNX"):
        try:
            say(export(run / "best", out / name / "model.onnx", format="onnx").to_line())
        except ImportError:
            result.notes.append("ONNX export skipped: install the extra with `pip install 'unetkit[onnx]'`.")
    with stage("report"):
        result.reports[name] = build_report(run, data=data)


def _claim(out: Path) -> None:
    """Use `out` only if it is new, empty, or an earlier demo's (then replace it)."""
    if out.exists():
        if (out / MARKER).exists():
            shutil.rmtree(out)
        elif any(out.iterdir()):
            raise UnetkitError(f"{out}: exists and is not a demo folder; pass another --out or remove it.")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `unetkit demo`; a re-run replaces this folder\n")
