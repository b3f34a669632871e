"""`unetkit report RUN_DIR`: one self-contained HTML page about a run, drawn from its files.

The run (run.json: when, how long, on what, how many epochs of how many, why it stopped,
the best epoch), the plan, the per-class scores, the training curves, every epoch, the
confusion matrix, a score per image, validation samples worst first (input, ground truth,
prediction, error map) and the config. Nothing is recomputed: the scores and the predicted
masks are the evaluation's (RUN_DIR/eval, made by `unetkit evaluate` first when missing),
exactly what `unetkit predict` writes. Images are embedded as data URIs, so the single file
can be mailed or archived.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from unetkit.atomic import atomic_write_text
from unetkit.errors import UnetkitError
from unetkit.infer.evaluate import PER_IMAGE_FILE, PREDICTIONS, SUMMARY_FILE
from unetkit.infer.outputs import display_rgb
from unetkit.model.record import SavedModel
from unetkit.model.store import read_record, resolve_folder
from unetkit.report.overlays import FALSE_NEGATIVE, FALSE_POSITIVE, colorize, error_map
from unetkit.report.plots import confusion_png, progress_png
from unetkit.train.run_folder import CONFIG_FILE, read_csv, read_history, read_run_info

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
table.facts td{text-align:left}tr.best td{background:#eaf7ea;font-weight:600}
img{image-rendering:pixelated;max-width:100%}
.grid img{width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(4,1fr);gap:6px;align-items:start}
.grid figure{margin:0}.grid figcaption{font-size:.8em;color:#555}
.row{margin-bottom:1em;border-bottom:1px solid #eee;padding-bottom:.5em}
.scroll{max-height:24em;overflow:auto;display:inline-block}
pre{background:#f7f7f7;padding:1em;overflow:auto;max-height:24em}
.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #999;vertical-align:middle}
"""


