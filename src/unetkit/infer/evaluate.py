"""`unetkit evaluate`: score exactly what `unetkit predict` writes, over a whole split.

The model runs through the `Predictor`, with the same tiling, Gaussian blending, test-time
augmentation and decoding as prediction, so an image larger than a tile is scored as it
would be segmented, in bounded memory. Confusion counts are accumulated image by image, in
row bands, and scored once at the end (never an average of per-image scores). Training's
validation goes through `score` too, with its own loss.

With `out`, the evaluation writes what the report reads (the report never runs the model):
summary.json, per_image.csv, and predictions/<stem>.png, the masks as `predict` writes them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.atomic import atomic_write_text
from unetkit.errors import UnetkitError
from unetkit.infer.files import Job
from unetkit.infer.metrics import ConfusionCounter, adapted_rand_error, scores
from unetkit.infer.predictor import Predictor
from unetkit.model.record import SavedModel

SUMMARY_FILE = "summary.json"
PER_IMAGE_FILE = "per_image.csv"
PREDICTIONS = "predictions"
ROWS_PER_BAND = 1 << 22  # pixels counted at a time, so a huge image needs no large int64 copies
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Tally:
    """What `score` accumulated: the confusion matrix, per-image rows and the summed loss."""

    matrix: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    loss_sum: float = 0.0
    images: int = 0


def evaluate(
    model: Any,
    data: str | Path,
    *,
    split: str = "val",
    meta: SavedModel | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    threshold: float | None = None,
    rand_objects: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    tile: int | None = None,
    overlap: float = 0.5,
    tta: str = "none",
    batch_size: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Scores of `model` (a model folder, an .onnx file, or a UNet with its `meta`) on `split`
    of `data`, as `predict` would segment it. With `out`, also writes summary.json,
    per_image.csv and predictions/ there (refused if they exist, unless `overwrite`)."""
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.layout import make_splits, scan

    predictor = model if isinstance(model, Predictor) else Predictor(
        model, meta=meta, tile=tile, overlap=overlap, tta=tta, batch_size=batch_size, device=device,
        precision=precision, threshold=threshold)
    record = predictor.record
    if record.data is None:
        raise UnetkitError("evaluate() needs the model's record (from unetkit.load) to read the data its way.")
    out = Path(out) if out is not None else None
    if out is not None:
        _claim(out, overwrite)
    # the split the model was trained with; reading the files is left to the dataset (and
    # its one-sentence errors), so a large data set is not checked twice
    splits, _, _ = make_splits(scan(data), record.val_fraction, record.seed)
    stems = splits.get(split) or []
    if not stems:
        raise UnetkitError(f"{data}: the {split!r} split is empty; choose --split train, val or test.")
    objects = rand_objects_for(rand_objects, record.class_names)
    dataset = SegmentationDataset(data, stems, record.data)
    masks = out / PREDICTIONS if out is not None else None
    tally = score(predictor, _pairs(dataset, progress), rand_objects=objects, masks_out=masks)
    summary = summarize(tally, record, split=split, threshold=predictor.threshold, rand_objects=objects)
    if out is not None:
        write_outputs(summary, out)
    return summary


def score(predictor: Predictor, pairs: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]], *,
          loss: LossFn | None = None, rand_objects: str | None = None, masks_out: Path | None = None) -> Tally:
    """Predict every (stem, image, target, nodata) and count; `target` holds class indices
    (H, W) or (L, H, W) 0/1 with the ignore index, as `SegmentationDataset.load` gives them."""
    record = predictor.record
    names = record.class_names
    count = record.num_outputs if record.task == "multilabel" else len(names)
    ignore = record.ignore_index
    tally = Tally(np.zeros((count, 2, 2) if record.task == "multilabel" else (max(count, 2),) * 2, np.int64))
    for stem, image, target, nodata in pairs:
        probs = predictor.predict_probabilities(image, stem, nodata)
        filled = np.nan_to_num(probs, nan=0.0)  # no-data pixels: scored as the network sees them
        predicted = predictor.decode_indices(filled)
        counter = ConfusionCounter(record.task, count, ignore)
        for band in _bands(target.shape[-2], target.shape[-1]):
            counter.update(torch.from_numpy(np.ascontiguousarray(predicted[..., band, :]))[None],
                           torch.from_numpy(np.ascontiguousarray(target[..., band, :]))[None])
        matrix = counter.matrix().numpy()
        tally.matrix += matrix
        result = scores(matrix, names, record.task)
        row: dict[str, Any] = {"stem": stem, "dice": result["headline"], "iou": result["mean_iou_fg"],
                               "pixel_error": result["pixel_error"]}
        for c in result["per_class"]:
            row[f"dice_{c['name']}"] = c["dice"]
        if record.task == "binary" and rand_objects is not None:
            row["rand_error"] = adapted_rand_error(predicted, target, rand_objects, ignore)
        tally.rows.append(row)
        tally.images += 1
        if loss is not None:
            tally.loss_sum += float(loss(_as_logits(filled, record.task), torch.from_numpy(target)[None]))
        if masks_out is not None:
            _write_mask(masks_out, stem, image, probs, predictor)
    return tally


