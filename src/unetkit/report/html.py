"""`unetkit report RUN_DIR`: one self-contained HTML page about a run.

Config, training curves, the per-class evaluation table, the confusion matrix, and a grid of
validation samples (input, ground truth, prediction, error map), worst first — all images
embedded as data URIs, so the single file can be mailed or archived.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from unetkit.errors import UnetkitError
from unetkit.infer.outputs import display_rgb
from unetkit.nn import decode
from unetkit.report.overlays import FALSE_NEGATIVE, FALSE_POSITIVE, colorize, error_map
from unetkit.train.checkpoint import atomic_write_text, load, resolve_folder
from unetkit.train.device import autocast, pick_device, pick_precision

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{image-rendering:pixelated;max-width:100%}
.grid img{width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(4,1fr);gap:6px;align-items:start}
.grid figure{margin:0}.grid figcaption{font-size:.8em;color:#555}
.row{margin-bottom:1em;border-bottom:1px solid #eee;padding-bottom:.5em}
pre{background:#f7f7f7;padding:1em;overflow:auto;max-height:24em}
.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #999;vertical-align:middle}
"""


def build_report(run_dir: str | Path, data: str | Path | None = None, samples: int = 12) -> Path:
    """Write RUN_DIR/report.html (evaluating the best model first if RUN_DIR/eval is missing)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UnetkitError(f"{run_dir}: not a training run (no config.yaml); pass the --out folder of `unetkit train`.")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = Path(data or config.get("data", ""))
    folder = resolve_folder(run_dir / "best")
    summary_path = run_dir / "eval" / "summary.json"
    if not summary_path.is_file():
        if not data.is_dir():
            raise UnetkitError(f"{data}: the run's data set is not there; pass --data DIR to evaluate on it.")
        from unetkit.train.evaluate import evaluate

        evaluate(folder, data, out=run_dir / "eval")
    summary = json.loads(summary_path.read_text())
    rows = _read_csv(run_dir / "eval" / "per_image.csv")
    model, meta = load(folder)
    parts = [
        f"<h1>unetkit run: {html.escape(run_dir.name)}</h1>",
        f"<p class=sub>{html.escape(summary['task'])} segmentation, {summary['images']} images of the "
        f"{html.escape(summary['split'])} split; model {html.escape(str(folder))}</p>",
        "<h2>Evaluation</h2>",
        _score_table(summary, meta),
        "<h2>Training curves</h2>",
        _img_tag(run_dir / "progress.png", "training curves"),
        "<h2>Confusion matrix</h2>",
        _img_tag(run_dir / "eval" / "confusion.png", "confusion matrix"),
        "<h2>Validation samples, worst first</h2>",
        _legend(),
        _sample_grid(model, meta, data, rows, samples) if data.is_dir() else "<p>(data set not found)</p>",
        "<h2>Config</h2>",
        f"<pre>{html.escape((run_dir / 'config.yaml').read_text())}</pre>",
    ]
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>unetkit report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(p for p in parts if p)}</body></html>"
    )
    out = run_dir / "report.html"
    atomic_write_text(out, page)
    return out


def _score_table(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    colors = {c["name"]: c.get("color", [0, 0, 0]) for c in meta["data"]["classes"]}

    def f(v: float | None) -> str:
        return "empty" if v is None else f"{v:.4f}"

    lines = ["<table><tr><th>class</th><th>IoU</th><th>Dice</th><th>precision</th><th>recall</th>"
             "<th>pixels</th></tr>"]
    for c in summary["per_class"]:
        r, g, b = colors.get(c["name"], [0, 0, 0])
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


def _legend() -> str:
    def sw(rgb: tuple[int, int, int]) -> str:
        return f"<span class=swatch style='background:rgb{rgb}'></span>"

    return (f"<p>Error map: {sw(FALSE_POSITIVE)} false positive (predicted, not true) · "
            f"{sw(FALSE_NEGATIVE)} false negative (true, missed); correct pixels show the dimmed image.</p>")


def _sample_grid(model: torch.nn.Module, meta: dict[str, Any], data: Path, rows: list[dict[str, str]],
                 count: int) -> str:
    from unetkit.data import DataSpec, SegmentationDataset

    spec = DataSpec.from_dict(meta["data"])
    ranked = sorted(rows, key=lambda r: float(r["dice"]) if r.get("dice") else 2.0)[:count]
    if not ranked:
        return "<p>(no samples)</p>"
    dataset = SegmentationDataset(data, [r["stem"] for r in ranked], spec)
    device = pick_device("auto")
    precision = pick_precision("auto", device)
    colors = [c.get("color", [0, 0, 0]) for c in spec.classes]
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    model = model.to(device)
    blocks = []
    for row, item in zip(ranked, dataset):
        with torch.inference_mode(), autocast(device, precision):
            logits = model(item["image"][None].to(device))
        predicted = decode(logits.float(), spec.task, meta.get("threshold", 0.5))[0].cpu().numpy()
        target = item["mask"].numpy()
        if spec.task == "multilabel":  # show the highest active label per pixel, 0 = none
            predicted, target = _flatten_labels(predicted), _flatten_labels(target, spec.ignore_index)
            colors = [[0, 0, 0]] + [c.get("color", [0, 0, 0]) for c in spec.classes]
        raw = item["image"].numpy().transpose(1, 2, 0) * std + mean
        shown = display_rgb(raw)
        dice = row.get("dice") or "–"
        cells = [
            ("input", shown),
            ("ground truth", colorize(target, colors, spec.ignore_index)),
            ("prediction", colorize(predicted, colors)),
            ("errors", error_map(predicted, target, shown, spec.ignore_index)),
        ]
        figures = "".join(
            f"<figure>{_png_tag(image, label)}<figcaption>{label}</figcaption></figure>" for label, image in cells
        )
        blocks.append(f"<div class=row><b>{html.escape(row['stem'])}</b> — Dice {html.escape(str(dice))}"
                      f"<div class=grid>{figures}</div></div>")
    return "".join(blocks)


def _flatten_labels(planes: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    flat = np.zeros(planes.shape[1:], np.int64)
    for k in range(planes.shape[0]):
        flat[planes[k] == 1] = k + 1
    if ignore_index is not None:
        flat[(planes == ignore_index).any(0)] = ignore_index
    return flat


def _png_tag(image: np.ndarray, alt: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


def _img_tag(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p>({html.escape(alt)} not available)</p>"
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
