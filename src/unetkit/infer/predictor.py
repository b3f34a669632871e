"""Segment images of any size with a trained model: whole, or tiled with Gaussian blending.

An image no larger than the tile goes through the network whole, bit for bit as a direct
forward pass would. A larger one is cut into overlapping tiles on the model's pooling grid
(see `tiling`); each tile's probabilities are weighted by a Gaussian and added to a float32
running average over the image, and the mask is decoded from it at the end, in row bands.
Memory is the tile batch plus that average (K x H x W float32) plus the image and the mask:
a 10000 x 10000 image with two classes needs 0.8 GB of averages, whatever the tile count.
On the CPU the default tile batch holds about 512 x 512 pixels (one 512 tile, four 256
tiles): a bigger batch buys no speed there, where one tile already fills the cores, and
costs activation memory (BENCHMARKS.md).

Test-time augmentation (`tta="flips"` or `"full"`) averages the probabilities of the
flipped (and 90-degree rotated) inputs, mapped back, as the original U-Net paper did for
ISBI 2012. Images are normalised with the model's own mean and std, and the band count is
checked against the model, so a folder of new images needs no settings at all. An image of
another integer dtype than the training images (16-bit given to an 8-bit model) is scaled
to the training range, with a warning. Pixels without data (NaN, or a GeoTIFF's nodata
value) go into the network as the band mean and come out as the model's nodata value.

Evaluation (`infer.evaluate`) and training's validation score exactly this output.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit import progress
from unetkit.errors import UnetkitError, UnetkitWarning
from unetkit.infer.engines import Engine, OnnxEngine, TorchEngine
from unetkit.infer.tiling import Axis, Tile, TileGrid, read_tile
from unetkit.model.record import SavedModel, record_for, round_up
from unetkit.nn import UNet, probabilities

TTA_MODES = ("none", "flips", "full")
ENGINES = ("auto", "torch", "onnx")
Transform = Callable[[torch.Tensor], torch.Tensor]


class Predictor:
    """A loaded model ready for repeated predictions with fixed settings.

    `model` is a model folder (RUN_DIR/best), an exported .onnx file, or a `UNet` (then pass
    its `meta` from `unetkit.load` to get its normalisation and classes; without it the image
    is used as given). `tile` is the tile side in pixels (default: twice the training patch,
    a multiple of 2**depth); `overlap` the fraction of a tile shared with its neighbour;
    `batch_size` the tiles per forward pass (default: about 512 x 512 pixels of tiles on the
    CPU, 4 tiles on a GPU); `rescale` "auto" scales an image of another integer dtype than
    the training images to their range, "none" uses it as it is.
    """

    def __init__(
        self,
        model: UNet | str | Path,
        *,
        meta: SavedModel | Mapping[str, Any] | None = None,
        tile: int | None = None,
        overlap: float = 0.5,
        tta: str = "none",
        batch_size: int | None = None,
        device: str = "auto",
        precision: str = "auto",
        threshold: float | None = None,
        engine: str = "auto",
        progress: bool = False,
        rescale: str = "auto",
    ) -> None:
        _check_settings(tile, overlap, tta, batch_size, threshold, engine)
        if rescale not in ("auto", "none"):
            raise UnetkitError(f"--rescale {rescale!r} is not known: use auto or none.")
        self.engine, self.record, unet = _open(model, meta, engine, device, precision)
        self.threshold = self.record.threshold if threshold is None else float(threshold)
        self.rescale = rescale
        self._warned: set[str] = set()
        self.overlap = float(overlap)
        self.tta = tta
        self.progress = progress
        self._transforms = _tta_transforms(tta)
        self._in_tile, self._out_tile, self._margin = _tile_geometry(self.record, unet, tile)
        on_gpu = getattr(self.engine, "on_gpu", self.engine.device.type != "cpu")  # type: ignore[attr-defined]
        self.batch_size = int(batch_size) if batch_size is not None else default_batch(self._in_tile, on_gpu)

    @property
    def info(self) -> SavedModel:
        """The model's record (the name of earlier versions)."""
        return self.record

    @property
    def tile(self) -> int:
        """The network's input tile side in pixels."""
        return self._in_tile

    def tile_count(self, height: int, width: int) -> int:
        """How many tiles an image of this size is cut into (1: it goes through whole)."""
        return len(self._grid(height, width))

    # --- the public calls ------------------------------------------------------------------

    def predict(self, image: np.ndarray, name: str = "the image", nodata: np.ndarray | None = None) -> np.ndarray:
        """(H, W[, C]) image -> mask: (H, W) class ids, or (L, H, W) 0/1 for multilabel; the
        model's nodata value where the image has none (NaN, or True in `nodata`)."""
        image, nodata = self.prepare(image, name, nodata)
        return self.decode(self._probabilities(image, name, nodata), nodata=nodata)

    def predict_probabilities(self, image: np.ndarray, name: str = "the image",
                              nodata: np.ndarray | None = None) -> np.ndarray:
        """(H, W[, C]) image -> (K, H, W) float32 probabilities (K = 1 for binary: foreground);
        NaN where the image has no data."""
        image, nodata = self.prepare(image, name, nodata)
        probs = self._probabilities(image, name, nodata)
        if nodata is not None:
            probs[:, nodata] = np.nan
        return probs

    def predict_many(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None,
                     nodata: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Probabilities of several images; images of one size that fit a tile share batches.
        NaN where an image has no data (NaN pixels, or True in its `nodata` mask)."""
        names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
        masks = list(nodata) if nodata is not None else [None] * len(images)
        prepared = [self.prepare(image, name, mask) for image, name, mask in zip(images, names, masks)]
        prepared = [(_with_nan(image, nodata), nodata) for image, nodata in prepared]
        results: list[np.ndarray | None] = [None] * len(prepared)
        whole: dict[tuple[int, ...], list[int]] = {}
        for index, (image, nodata) in enumerate(prepared):
            if len(self._grid(*image.shape[:2])) == 1:
                whole.setdefault(image.shape, []).append(index)
            else:
                results[index] = self._probabilities(image, names[index], nodata)
        for shape, indices in whole.items():
            grid = self._grid(*shape[:2])
            (tile,) = grid
            for group in _chunks(iter(indices), self.batch_size):
                batch = torch.from_numpy(np.stack([self._tile_input(prepared[i][0], tile) for i in group]))
                for index, probs in zip(group, self._forward(batch).numpy()):
                    total = np.zeros((self.record.num_outputs, *shape[:2]), np.float32)
                    _add(total, grid, tile, probs)
                    results[index] = total
        for (_, nodata), probs in zip(prepared, results):
            if nodata is not None and probs is not None:
                probs[:, nodata] = np.nan
        return results  # type: ignore[return-value]

    def decode(self, probs: np.ndarray, threshold: float | None = None, nodata: np.ndarray | None = None) -> np.ndarray:
        """(K, H, W) probabilities -> the mask of class ids, by the model's task (see
        `decode_probabilities`); the model's nodata value where `nodata` (or NaN probabilities)."""
        mask = decode_probabilities(probs, self.record, self.threshold if threshold is None else threshold)
        return self._mark_nodata(mask, probs, nodata)

    def decode_indices(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """(K, H, W) probabilities -> class indices (positions in the class list, as training
        targets are), or (L, H, W) 0/1: what evaluation compares with the ground truth."""
        return decode_probabilities(probs, self.record, self.threshold if threshold is None else threshold,
                                    as_index=True)

    def prepare(self, image: np.ndarray, name: str = "the image",
                nodata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """An (H, W, C) image the network can take, and where it has no data (None: everywhere).

        Refused with one sentence if its bands do not fit; rescaled (with a warning) when its
        integer dtype is not the training images'; NaN pixels are counted as no data."""
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or min(image.shape) < 1:
            raise UnetkitError(f"{name} has shape {image.shape}: pass an (H, W) or (H, W, C) image.")
        if image.shape[2] != self.record.in_channels and image.shape[0] == self.record.in_channels:
            raise UnetkitError(
                f"{name} has shape {image.shape}, which looks like (C, H, W): pass (H, W, C), "
                "e.g. np.moveaxis(image, 0, -1)."
            )
        self.record.check_bands(image.shape[2], name)
        if nodata is not None and nodata.shape != image.shape[:2]:
            raise UnetkitError(f"the nodata mask of {name} is {nodata.shape}, the image {image.shape[:2]}.")
        if image.dtype.kind == "f":
            missing = ~np.isfinite(image).all(axis=2)
            if missing.any():
                nodata = missing if nodata is None else nodata | missing
        if nodata is not None and not nodata.any():
            nodata = None
        return self._rescaled(image, name), nodata

    def check_image(self, image: np.ndarray, name: str = "the image") -> np.ndarray:
        """`prepare` without the nodata mask (the name of earlier versions)."""
        return self.prepare(image, name)[0]

    # --- internals -------------------------------------------------------------------------

    def _grid(self, height: int, width: int) -> TileGrid:
        m, overlap = self.record.multiple, self.overlap
        if self.record.padding == "same":
            return TileGrid(Axis.same(height, self._in_tile, m, overlap), Axis.same(width, self._in_tile, m, overlap))
        out, margin = self._out_tile, self._margin
        return TileGrid(Axis.valid(height, out, margin, m, overlap), Axis.valid(width, out, margin, m, overlap))

    def _tile_input(self, image: np.ndarray, tile: Tile) -> np.ndarray:
        """The network input for `tile`: (C, h, w) float32 normalised as in training,
        (x - mean) / std, then zero-padded where the tile overhangs the image (as the
        model's own pad-to-multiple does). A fresh C-ordered array: a transposed view with
        C = 1 would look contiguous to torch yet pick other conv kernels."""
        raw = read_tile(image, tile)
        h, w, c = raw.shape
        rows, cols = tile.rows, tile.cols
        out = np.zeros((c, rows.before + h + rows.after, cols.before + w + cols.after), np.float32)
        inside = out[:, rows.before : rows.before + h, cols.before : cols.before + w]
        inside[...] = raw.transpose(2, 0, 1)
        if self.record.mean is not None and self.record.std is not None:
            inside -= np.asarray(self.record.mean, np.float32).reshape(c, 1, 1)
            inside /= np.asarray(self.record.std, np.float32).reshape(c, 1, 1)
        if raw.dtype.kind == "f":
            np.nan_to_num(inside, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # no data: the band mean
        return out

    def _probabilities(self, image: np.ndarray, name: str, nodata: np.ndarray | None) -> np.ndarray:
        """(K, H, W) of a prepared image; pixels in `nodata` enter the network as the band mean."""
        image = _with_nan(image, nodata)
        height, width = image.shape[:2]
        grid = self._grid(height, width)
        total = np.zeros((self.record.num_outputs, height, width), np.float32)
        with progress.bar(len(grid), f"tiles of {name}", "tile", self.progress and len(grid) > self.batch_size) as bar:
            for tiles in _chunks(iter(grid), self.batch_size):
                batch = torch.from_numpy(np.stack([self._tile_input(image, tile) for tile in tiles]))
                for tile, probs in zip(tiles, self._forward(batch).numpy()):
                    _add(total, grid, tile, probs)
                bar.update(len(tiles))
        return total

    def _mark_nodata(self, mask: np.ndarray, probs: np.ndarray, nodata: np.ndarray | None) -> np.ndarray:
        if nodata is None and probs.dtype.kind == "f":
            missing = np.isnan(probs[0])
            nodata = missing if missing.any() else None
        if nodata is not None:
            value = self.record.nodata_value()
            if mask.dtype.itemsize == 1 and value > 255:
                mask = mask.astype(np.uint16)
            mask[..., nodata] = value
        return mask

    def _rescaled(self, image: np.ndarray, name: str) -> np.ndarray:
        """An integer image of another dtype than the training images, scaled to their range."""
        trained = self.record.input.dtype
        if self.rescale == "none" or trained is None or image.dtype.name == trained:
            return image
        try:
            target = np.dtype(trained)
        except TypeError:
            return image
        if image.dtype.kind in "ui" and target.kind in "ui":
            factor = np.iinfo(target).max / np.iinfo(image.dtype).max
            self._warn(f"{name} is {image.dtype.name} but {self.record.source} was trained on {trained} images: its "
                       f"values are scaled by {np.iinfo(target).max}/{np.iinfo(image.dtype).max} to the training "
                       "range (--rescale none uses them as they are)")
            return image.astype(np.float32) * np.float32(factor)
        self._check_range(image, name)
        return image

    def _check_range(self, image: np.ndarray, name: str) -> None:
        """Warn when an image's values lie far from every training image's (e.g. [0, 1] floats
        given to a model trained on 0-255): the model would see something it never saw."""
        low, high = self.record.input.low, self.record.input.high
        if low is None or high is None:
            return
        step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 1e5)))
        sample = image[::step, ::step].reshape(-1, image.shape[2]).astype(np.float64)
        sample = sample[np.isfinite(sample).all(axis=1)]
        if not len(sample):
            return
        top, bottom = np.percentile(sample, 99, axis=0), np.percentile(sample, 1, axis=0)
        for band, (lo, hi, t, b) in enumerate(zip(low, high, top, bottom)):
            span = hi - lo
            if span > 0 and (t < lo + 0.01 * span or b > hi + span):
                self._warn(f"{name}: band {band + 1} holds values near {t:.4g}, far outside the training images' "
                           f"range [{lo:.4g}, {hi:.4g}]: check its scaling (e.g. 0-1 floats for a 0-255 model)")
                return

    def _warn(self, message: str) -> None:
        key = message.split(":", 1)[-1]
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UnetkitWarning, stacklevel=3)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities of a batch, averaged over the test-time augmentations."""
        total = None
        for forward, inverse in self._transforms:
            probs = inverse(probabilities(self.engine(forward(batch)), self.record.task))
            total = probs if total is None else total + probs
        assert total is not None
        return total if len(self._transforms) == 1 else total / len(self._transforms)


def predict(model: UNet | str | Path | Predictor, image: np.ndarray, *,
            meta: SavedModel | Mapping[str, Any] | None = None, **options: Any) -> np.ndarray:
    """Segment one image: (H, W[, C]) -> (H, W) class ids, or (L, H, W) 0/1 for multilabel.

    `model` is a model folder, an .onnx file, a `UNet` (with `meta` from `unetkit.load`) or a
    `Predictor`; `options` are the Predictor's (tile, overlap, tta, threshold, ...).
    """
    if isinstance(model, Predictor):
        if meta is not None or options:
            raise UnetkitError("predict(): a Predictor already holds its settings; pass them to Predictor(...).")
        return model.predict(image)
    return Predictor(model, meta=meta, **options).predict(image)


def default_batch(tile: int, on_gpu: bool) -> int:
    """Tiles per forward pass: 4 on a GPU; on the CPU as many as make about 512 x 512 pixels."""
    if on_gpu:
        return 4
    return max(1, min(8, (512 * 512) // max(tile * tile, 1)))


def decode_probabilities(probs: np.ndarray, info: SavedModel, threshold: float, as_index: bool = False) -> np.ndarray:
    """(K, H, W) probabilities -> mask. multiclass: arg-max mapped to the class ids; binary:
    foreground where p > threshold (class ids of background/foreground); multilabel: (L, H, W)
    0/1 where p > threshold. `as_index`: positions in the class list instead of ids. Works in
    row bands, so no int64 copy of a huge image is made."""
    if not 0.0 < threshold < 1.0:
        raise UnetkitError(f"--threshold {threshold} must lie strictly between 0 and 1.")
    if info.task == "multilabel":
        return (probs > threshold).astype(np.uint8)
    ids = info.class_ids()
    if as_index:
        ids = np.arange(len(ids))
    dtype = _smallest_uint(int(ids.max(initial=0)))
    lookup = ids.astype(dtype)
    height, width = probs.shape[1:]
    mask = np.empty((height, width), dtype)
    rows = max(1, (1 << 22) // max(width, 1))
    for top in range(0, height, rows):
        band = probs[:, top : top + rows]
        index = (band[0] > threshold) if info.task == "binary" else band.argmax(axis=0)
        mask[top : top + rows] = lookup[index.astype(np.intp)]
    return mask


# --- helpers ---------------------------------------------------------------------------------


def _open(model: UNet | str | Path, meta: SavedModel | Mapping[str, Any] | None, engine: str, device: str,
          precision: str) -> tuple[Engine, SavedModel, UNet | None]:
    """The engine, the model's record, and the UNet itself when there is one (for its geometry)."""
    if isinstance(model, torch.nn.Module):
        if engine == "onnx":
            raise UnetkitError("engine='onnx' needs an exported .onnx file, not a UNet; use `unetkit export`.")
        return TorchEngine(model, device, precision), record_for(model, meta), model if isinstance(model, UNet) \
            else None
    path = Path(model)
    if engine == "onnx" or (engine == "auto" and path.suffix.lower() == ".onnx"):
        if precision not in ("auto", "fp32"):
            raise UnetkitError(f"--precision {precision}: the ONNX engine runs in fp32; leave --precision auto.")
        onnx = OnnxEngine.from_file(path, device)
        return onnx, onnx.record(), None
    if path.suffix.lower() == ".onnx":
        raise UnetkitError(f"{path}: an .onnx file runs with --engine onnx (or auto), not torch.")
    from unetkit.model.store import load

    unet, record = load(path)
    return TorchEngine(unet, device, precision), record, unet


