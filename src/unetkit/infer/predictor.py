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
checked against the model, so a folder of new images needs no settings at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.errors import UnetkitError
from unetkit.infer.engines import Engine, OnnxEngine, TorchEngine
from unetkit.infer.model_info import ModelInfo, round_up
from unetkit.infer.tiling import Axis, Tile, TileGrid, read_tile
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
    CPU, 4 tiles on a GPU).
    """

    def __init__(
        self,
        model: UNet | str | Path,
        *,
        meta: dict[str, Any] | None = None,
        tile: int | None = None,
        overlap: float = 0.5,
        tta: str = "none",
        batch_size: int | None = None,
        device: str = "auto",
        precision: str = "auto",
        threshold: float | None = None,
        engine: str = "auto",
        progress: bool = False,
    ) -> None:
        _check_settings(tile, overlap, tta, batch_size, threshold, engine)
        self.engine, self.info, unet = _open(model, meta, engine, device, precision)
        self.threshold = self.info.threshold if threshold is None else float(threshold)
        self.overlap = float(overlap)
        self.tta = tta
        self.progress = progress
        self._transforms = _tta_transforms(tta)
        self._in_tile, self._out_tile, self._margin = _tile_geometry(self.info, unet, tile)
        on_gpu = getattr(self.engine, "on_gpu", self.engine.device.type != "cpu")
        self.batch_size = int(batch_size) if batch_size is not None else default_batch(self._in_tile, on_gpu)

    @property
    def tile(self) -> int:
        """The network's input tile side in pixels."""
        return self._in_tile

    def tile_count(self, height: int, width: int) -> int:
        """How many tiles an image of this size is cut into (1: it goes through whole)."""
        return len(self._grid(height, width))

    # --- the public calls ------------------------------------------------------------------

    def predict(self, image: np.ndarray, name: str = "the image") -> np.ndarray:
        """(H, W[, C]) image -> mask: (H, W) class ids, or (L, H, W) 0/1 for multilabel."""
        return self.decode(self.predict_probabilities(image, name))

    def predict_probabilities(self, image: np.ndarray, name: str = "the image") -> np.ndarray:
        """(H, W[, C]) image -> (K, H, W) float32 probabilities (K = 1 for binary: foreground)."""
        image = self.check_image(image, name)
        height, width = image.shape[:2]
        grid = self._grid(height, width)
        total = np.zeros((self.info.num_outputs, height, width), np.float32)
        with _progress(len(grid), self.progress and len(grid) > self.batch_size, name) as bar:
            for tiles in _chunks(iter(grid), self.batch_size):
                batch = torch.from_numpy(np.stack([self._tile_input(image, tile) for tile in tiles]))
                for tile, probs in zip(tiles, self._forward(batch).numpy()):
                    _add(total, grid, tile, probs)
                bar.update(len(tiles))
        return total

    def predict_many(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Probabilities of several images; images of one size that fit a tile share batches."""
        names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
        images = [self.check_image(image, name) for image, name in zip(images, names)]
        results: list[np.ndarray | None] = [None] * len(images)
        whole: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            if len(self._grid(*image.shape[:2])) == 1:
                whole.setdefault(image.shape, []).append(index)
            else:
                results[index] = self.predict_probabilities(image, names[index])
        for shape, indices in whole.items():
            grid = self._grid(*shape[:2])
            (tile,) = grid
            for group in _chunks(iter(indices), self.batch_size):
                batch = torch.from_numpy(np.stack([self._tile_input(images[i], tile) for i in group]))
                for index, probs in zip(group, self._forward(batch).numpy()):
                    total = np.zeros((self.info.num_outputs, *shape[:2]), np.float32)
                    _add(total, grid, tile, probs)
                    results[index] = total
        return results  # type: ignore[return-value]

    def decode(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """(K, H, W) probabilities -> the mask, by the model's task (see `decode_probabilities`)."""
        return decode_probabilities(probs, self.info, self.threshold if threshold is None else threshold)

    def check_image(self, image: np.ndarray, name: str = "the image") -> np.ndarray:
        """An (H, W, C) view of `image`, refused with one sentence if its bands do not fit."""
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or min(image.shape) < 1:
            raise UnetkitError(f"{name} has shape {image.shape}: pass an (H, W) or (H, W, C) image.")
        if image.shape[2] != self.info.in_channels and image.shape[0] == self.info.in_channels:
            raise UnetkitError(
                f"{name} has shape {image.shape}, which looks like (C, H, W): pass (H, W, C), "
                "e.g. np.moveaxis(image, 0, -1)."
            )
        self.info.check_bands(image.shape[2], name)
        return image

    # --- internals -------------------------------------------------------------------------

    def _grid(self, height: int, width: int) -> TileGrid:
        m, overlap = self.info.multiple, self.overlap
        if self.info.padding == "same":
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
        if self.info.mean is not None and self.info.std is not None:
            inside -= np.asarray(self.info.mean, np.float32).reshape(c, 1, 1)
            inside /= np.asarray(self.info.std, np.float32).reshape(c, 1, 1)
        return out

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities of a batch, averaged over the test-time augmentations."""
        total = None
        for forward, inverse in self._transforms:
            probs = inverse(probabilities(self.engine(forward(batch)), self.info.task))
            total = probs if total is None else total + probs
        assert total is not None
        return total if len(self._transforms) == 1 else total / len(self._transforms)


def predict(model: UNet | str | Path | Predictor, image: np.ndarray, *, meta: dict[str, Any] | None = None,
            **options: Any) -> np.ndarray:
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


def decode_probabilities(probs: np.ndarray, info: ModelInfo, threshold: float) -> np.ndarray:
    """(K, H, W) probabilities -> mask. multiclass: arg-max mapped to the class ids; binary:
    foreground where p > threshold (class ids of background/foreground); multilabel: (L, H, W)
    0/1 where p > threshold. Works in row bands, so no int64 copy of a huge image is made."""
    if not 0.0 < threshold < 1.0:
        raise UnetkitError(f"--threshold {threshold} must lie strictly between 0 and 1.")
    if info.task == "multilabel":
        return (probs > threshold).astype(np.uint8)
    ids = info.class_ids()
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


def _open(model: UNet | str | Path, meta: dict[str, Any] | None, engine: str, device: str,
          precision: str) -> tuple[Engine, ModelInfo, UNet | None]:
    """The engine, the model's info, and the UNet itself when there is one (for its geometry)."""
    if isinstance(model, UNet):
        if engine == "onnx":
            raise UnetkitError("engine='onnx' needs an exported .onnx file, not a UNet; use `unetkit export`.")
        if meta:
            info = ModelInfo.from_meta({**meta, "model": model.config}, "the model")
        else:
            info = ModelInfo.for_bare_model(model.config)
        return TorchEngine(model, device, precision), info, model
    path = Path(model)
    if engine == "onnx" or (engine == "auto" and path.suffix.lower() == ".onnx"):
        from unetkit.infer.export import onnx_meta

        if precision not in ("auto", "fp32"):
            raise UnetkitError(f"--precision {precision}: the ONNX engine runs in fp32; leave --precision auto.")
        onnx = OnnxEngine.from_file(path, device)
        return onnx, ModelInfo.from_meta(onnx_meta(onnx.session, path), str(path)), None
    if path.suffix.lower() == ".onnx":
        raise UnetkitError(f"{path}: an .onnx file runs with --engine onnx (or auto), not torch.")
    from unetkit.train.checkpoint import load

    unet, loaded = load(path)
    return TorchEngine(unet, device, precision), ModelInfo.from_meta(loaded, loaded.get("folder", str(path))), unet


def _tile_geometry(info: ModelInfo, unet: UNet | None, tile: int | None) -> tuple[int, int, int]:
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


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _progress(total: int, enabled: bool, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"tiles of {name}", unit="tile", leave=False, file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)


def _smallest_uint(top: int) -> type:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return dtype
    return np.int64


__all__ = ["ENGINES", "TTA_MODES", "Predictor", "decode_probabilities", "predict"]
