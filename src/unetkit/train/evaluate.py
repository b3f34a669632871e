"""`unetkit evaluate`: score a trained model on a whole split of a data set.

The model's own config.json says how to read the data (bands, normalisation, class map,
task, threshold), so nothing is repeated. Scores come from confusion counts accumulated over
every pixel of the split; per-image rows are kept too, for the CSV and the report's
worst-cases-first grid.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.errors import UnetkitError
from unetkit.nn import UNet, decode
from unetkit.train.checkpoint import atomic_write_text, load
from unetkit.train.device import autocast, eval_mode, pick_device, pick_precision
from unetkit.train.metrics import ConfusionCounter, adapted_rand_error, scores


def evaluate(
    model: UNet | str | Path,
    data: str | Path,
    *,
    split: str = "val",
    meta: dict[str, Any] | None = None,
    out: str | Path | None = None,
    threshold: float | None = None,
    rand_objects: str = "auto",
    device: str = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """Scores of `model` (a model folder, or a UNet with its `meta`) on `split` of `data`.
    With `out`, also writes summary.json, per_image.csv and confusion.png there."""
    from unetkit.data import DataSpec, SegmentationDataset
    from unetkit.data.layout import make_splits, scan

    if not isinstance(model, UNet):
        model, meta = load(model)
    if meta is None:
        raise UnetkitError("evaluate() needs the model's meta (from unetkit.load) to read the data its way.")
    spec = DataSpec.from_dict(meta["data"])
    train_info = meta.get("train", {})
    # the split the model was trained with; reading the files is left to the dataset (and
    # its one-sentence errors), so a large data set is not checked twice
    splits, _, _ = make_splits(scan(data), train_info.get("val_fraction", 0.2), train_info.get("seed", 0))
    stems = splits.get(split) or []
    if not stems:
        raise UnetkitError(f"{data}: the {split!r} split is empty; choose --split train, val or test.")
    threshold = meta.get("threshold", 0.5) if threshold is None else threshold
    names = [c["name"] for c in spec.classes]
    objects = _rand_objects(rand_objects, names)
    run_device = pick_device(device)
    run_precision = pick_precision(precision, run_device)
    model = model.to(run_device)
    dataset = SegmentationDataset(data, stems, spec)
    counter = ConfusionCounter(spec.task, spec.num_outputs if spec.task == "multilabel" else len(names),
                               spec.ignore_index)
    rows = []
    with eval_mode(model):
        for index in range(len(dataset)):
            item = dataset[index]
            x = item["image"].unsqueeze(0).to(run_device)
            with autocast(run_device, run_precision):
                logits = model(x)
            predicted = decode(logits.float(), spec.task, threshold).cpu()
            target = item["mask"].unsqueeze(0)
            counter.update(predicted, target)
            rows.append(_image_row(item["stem"], predicted[0], target[0], spec, names, objects))
    summary = scores(counter.matrix(), names, spec.task)
    summary.update(
        split=split, images=len(rows), task=spec.task, threshold=threshold,
        confusion=counter.matrix().tolist(), model=meta.get("folder"),
    )
    if spec.task == "binary":
        rand = [r["rand_error"] for r in rows if r.get("rand_error") is not None]
        summary["adapted_rand_error"] = float(np.mean(rand)) if rand else None
        summary["rand_objects"] = objects
    summary["per_image"] = rows
    if out is not None:
        write_outputs(summary, Path(out), names)
    return summary


def _rand_objects(choice: str, names: list[str]) -> str:
    """Which regions the adapted Rand error compares: the foreground objects (cells), or
    the regions the foreground separates when it is a boundary class (ISBI membranes)."""
    if choice != "auto":
        return choice
    boundary_words = ("membrane", "boundary", "border", "edge", "contour")
    foreground = names[1].lower() if len(names) > 1 else ""
    return "background" if any(word in foreground for word in boundary_words) else "foreground"


def _image_row(stem: str, predicted: torch.Tensor, target: torch.Tensor, spec: Any, names: list[str],
               objects: str) -> dict[str, Any]:
    per = ConfusionCounter(spec.task, spec.num_outputs if spec.task == "multilabel" else len(names), spec.ignore_index)
    per.update(predicted.unsqueeze(0), target.unsqueeze(0))
    result = scores(per.matrix(), names, spec.task)
    row: dict[str, Any] = {"stem": stem, "dice": result["headline"], "iou": result["mean_iou_fg"],
                           "pixel_error": result["pixel_error"]}
    for c in result["per_class"]:
        row[f"dice_{c['name']}"] = c["dice"]
    if spec.task == "binary":
        row["rand_error"] = adapted_rand_error(predicted.numpy(), target.numpy(), objects, spec.ignore_index)
    return row


def write_outputs(summary: dict[str, Any], out: Path, names: list[str]) -> None:
    """summary.json (without the per-image rows), per_image.csv, confusion.png — atomically."""
    out.mkdir(parents=True, exist_ok=True)
    compact = {k: v for k, v in summary.items() if k != "per_image"}
    atomic_write_text(out / "summary.json", json.dumps(compact, indent=2))
    rows = summary["per_image"]
    text = io.StringIO()
    columns = list(rows[0]) if rows else ["stem"]
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(out / "per_image.csv", text.getvalue())
    if summary["task"] != "multilabel":
        from unetkit.report.plots import plot_confusion

        plot_confusion(np.asarray(summary["confusion"]), names, out / "confusion.png")


def format_table(summary: dict[str, Any]) -> str:
    """The terminal table: a row per class, then the means and the pixel/Rand errors."""
    lines = [f"{'class':<20} {'IoU':>7} {'Dice':>7} {'prec.':>7} {'recall':>7} {'pixels':>12}"]

    def f(v: float | None) -> str:
        return "empty" if v is None else f"{v:.4f}"

    for c in summary["per_class"]:
        lines.append(
            f"{c['name']:<20} {f(c['iou']):>7} {f(c['dice']):>7} {f(c['precision']):>7} {f(c['recall']):>7} "
            f"{c['support']:>12,}"
        )
    lines.append(f"mean IoU {f(summary['mean_iou'])} (without background {f(summary['mean_iou_fg'])}), "
                 f"mean Dice {f(summary['mean_dice'])} (without background {f(summary['mean_dice_fg'])})")
    lines.append(f"pixel accuracy {f(summary['pixel_accuracy'])}, pixel error {f(summary['pixel_error'])}")
    if "adapted_rand_error" in summary:
        lines.append(f"adapted Rand error {f(summary['adapted_rand_error'])} (objects: {summary['rand_objects']})")
    lines.append(f"{summary['images']} images of the {summary['split']} split")
    return "\n".join(lines)