def _tile_geometry(info: SavedModel, unet: UNet | None, tile: int | None) -> tuple[int, int, int]:
    """(input tile, output tile, margin). 'same': a multiple of 2**depth, no margin. 'valid':
    the nearest valid input size at or above the tile, whose output is smaller by 2 * margin."""
    wanted = info.default_tile() if tile is None else int(tile)
    if info.padding == "same":
        size = round_up(wanted, info.multiple)
        return size, size, 0
    if unet is None:
        raise UnetkitError(f"{info.source}: a padding='valid' model runs with the torch engine only.")
    size = unet.nearest_valid_sizes(wanted)[1]
    out = unet.output_size(size)[0]
    return size, out, (size - out) // 2


def _check_settings(tile: int | None, overlap: float, tta: str, batch_size: int | None, threshold: float | None,
                    engine: str) -> None:
    if tile is not None and int(tile) < 1:
        raise UnetkitError(f"--tile {tile} must be a positive number of pixels.")
    if not 0.0 <= overlap < 1.0:
        raise UnetkitError(f"--overlap {overlap} is a fraction of the tile: use a value in [0, 1), e.g. 0.5.")
    if tta not in TTA_MODES:
        raise UnetkitError(f"--tta {tta!r} is not known: use none, flips or full.")
    if batch_size is not None and batch_size < 1:
        raise UnetkitError(f"--batch-size {batch_size} must be at least 1.")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise UnetkitError(f"--threshold {threshold} must lie strictly between 0 and 1.")
    if engine not in ENGINES:
        raise UnetkitError(f"--engine {engine!r} is not known: use torch or onnx.")