def build_report(run_dir: str | Path, data: str | Path | None = None, samples: int = 12,
                 overwrite: bool = False) -> Path:
    """Write RUN_DIR/report.html (evaluating the best model into RUN_DIR/eval first if that is missing)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UnetkitError(f"{run_dir}: not a training run (no config.yaml); pass the --out folder of `unetkit train`.")
    out = run_dir / "report.html"
    if out.exists() and not overwrite:
        raise UnetkitError(f"{out} already exists, and unetkit never writes over a file: pass --overwrite to "
                           "replace it.")
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    data = Path(data or config.get("data", ""))
    folder = resolve_folder(run_dir / "best")
    record = read_record(folder)
    eval_dir = run_dir / "eval"
    if not (eval_dir / SUMMARY_FILE).is_file():
        if not data.is_dir():
            raise UnetkitError(f"{data}: the run's data set is not there; pass --data DIR to evaluate on it.")
        from unetkit.infer.evaluate import evaluate

        evaluate(folder, data, out=eval_dir)
    summary = json.loads((eval_dir / SUMMARY_FILE).read_text())
    rows = read_csv(eval_dir / PER_IMAGE_FILE)
    info = read_run_info(run_dir)
    history = read_history(run_dir)
    ranked = sorted(rows, key=lambda r: r["dice"] if isinstance(r.get("dice"), (int, float)) else 2.0)
    names = [c["name"] for c in summary["per_class"]]
    parts = [
        f"<h1>unetkit run: {html.escape(run_dir.resolve().name)}</h1>",
        f"<p class=sub>{html.escape(summary['task'])} segmentation of {html.escape(str(data))}; "
        f"scored on {summary['images']} images of the {html.escape(summary['split'])} split with "
        f"{html.escape(str(folder))}</p>",
        "<h2>Run</h2>",
        _run_facts(info, history, record),
        _plan(run_dir),
        "<h2>Evaluation</h2>",
        _score_table(summary, record),
        "<h2>Training curves</h2>",
        _png_tag(progress_png(history, info.get("best_epoch")), "training curves") if history else
        "<p>(no epoch finished yet)</p>",
        "<h2>Epochs</h2>",
        _epoch_table(history, info.get("best_epoch")),
        "<h2>Confusion matrix</h2>",
        _png_tag(confusion_png(summary["confusion"], names), "confusion matrix") if summary["task"] != "multilabel"
        else "<p>(multilabel: one 2x2 matrix per label in summary.json)</p>",
        "<h2>Scores per image, worst first</h2>",
        _image_table(ranked),
        "<h2>Validation samples, worst first</h2>",
        _legend(),
        _sample_grid(record, data, eval_dir / PREDICTIONS, ranked[:samples]) if data.is_dir()
        else "<p>(data set not found)</p>",
        "<h2>Config</h2>",
        f"<pre>{html.escape((run_dir / CONFIG_FILE).read_text())}</pre>",
    ]
    title = f"unetkit report: {run_dir.resolve().name}"
    page = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(p for p in parts if p)}</body></html>"
    )
    atomic_write_text(out, page)
    return out


# --- sections --------------------------------------------------------------------------------


def _run_facts(info: dict[str, Any], history: list[dict[str, Any]], record: SavedModel) -> str:
    if not info:
        return "<p>(no run.json: this run was made by an earlier version)</p>"
    seconds = [row["seconds"] for row in history if isinstance(row.get("seconds"), (int, float))]
    val_seconds = [row["val_seconds"] for row in history if isinstance(row.get("val_seconds"), (int, float))]
    best = info.get("best_metric")
    facts = [
        ("started", info.get("started")),
        ("finished", info.get("finished") or "not finished (still running, or stopped by a kill)"),
        ("wall time", _duration(info.get("started"), info.get("finished"))),
        ("training time", f"{info.get('training_seconds', 0):.1f} s in epochs"
                          + (f", {sum(val_seconds):.1f} s validating" if val_seconds else "")),
        ("epochs", f"{info.get('epochs_done')} of {info.get('epochs_planned')} planned "
                   f"({info.get('steps_per_epoch')} steps each)"),
        ("stopped", info.get("stopped") or "not yet"),
        ("best epoch", f"{info.get('best_epoch')} (validation Dice {best:.4f})" if best is not None else "none"),
        ("epoch time", f"{np.mean(seconds):.2f} s on average, {min(seconds):.2f}-{max(seconds):.2f} s"
         if seconds else "-"),
        ("device", f"{info.get('device')} {info.get('precision')}, {info.get('processes', 1)} process(es), "
                   f"torch {info.get('torch')}"),
        ("network", f"{info.get('network')}, {info.get('parameters', 0):,} parameters; "
                    + ", ".join(f"{k} {v}" for k, v in record.options.to_dict().items())),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f"<table class=facts>{cells}</table>"


def _plan(run_dir: Path) -> str:
    path = run_dir / "plan.json"
    if not path.is_file():
        return ""
    try:
        plan = json.loads(path.read_text())
    except ValueError:
        return "<p>(plan.json is unreadable)</p>"
    choices = plan.get("choices") or []
    rows = "".join(
        f"<tr><td>{html.escape(str(c.get('setting')))}</td><td>{html.escape(str(c.get('value')))}</td>"
        f"<td style='text-align:left'>{html.escape(str(c.get('reason')))}</td></tr>" for c in choices
    )
    head = html.escape(plan.get("summary", ""))
    return (f"<h2>Plan</h2><p>{head}</p><table><tr><th>setting</th><th>value</th><th>why</th></tr>{rows}</table>"
            if rows else "")


def _score_table(summary: dict[str, Any], record: SavedModel) -> str:
    colors = dict(zip(record.class_names, record.colors()))

    def f(v: float | None) -> str:
        return "empty" if v is None else f"{v:.4f}"

    lines = ["<table><tr><th>class</th><th>IoU</th><th>Dice</th><th>precision</th><th>recall</th>"
             "<th>pixels</th></tr>"]
    for c in summary["per_class"]:
        r, g, b = colors.get(c["name"], (0, 0, 0))
        lines.append(
            f"<tr><td><span class=swatch style='background:rgb({r},{g},{b})'></span> {html.escape(c['name'])}</td>"
            f"<td>{f(c['iou'])}</td><td>{f(c['dice'])}</td><td>{f(c['precision'])}</td><td>{f(c['recall'])}</td>"
            f"<td>{c['support']:,}</td></tr>"
        )
    lines.append("</table>")
    extra = [f"mean Dice without background <b>{f(summary['mean_dice_fg'])}</b>",
             f"mean IoU without background {f(summary['mean_iou_fg'])}",
             f"pixel accuracy {f(summary['pixel_accuracy'])}"]
    if summary.get("adapted_rand_error") is not None:
        extra.append(f"adapted Rand error {f(summary['adapted_rand_error'])}")
    return "".join(lines) + "<p>" + " · ".join(extra) + "</p>"


def _epoch_table(history: list[dict[str, Any]], best_epoch: int | None) -> str:
    if not history:
        return ""
    columns = [("epoch", "epoch"), ("train_loss", "train loss"), ("val_loss", "val loss"), ("val_dice", "val Dice"),
               ("val_iou", "val IoU"), ("lr", "lr"), ("seconds", "seconds"), ("images_per_s", "images/s"),
               ("val_seconds", "validation s")]
    head = "".join(f"<th>{label}</th>" for _, label in columns)
    body = []
    for row in history:
        cells = "".join(f"<td>{_cell(row.get(key))}</td>" for key, _ in columns)
        body.append(f"<tr{' class=best' if row.get('epoch') == best_epoch else ''}>{cells}</tr>")
    return f"<div class=scroll><table><tr>{head}</tr>{''.join(body)}</table></div>"


def _image_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(no images)</p>"
    keys = [k for k in rows[0] if k != "stem"]
    head = "<th>image</th>" + "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{html.escape(str(r['stem']))}</td>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<div class=scroll><table><tr>{head}</tr>{body}</table></div>"


def _legend() -> str:
    def sw(rgb: tuple[int, int, int]) -> str:
        return f"<span class=swatch style='background:rgb{rgb}'></span>"

    return (f"<p>Error map: {sw(FALSE_POSITIVE)} false positive (predicted, not true) · "
            f"{sw(FALSE_NEGATIVE)} false negative (true, missed); correct pixels show the dimmed image.</p>")


def _sample_grid(record: SavedModel, data: Path, predictions: Path, ranked: list[dict[str, Any]]) -> str:
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.io import read_mask_raw

    if not ranked:
        return "<p>(no samples)</p>"
    if not predictions.is_dir():
        return ("<p>(this evaluation kept no predicted masks; run `unetkit evaluate --overwrite` to make them)</p>")
    spec = record.data
    dataset = SegmentationDataset(data, [str(r["stem"]) for r in ranked], spec)
    colors = [list(c) for c in record.colors()]
    lookup = {int(i): k for k, i in enumerate(record.class_ids())}
    blocks = []
    for index, row in enumerate(ranked):
        image, target = dataset.load(index)
        mask_path = next((p for p in (predictions / f"{row['stem']}.png", predictions / f"{row['stem']}.tif")
                          if p.is_file()), None)
        if mask_path is None:
            continue
        stored, _ = read_mask_raw(mask_path)
        if record.task == "multilabel":  # show the highest active label per pixel, 0 = none
            predicted, target = _flatten_labels(stored), _flatten_labels(target, spec.ignore_index)
            shown_colors = [[0, 0, 0]] + colors
        else:
            predicted = np.vectorize(lambda v: lookup.get(int(v), 0), otypes=[np.int64])(stored) \
                if stored.size < 4 else _ids_to_indices(stored, lookup)
            shown_colors = colors
        shown = display_rgb(image)
        dice = row.get("dice")
        cells = [
            ("input", shown),
            ("ground truth", colorize(target, shown_colors, spec.ignore_index)),
            ("prediction", colorize(predicted, shown_colors)),
            ("errors", error_map(predicted, target, shown, spec.ignore_index)),
        ]
        figures = "".join(
            f"<figure>{_array_tag(picture, label)}<figcaption>{label}</figcaption></figure>" for label, picture in cells
        )
        blocks.append(f"<div class=row><b>{html.escape(str(row['stem']))}</b> — Dice {_cell(dice)}"
                      f"<div class=grid>{figures}</div></div>")
    return "".join(blocks)


def _ids_to_indices(stored: np.ndarray, lookup: dict[int, int]) -> np.ndarray:
    table = np.zeros(max(int(stored.max(initial=0)), max(lookup, default=0)) + 1, np.int64)
    for class_id, index in lookup.items():
        table[class_id] = index
    return table[stored.astype(np.int64)]


def _flatten_labels(planes: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    flat = np.zeros(planes.shape[1:], np.int64)
    for k in range(planes.shape[0]):
        flat[planes[k] == 1] = k + 1
    if ignore_index is not None:
        flat[(planes == ignore_index).any(0)] = ignore_index
    return flat


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _duration(start: str | None, end: str | None) -> str:
    try:
        seconds = (datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return "-"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


def _array_tag(image: np.ndarray, alt: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return _png_tag(buffer.getvalue(), alt)


def _png_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"
