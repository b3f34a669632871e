"""What the server makes of a segmentation: areas, previews for the page, files to download.

The files are those `unetkit predict` writes, made in memory: the mask (palette PNG, the
same bytes; a TIFF where predict writes one), the GeoTIFF mask for a georeferenced input,
the overlay and the probabilities (float16 TIFF, one band per class). The page draws small
previews itself (the image, the class index of each pixel, each class's probability as a
grey level), so the opacity slider and the class toggles need no round trip; the full-size
arrays stay in a `ResultStore`, bounded in bytes, for downloads and band changes.
"""

from __future__ import annotations

import base64
import io
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetkit.data.io import encode_geo_mask, encode_mask_png, encode_mask_tiff, to_hwc
from unetkit.infer.outputs import display_rgb
from unetkit.serve.models import Segmentation, class_table

NODATA_INDEX = 255  # the class index the page's label preview holds where the image has no data


@dataclass
class Result:
    """One image's segmentation, kept for the page's downloads and band changes."""

    name: str
    model: str
    image: np.ndarray  # (H, W, C) as read
    mask: np.ndarray
    probs: np.ndarray  # (K, H, W) float16, NaN where no data
    nodata: np.ndarray | None
    geo_profile: dict | None
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    created: float = field(default_factory=time.time)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.nodata is None else self.nodata.nbytes
        return self.image.nbytes + self.mask.nbytes + self.probs.nbytes + extra

    @property
    def stem(self) -> str:
        return file_stem(self.name)


def file_stem(name: str) -> str:
    """A safe file stem for downloads: the upload's, as predict names its outputs (ASCII
    letters, digits, - _ . kept; anything else becomes _)."""
    stem = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in stem).strip("._")
    return safe[:100] or "image"


class ResultStore:
    """The latest results, oldest dropped first once their bytes pass `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: Result) -> bool:
        """Keep `result` (False when it alone is larger than the store)."""
        if result.nbytes > self.max_bytes:
            return False
        with self._lock:
            self._items[result.id] = result
            total = sum(r.nbytes for r in self._items.values())
            while total > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                total -= dropped.nbytes
        return True

    def get(self, result_id: str) -> Result | None:
        with self._lock:
            result = self._items.get(result_id)
            if result is not None:
                self._items.move_to_end(result_id)
            return result

    def __len__(self) -> int:
        return len(self._items)


# --- numbers -----------------------------------------------------------------------------------


def class_areas(record: Any, mask: np.ndarray, nodata: np.ndarray | None) -> dict[str, Any]:
    """Pixels of each class and their share of the pixels with data (multilabel: per label)."""
    height, width = mask.shape[-2:]
    missing = int(nodata.sum()) if nodata is not None else 0
    with_data = height * width - missing
    rows = class_table(record)
    for row in rows:
        if record.task == "multilabel":
            where = mask[row["index"]] == 1
            pixels = int(np.count_nonzero(where & ~nodata)) if nodata is not None else int(np.count_nonzero(where))
        else:
            pixels = int(np.count_nonzero(mask == row["id"]))
        row["pixels"] = pixels
        row["share"] = pixels / with_data if with_data else 0.0
    return {"width": int(width), "height": int(height), "pixels": int(height * width), "nodata_pixels": missing,
            "data_pixels": with_data, "classes": rows}


def confidence(probs: np.ndarray, task: str) -> float | None:
    """The mean probability of the decoded answer over the pixels with data (a score 0..1)."""
    if task == "binary":
        p = probs[0]
        best = np.maximum(p, 1 - p)
    elif task == "multilabel":
        best = np.maximum(probs, 1 - probs).mean(axis=0)
    else:
        best = probs.max(axis=0)
    finite = best[np.isfinite(best)]
    return float(finite.mean()) if finite.size else None


# --- files, as predict writes them ---------------------------------------------------------------


def mask_file(record: Any, mask: np.ndarray, name: str = "the mask") -> tuple[bytes, str, str]:
    """(bytes, extension, media type) of the mask file `unetkit predict` writes: a palette PNG
    of class ids, or a TIFF for multilabel stacks and ids above 255."""
    palette = record.palette()
    if mask.ndim == 2 and palette is not None:
        return encode_mask_png(mask, palette, name), ".png", "image/png"
    return encode_mask_tiff(mask, name), ".tif", "image/tiff"


def geo_mask_file(record: Any, segmentation_mask: np.ndarray, probs: np.ndarray, profile: dict) -> bytes:
    """The georeferenced mask predict writes beside a GeoTIFF input (nodata tagged if any)."""
    has_nodata = bool(np.isnan(probs[0]).any()) if probs.dtype.kind == "f" else False
    return encode_geo_mask(segmentation_mask, profile, record.nodata_value() if has_nodata else None)


def probabilities_file(probs: np.ndarray) -> bytes:
    """The probabilities as predict's `_prob.tif`: float16, one band per class, zlib."""
    import tifffile

    half = (to_hwc(probs) if probs.shape[0] > 1 else probs[0]).astype(np.float16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, half, photometric="minisblack", compression="zlib")
    return buffer.getvalue()