def _tta_transforms(mode: str) -> list[tuple[Transform, Transform]]:
    """(forward, inverse) pairs: identity; + the three flips; or all eight symmetries of the square."""
    if mode == "none":
        return [(_identity, _identity)]
    if mode == "flips":
        return [(_flip(dims), _flip(dims)) for dims in ((), (-1,), (-2,), (-2, -1))]
    pairs = []
    for turns in range(4):
        for mirror in (False, True):
            pairs.append((_rotate_then_flip(turns, mirror), _unflip_then_unrotate(turns, mirror)))
    return pairs


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _flip(dims: tuple[int, ...]) -> Transform:
    return (lambda x: torch.flip(x, dims)) if dims else _identity


def _rotate_then_flip(turns: int, mirror: bool) -> Transform:
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, turns, dims=(-2, -1))
        return torch.flip(x, (-1,)) if mirror else x

    return forward


def _unflip_then_unrotate(turns: int, mirror: bool) -> Transform:
    def inverse(x: torch.Tensor) -> torch.Tensor:
        x = torch.flip(x, (-1,)) if mirror else x
        return torch.rot90(x, -turns, dims=(-2, -1))

    return inverse


def _add(total: np.ndarray, grid: TileGrid, tile: Tile, probs: np.ndarray) -> None:
    """Add this tile's weighted share of the average (exactly the probabilities for one tile)."""
    window = total[(slice(None), *tile.window)]
    probs = probs[:, tile.rows.keep, tile.cols.keep]
    if len(grid) == 1:
        window += probs
    else:
        window += probs * grid.weight(tile)


def _with_nan(image: np.ndarray, nodata: np.ndarray | None) -> np.ndarray:
    """`image` with NaN where it has no data, so that every path feeds those pixels to the
    network as the band mean (an integer image becomes float32 only when it has no-data pixels)."""
    if nodata is None or (image.dtype.kind == "f" and np.isnan(image[nodata]).all()):
        return image
    image = image.astype(np.float32)
    image[nodata] = np.nan
    return image


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _smallest_uint(top: int) -> type:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return dtype
    return np.int64


__all__ = ["ENGINES", "TTA_MODES", "Predictor", "decode_probabilities", "predict"]
