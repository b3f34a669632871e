"""The models a server holds: loaded once, warmed up, and run one request at a time each.

Each `--model` becomes one `Predictor` (tiling, normalisation, decoding: the same code as
`unetkit predict`), created at start-up and warmed with one forward pass of a full tile, so
the first request costs what every later one does. A model runs one image at a time (a
lock per model); its engine is wrapped to count forward passes, which is how the page shows
the progress of a large image being tiled.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.errors import UnetkitError

Progress = Callable[[int, int], None]  # (forward passes done, passes in all)


@dataclass(frozen=True)
class PredictorSettings:
    """How every model runs (the flags `unetkit predict` has of the same names)."""

    tile: int | None = None
    overlap: float = 0.5
    tta: str = "none"
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    threshold: float | None = None
    rescale: str = "auto"

    def kwargs(self) -> dict[str, Any]:
        return {"tile": self.tile, "overlap": self.overlap, "tta": self.tta, "batch_size": self.batch_size,
                "device": self.device, "precision": self.precision, "threshold": self.threshold,
                "rescale": self.rescale}


@dataclass
class Segmentation:
    """What one image gave: probabilities (K, H, W) float32 (NaN where no data) and the mask
    as `unetkit predict` writes it (class ids, or (L, H, W) 0/1 for multilabel)."""

    probs: np.ndarray
    mask: np.ndarray
    nodata: np.ndarray | None
    seconds: float
    tiles: int


@dataclass
class ServedModel:
    """One loaded model: its name in requests, its predictor, and the lock it runs under."""

    name: str
    path: str
    predictor: Any  # unetkit.infer.Predictor
    lock: threading.Lock = field(default_factory=threading.Lock)
    warmup_seconds: float = 0.0

    @property
    def record(self) -> Any:
        return self.predictor.record

    def segment(self, image: np.ndarray, nodata: np.ndarray | None, name: str,
                progress: Progress | None = None) -> Segmentation:
        """Segment one image exactly as `unetkit predict` does for a single file."""
        predictor = self.predictor
        with self.lock:
            started = time.perf_counter()
            height, width = image.shape[:2]
            tiles = predictor.tile_count(height, width)
            counter = predictor.engine if isinstance(predictor.engine, CountingEngine) else None
            if counter is not None:
                counter.start(passes(tiles, predictor.batch_size, predictor.tta), progress)
            try:
                probs = predictor.predict_many([image], [name], [nodata])[0]
            finally:
                if counter is not None:
                    counter.stop()
            mask = predictor.decode(probs)
            missing = np.isnan(probs[0])
            return Segmentation(probs, mask, missing if missing.any() else None,
                                time.perf_counter() - started, tiles)

    def card(self) -> dict[str, Any]:
        """What the page and `GET /api/models` show about the model (JSON-safe)."""
        record = self.record
        predictor = self.predictor
        engine = getattr(predictor.engine, "inner", predictor.engine)
        return json_safe({
            "name": self.name,
            "source": self.path,
            "task": record.task,
            "classes": class_table(record),
            "bands": record.in_channels,
            "include_alpha": record.include_alpha,
            "input": record.input.to_json(),
            "normalisation": {"mean": list(record.mean) if record.mean else None,
                              "std": list(record.std) if record.std else None},
            "threshold": predictor.threshold,
            "patch_size": record.patch_size,
            "tile": predictor.tile,
            "overlap": predictor.overlap,
            "tta": predictor.tta,
            "epoch": record.epoch,
            "network": record.options.to_dict(),
            "scores": record.scores,
            "plan": record.plan,
            "nodata_value": record.nodata_value(),
            "engine": getattr(engine, "name", "torch"),
            "device": str(getattr(engine, "device", "cpu")),
            "precision": getattr(engine, "precision", None),
            "warmup_seconds": round(self.warmup_seconds, 3),
        })


class CountingEngine:
    """The predictor's engine, counting its calls (one per batch of tiles and TTA view)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._done = 0
        self._total = 0
        self._report: Progress | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start(self, total: int, report: Progress | None) -> None:
        self._done, self._total, self._report = 0, total, report

    def stop(self) -> None:
        self._report = None

    def __call__(self, batch: Any) -> Any:
        out = self.inner(batch)
        self._done += 1
        if self._report is not None:
            self._report(min(self._done, self._total), self._total)
        return out


