"""Write what prediction produced for one image, each file atomically (data.io's writers).

- mask: OUT/<stem>.png, class ids with the class colours as the PNG palette (a TIFF when
  ids exceed 255, a multi-page TIFF of 0/1 planes for multilabel);
- GeoTIFF inputs: OUT/<stem>.tif with the input's CRS and transform (needs the geo extra);
- probabilities: OUT/<stem>_prob.npy (float16, K x H x W) or OUT/<stem>_prob.tif (float16,
  one band per class, zlib-compressed: half the size of float32, and 3 decimal digits is more
  than a probability map needs);
- overlay: OUT/<stem>_overlay.png, the image with each class's colour blended in, for a
  person to look at; the background (class 0 coloured black) is left clear, and a class whose
  colour is grey or white is drawn in a vivid colour, since it would vanish over a grey image.
Pixels where the input had no data hold the model's nodata value in the mask (the GeoTIFF's
nodata tag says so) and NaN in the probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unetkit.atomic import atomic_path
from unetkit.data.io import to_hwc, write_geo_mask, write_image, write_mask
from unetkit.infer.files import Job
from unetkit.model.record import SavedModel

PROBABILITY_FORMATS = ("tif", "npy")
OVERLAY_ALPHA = 0.5
ROWS_PER_BAND = 1024  # overlay rows blended at a time, to keep big images' memory small


def write_outputs(job: Job, image: np.ndarray, probs: np.ndarray, mask: np.ndarray, info: SavedModel, *,
                  probabilities: str | None = None, overlay: bool = False,
                  geo_profile: dict | None = None, keep_existing: bool = False) -> list[Path]:
    """Write the mask (and the asked-for extras) of `job`; returns the paths written.
    `keep_existing` leaves every file that is already there as it is (--resume)."""
    written = []

    def wanted(path: Path) -> bool:
        return not (keep_existing and path.exists())

    palette = info.palette()
    if geo_profile is not None and wanted(job.output(".tif")):
        written.append(job.output(".tif"))
        has_nodata = bool(np.isnan(probs[0]).any()) if probs.dtype.kind == "f" else False
        write_geo_mask(written[-1], mask, geo_profile, info.nodata_value() if has_nodata else None)
    if mask.ndim == 2 and palette is not None:
        if wanted(job.output(".png")):
            written.append(job.output(".png"))
            write_mask(written[-1], mask, palette)
    elif geo_profile is None and wanted(job.output(".tif")):
        written.append(job.output(".tif"))
        write_mask(written[-1], mask)
    if probabilities is not None and wanted(job.output(f"_prob.{probabilities}")):
        written.append(write_probabilities(job, probs, probabilities))
    if overlay and wanted(job.output("_overlay.png")):
        written.append(job.output("_overlay.png"))
        write_image(written[-1], overlay_image(image, mask, info))
    return written


def write_probabilities(job: Job, probs: np.ndarray, kind: str) -> Path:
    """(K, H, W) probabilities as float16: .npy as is, .tif as (H, W, K), one band per class."""
    if kind == "npy":
        path = job.output("_prob.npy")
        with atomic_path(path) as temp, open(temp, "wb") as handle:
            np.save(handle, probs.astype(np.float16))
        return path
    import tifffile

    path = job.output("_prob.tif")
    half = (to_hwc(probs) if probs.shape[0] > 1 else probs[0]).astype(np.float16)
    with atomic_path(path) as temp:
        tifffile.imwrite(temp, half, photometric="minisblack", compression="zlib")
    return path


def overlay_image(image: np.ndarray, mask: np.ndarray, info: SavedModel, alpha: float = OVERLAY_ALPHA, *,
                  hidden: Sequence[int] = (), bands: Sequence[int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8: the image for display (its `bands`, by default the first three) with
    each class's overlay colour blended in at `alpha`, except the class indices in `hidden`."""
    picture = display_rgb(image if bands is None else image[:, :, list(bands)])
    colors = [None if index in hidden else color for index, color in enumerate(info.overlay_colors())]
    if info.task == "multilabel":
        for label, color in enumerate(colors):
            if color is not None:
                _blend(picture, mask[label] == 1, np.asarray(color, np.float32), alpha)
        return picture
    ids = info.class_ids()
    for index, color in enumerate(colors):
        if color is not None:
            _blend(picture, mask == ids[index], np.asarray(color, np.float32), alpha)
    return picture


def _blend(picture: np.ndarray, where: np.ndarray, color: np.ndarray, alpha: float) -> None:
    for top in range(0, picture.shape[0], ROWS_PER_BAND):
        rows = slice(top, top + ROWS_PER_BAND)
        selected = where[rows]
        if selected.any():
            band = picture[rows]
            band[selected] = ((1 - alpha) * band[selected] + alpha * color + 0.5).astype(np.uint8)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, C) any dtype -> (H, W, 3) uint8: uint8 kept, others stretched per band between
    their 1st and 99th percentiles; one or two bands shown grey, more as their first three."""
    image = image[:, :, None] if image.ndim == 2 else image
    bands = image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1]
    if bands.dtype != np.uint8:
        stretched = np.empty(bands.shape, np.uint8)
        for b in range(bands.shape[2]):
            stretched[:, :, b] = _stretch(bands[:, :, b])
        bands = stretched
    return np.ascontiguousarray(np.repeat(bands, 3, axis=2) if bands.shape[2] == 1 else bands)


def _stretch(band: np.ndarray) -> np.ndarray:
    step = max(1, int(np.sqrt(band.size / 1e6)))  # percentiles from about a million pixels
    sample = band[::step, ::step].astype(np.float64)
    low, high = np.percentile(sample[np.isfinite(sample)], [1, 99]) if np.isfinite(sample).any() else (0, 1)
    scale = 255.0 / (high - low) if high > low else 0.0
    out = np.empty(band.shape, np.uint8)
    for top in range(0, band.shape[0], ROWS_PER_BAND):
        rows = band[top : top + ROWS_PER_BAND].astype(np.float32)
        out[top : top + ROWS_PER_BAND] = np.clip(np.nan_to_num((rows - low) * scale), 0, 255).astype(np.uint8)
    return out


__all__ = ["PROBABILITY_FORMATS", "display_rgb", "overlay_image", "write_outputs", "write_probabilities"]