def summarize(tally: Tally, record: SavedModel, *, split: str, threshold: float,
              rand_objects: str | None) -> dict[str, Any]:
    """summary.json: the scores of the summed confusion counts, and the per-image rows."""
    summary = scores(tally.matrix, record.class_names, record.task)
    summary.update(split=split, images=tally.images, task=record.task, threshold=threshold,
                   confusion=tally.matrix.tolist(), model=record.source)
    if record.task == "binary":
        rand = [r["rand_error"] for r in tally.rows if r.get("rand_error") is not None]
        summary["adapted_rand_error"] = float(np.mean(rand)) if rand else None
        summary["rand_objects"] = rand_objects
    summary["per_image"] = tally.rows
    return summary


def rand_objects_for(choice: str, names: list[str]) -> str:
    """Which regions the adapted Rand error compares: the foreground objects (cells), or
    the regions the foreground separates when it is a boundary class (ISBI membranes)."""
    if choice != "auto":
        return choice
    boundary_words = ("membrane", "boundary", "border", "edge", "contour")
    foreground = names[1].lower() if len(names) > 1 else ""
    return "background" if any(word in foreground for word in boundary_words) else "foreground"


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """summary.json (without the per-image rows) and per_image.csv, atomically."""
    compact = {k: v for k, v in summary.items() if k != "per_image"}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(compact, indent=2))
    rows = summary["per_image"]
    text = io.StringIO()
    columns = list(rows[0]) if rows else ["stem"]
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(out / PER_IMAGE_FILE, text.getvalue())


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


# --- helpers ---------------------------------------------------------------------------------


def _claim(out: Path, overwrite: bool) -> None:
    existing = [out / name for name in (SUMMARY_FILE, PER_IMAGE_FILE, PREDICTIONS, "confusion.png")
                if (out / name).exists()]
    if existing and not overwrite:
        raise UnetkitError(f"--out {out}: {existing[0]} already exists, and unetkit never writes over a file: "
                           "choose another --out, or pass --overwrite to replace the evaluation.")
    if existing:
        import shutil

        shutil.rmtree(out / PREDICTIONS, ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UnetkitError(f"--out {out}: cannot be created ({error.strerror or error}); choose another folder.") \
            from None


def _pairs(dataset: Any, progress: bool) -> Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    from unetkit.progress import bar

    with bar(len(dataset), "evaluate", "image", progress) as shown:
        for index in range(len(dataset)):
            image, target, nodata = dataset.load_with_nodata(index)
            yield dataset.stems[index], image, target, nodata
            shown.update(1)


def _bands(height: int, width: int) -> Iterable[slice]:
    rows = max(1, ROWS_PER_BAND // max(width, 1))
    for top in range(0, height, rows):
        yield slice(top, top + rows)


def _as_logits(probs: np.ndarray, task: str) -> torch.Tensor:
    """Probabilities as logits the loss takes: log p for softmax (softmax(log p) = p), the
    logit for a sigmoid; exact up to rounding when one tile covers the image."""
    p = torch.from_numpy(probs)[None].clamp(1e-7, 1 - 1e-7)
    return p.log() if task == "multiclass" else torch.logit(p)


def _write_mask(folder: Path, stem: str, image: np.ndarray, probs: np.ndarray, predictor: Predictor) -> None:
    from unetkit.infer.outputs import write_outputs as write_prediction

    mask = predictor.decode(probs)
    write_prediction(Job(Path(stem), folder / stem), image, probs, mask, predictor.record)


__all__ = ["PER_IMAGE_FILE", "PREDICTIONS", "SUMMARY_FILE", "Tally", "evaluate", "format_table", "rand_objects_for",
           "score", "summarize", "write_outputs"]