def passes(tiles: int, batch_size: int, tta: str) -> int:
    """Forward passes for an image of `tiles` tiles: batches times test-time views."""
    views = {"none": 1, "flips": 4, "full": 8}.get(tta, 1)
    return max(1, math.ceil(tiles / max(batch_size, 1))) * views


def class_table(record: Any) -> list[dict[str, Any]]:
    """One row per decoded class (per label for multilabel): index, id, name, colours."""
    names = record.class_names
    colors = record.colors()
    overlay = record.overlay_colors()
    ids = record.class_ids().tolist() if record.task != "multilabel" else list(range(len(names)))
    return [{"index": index, "id": int(ids[index]), "name": names[index], "color": list(colors[index]),
             "overlay_color": None if overlay[index] is None else list(overlay[index])}
            for index in range(len(names))]


def model_name(path: str) -> str:
    """A short name for a model path: the folder's name, or RUN/best for a run's best/last."""
    clean = Path(path.rstrip("/\\"))
    parts = [p for p in clean.parts if p not in ("", ".", "/")]
    if not parts:
        return "model"
    if parts[-1] in ("best", "last") and len(parts) > 1:
        return f"{parts[-2]}/{parts[-1]}"
    return Path(parts[-1]).stem if parts[-1].lower().endswith(".onnx") else parts[-1]


def load_models(specs: Sequence[str], settings: PredictorSettings, *, warm: bool = True,
                log: Callable[[str], None] | None = None) -> dict[str, ServedModel]:
    """One ServedModel per `--model` (PATH, or NAME=PATH), created and warmed now."""
    from unetkit.infer.predictor import Predictor
    from unetkit.model.store import resolve_folder

    if not specs:
        raise UnetkitError("--model is missing: give a trained model, e.g. --model RUN/best")
    models: dict[str, ServedModel] = {}
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        where = path if path.lower().endswith(".onnx") else str(resolve_folder(path))
        if not Path(where).exists():
            raise UnetkitError(f"--model {path}: no such model folder or .onnx file; give RUN/best or a model folder")
        name = name.strip() or model_name(path)
        base, count = name, 2
        while name in models:
            name, count = f"{base}-{count}", count + 1
        predictor = Predictor(where, progress=False, **settings.kwargs())
        predictor.engine = CountingEngine(predictor.engine)
        model = ServedModel(name, where, predictor)
        if warm:
            model.warmup_seconds = warm_up(model)
        if log is not None:
            log(f"loaded {name} ({model.record.task}, {model.record.in_channels} band(s) -> "
                f"{', '.join(model.record.class_names)}) from {where}; warm-up {model.warmup_seconds:.2f} s")
        models[name] = model
    return models


def warm_up(model: ServedModel) -> float:
    """One forward pass of a full tile of plausible pixels: kernels chosen, caches filled."""
    record = model.record
    size = model.predictor.tile
    dtype = np.dtype(record.input.dtype) if record.input.dtype else np.dtype(np.float32)
    if record.input.low is not None and record.input.high is not None:
        level = [(lo + hi) / 2 for lo, hi in zip(record.input.low, record.input.high)]
    elif record.mean is not None:
        level = list(record.mean)
    else:
        level = [0.0] * record.in_channels
    image = np.empty((size, size, record.in_channels), dtype)
    image[...] = np.asarray(level, np.float64).astype(dtype)
    started = time.perf_counter()
    model.segment(image, None, "the warm-up image")
    return time.perf_counter() - started


def json_safe(value: Any) -> Any:
    """Dicts, lists and numbers JSON can hold: NaN and infinity become None, NumPy scalars plain."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


__all__ = ["PredictorSettings", "Segmentation", "ServedModel", "class_table", "json_safe", "load_models",
           "model_name"]