def png(array: np.ndarray) -> bytes:
    """Plain PNG of an (H, W) or (H, W, 3) uint8 array (previews, overlays)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --- previews for the page ---------------------------------------------------------------------


def preview_grid(height: int, width: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a nearest-neighbour preview no larger than `side`."""
    scale = max(height, width) / side if max(height, width) > side else 1.0
    rows = np.minimum((np.arange(max(1, round(height / scale))) * scale).astype(np.int64), height - 1)
    cols = np.minimum((np.arange(max(1, round(width / scale))) * scale).astype(np.int64), width - 1)
    return rows, cols


def display_preview(image: np.ndarray, grid: tuple[np.ndarray, np.ndarray], bands: Sequence[int]) -> bytes:
    rows, cols = grid
    small = image[np.ix_(rows, cols)][:, :, list(bands)]
    return png(display_rgb(small))


def label_preview(record: Any, mask: np.ndarray, nodata: np.ndarray | None,
                  grid: tuple[np.ndarray, np.ndarray]) -> bytes:
    """Class index per preview pixel (grey PNG; 255 where no data); multilabel: the labels'
    bits as an RGB PNG (bit i of r << 16 | g << 8 | b is label i, up to 24 labels)."""
    rows, cols = grid
    if record.task == "multilabel":
        small = mask[:, rows][:, :, cols].astype(np.uint32)
        bits = np.zeros(small.shape[1:], np.uint32)
        for label in range(min(24, small.shape[0])):
            bits |= (small[label] & 1) << label
        rgb = np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=-1).astype(np.uint8)
        return png(rgb)
    small = mask[np.ix_(rows, cols)].astype(np.int64)
    ids = record.class_ids()
    lookup = np.full(int(max(ids.max(initial=0), small.max(initial=0))) + 1, NODATA_INDEX, np.uint8)
    lookup[ids] = np.arange(len(ids)).clip(0, NODATA_INDEX - 1)
    index = lookup[small]
    if nodata is not None:
        index[nodata[np.ix_(rows, cols)]] = NODATA_INDEX
    return png(index)


def probability_previews(probs: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> list[bytes]:
    """Each output's probability as a grey PNG (0..255); 0 where no data."""
    rows, cols = grid
    out = []
    for plane in probs:
        small = np.nan_to_num(plane[np.ix_(rows, cols)].astype(np.float32), nan=0.0)
        out.append(png((np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)))
    return out


def default_bands(bands: int) -> list[int]:
    """The bands `display_rgb` shows: the first three, or the first one for one or two."""
    return [0, 1, 2] if bands >= 3 else [0]


def parse_bands(text: str | None, bands: int) -> list[int] | None:
    """'3,2,1' (1-based, as people count bands) -> [2, 1, 0]; None when not given. One or three."""
    if text is None or not text.strip():
        return None
    try:
        chosen = [int(part) - 1 for part in text.split(",")]
    except ValueError:
        raise ValueError(f"bands={text!r}: give one or three band numbers such as 3,2,1") from None
    if len(chosen) not in (1, 3) or not all(0 <= b < bands for b in chosen):
        raise ValueError(f"bands={text!r}: give one or three band numbers between 1 and {bands}")
    return chosen


def page_payload(result: Result, record: Any, segmentation: Segmentation, side: int, kept: bool) -> dict[str, Any]:
    """The JSON the page draws a result from (previews as base64 PNGs)."""
    image = result.image
    grid = preview_grid(image.shape[0], image.shape[1], side)
    bands = default_bands(image.shape[2])
    areas = class_areas(record, result.mask, result.nodata)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    outputs = probability_previews(result.probs, grid)
    names = [row["name"] for row in areas["classes"]]
    if record.task == "binary":
        prob_names = [names[1] if len(names) > 1 else "foreground"]
        prob_index = [1]
    else:
        prob_names = names[: len(outputs)]
        prob_index = list(range(len(outputs)))
    return {
        "id": result.id,
        "kept": kept,
        "name": result.name,
        "stem": result.stem,
        "model": result.model,
        "task": record.task,
        **areas,
        "bands": int(image.shape[2]),
        "dtype": image.dtype.name,
        "default_bands": [b + 1 for b in bands],
        "preview": {"width": int(len(grid[1])), "height": int(len(grid[0])),
                    "scale": float(image.shape[1] / len(grid[1]))},
        "display": b64(display_preview(image, grid, bands)),
        "labels": b64(label_preview(record, result.mask, result.nodata, grid)),
        "probabilities": [{"name": n, "index": i, "png": b64(data)}
                          for n, i, data in zip(prob_names, prob_index, outputs)],
        "seconds": round(segmentation.seconds, 3),
        "tiles": segmentation.tiles,
        "geo": result.geo_profile is not None,
        "mask_extension": ".png" if (result.mask.ndim == 2 and record.palette() is not None) else ".tif",
        "confidence": confidence(segmentation.probs, record.task),
    }


__all__ = ["NODATA_INDEX", "Result", "ResultStore", "class_areas", "confidence", "default_bands", "file_stem", "geo_mask_file",
           "label_preview", "mask_file", "page_payload", "parse_bands", "png", "preview_grid",
           "probabilities_file", "probability_previews"]
