"""Where the tiles of a sliding window go, and how much each one counts at every pixel.

Tiles start at multiples of 2**depth. A U-Net's max-pools make it shift-equivariant only
for shifts by 2**depth: a tile at another offset sees a different pooling grid and gives
different (not worse, but different) logits, which would show as seams between tiles.

'same'-padding models: the model zero-pads the image, centred, to a multiple of 2**depth.
The tiles cover that padded canvas and are read with the same zero padding, so every tile
sees exactly the pixels a whole-image pass would see at the same place, and one tile
covering the canvas *is* the whole-image pass.

'valid'-padding models (the paper's unpadded convolutions): the output tile is smaller than
the input tile by a margin on each side; input past the image border is mirrored, the
paper's overlap-tile strategy, and output past the border is dropped.

Each tile's probabilities are weighted by a Gaussian centred on the tile (sigma = tile / 8,
as in nnU-Net), because a U-Net is least reliable near a tile border where it saw the least
context; the weights are normalised to sum to one at every pixel, which hides the seams.
The Gaussian is separable and the tiles form a grid, so the total weight at (y, x) is the
product of a row sum and a column sum: it is known before any tile runs and is held as two
1-D arrays, and each tile adds its share of the final average directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SIGMA_FRACTION = 1 / 8
ZERO = "zero"
MIRROR = "mirror"


def tile_starts(length: int, tile: int, overlap: float, multiple: int = 1) -> list[int]:
    """Starts from 0 to length - tile, evenly spread with steps near tile * (1 - overlap),
    each a multiple of `multiple` (length - tile must be one too)."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1.0 - overlap)))
    count = math.ceil((length - tile) / step) + 1
    spread = ((length - tile) / multiple) / (count - 1)
    return sorted({round(i * spread) * multiple for i in range(count)})


def gaussian_1d(size: int, sigma_fraction: float = SIGMA_FRACTION) -> np.ndarray:
    """A Gaussian over `size` pixel centres, peak 1, sigma = size * sigma_fraction (float64).

    Its smallest value (about e**-8 at a tile's edge) stays far above zero, so an image edge
    covered only by one tile's border still gets a well-defined average.
    """
    sigma = max(size * sigma_fraction, 1e-6)
    positions = np.arange(size, dtype=np.float64)
    return np.exp(-0.5 * ((positions - (size - 1) / 2) / sigma) ** 2)


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices start..stop-1 folded into 0..length-1 by mirroring at the edges (edge not repeated)."""
    index = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index >= length, period - index, index)


@dataclass(frozen=True)
class Span:
    """How one tile meets one image axis: `source` reads the input (a slice, or mirrored
    indices), `before`/`after` zeros pad it; output rows `keep` of the tile land at image
    rows `image_start` onwards."""

    source: slice | np.ndarray
    before: int
    after: int
    keep: slice
    image_start: int


@dataclass(frozen=True)
class Axis:
    """The tiling of one image axis. Canvas coordinates: image row r is canvas row r + offset."""

    length: int
    canvas: int
    offset: int
    out_tile: int
    margin: int
    fill: str
    starts: tuple[int, ...]
    weight: np.ndarray  # (out_tile,) Gaussian, float64; all ones when one tile covers the axis
    total: np.ndarray  # (canvas,) summed weight of every tile at each canvas position

    @classmethod
    def same(cls, length: int, tile: int, multiple: int, overlap: float) -> Axis:
        """'same' padding: tiles over the image zero-padded (centred) to a multiple."""
        canvas = -(-length // multiple) * multiple
        out_tile = min(tile, canvas)
        return cls._plan(length, canvas, (canvas - length) // 2, out_tile, 0, ZERO, multiple, overlap)

    @classmethod
    def valid(cls, length: int, out_tile: int, margin: int, multiple: int, overlap: float) -> Axis:
        """'valid' padding: fixed output tiles from 0, the last one overhanging by less than
        `multiple`; input read with `margin` of context, mirrored past the edges."""
        canvas = out_tile + max(0, -(-(length - out_tile) // multiple) * multiple)
        return cls._plan(length, canvas, 0, out_tile, margin, MIRROR, multiple, overlap)

    @classmethod
    def _plan(cls, length: int, canvas: int, offset: int, out_tile: int, margin: int, fill: str,
              multiple: int, overlap: float) -> Axis:
        starts = tuple(tile_starts(canvas, out_tile, overlap, multiple))
        weight = gaussian_1d(out_tile) if len(starts) > 1 else np.ones(out_tile)
        total = np.zeros(canvas)
        for start in starts:
            total[start : start + out_tile] += weight
        return cls(length, canvas, offset, out_tile, margin, fill, starts, weight, total)

    def span(self, start: int) -> Span:
        first = start - self.offset  # image row of the tile's first output row
        low, high = max(0, first), min(self.length, first + self.out_tile)
        keep = slice(low - first, high - first)
        read_from, read_to = first - self.margin, first + self.out_tile + self.margin
        if self.fill == MIRROR and (read_from < 0 or read_to > self.length):
            return Span(reflect_indices(read_from, read_to, self.length), 0, 0, keep, low)
        inside = slice(max(0, read_from), min(self.length, read_to))
        return Span(inside, inside.start - read_from, read_to - inside.stop, keep, low)

    def normalised_weight(self, start: int) -> np.ndarray:
        """The tile's share of the average at each kept output row (sums to 1 over tiles)."""
        keep = self.span(start).keep
        return self.weight[keep] / self.total[start + keep.start : start + keep.stop]


@dataclass(frozen=True)
class Tile:
    """One tile of the grid, as its row span and column span."""

    rows: Span
    cols: Span
    row_start: int
    col_start: int

    @property
    def window(self) -> tuple[slice, slice]:
        """Where its kept output goes in the image."""
        r, c = self.rows, self.cols
        return (slice(r.image_start, r.image_start + r.keep.stop - r.keep.start),
                slice(c.image_start, c.image_start + c.keep.stop - c.keep.start))


@dataclass(frozen=True)
class TileGrid:
    """The sliding window over an image: its tiles and their blending weights."""

    rows: Axis
    cols: Axis

    def __len__(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    def __iter__(self) -> Iterator[Tile]:
        for y in self.rows.starts:
            for x in self.cols.starts:
                yield Tile(self.rows.span(y), self.cols.span(x), y, x)

    def weight(self, tile: Tile) -> np.ndarray:
        """(kept height, kept width) float32 share of this tile in the final average."""
        return np.outer(self.rows.normalised_weight(tile.row_start),
                        self.cols.normalised_weight(tile.col_start)).astype(np.float32)


def read_tile(image: np.ndarray, tile: Tile) -> np.ndarray:
    """The raw (h, w, C) pixels of `tile` inside the image (mirrored where the axis mirrors);
    the zero padding of `tile.rows/cols.before/after` is added after normalisation."""
    rows, cols = tile.rows.source, tile.cols.source
    if isinstance(rows, slice) and isinstance(cols, slice):
        return image[rows, cols]
    rows = np.arange(image.shape[0])[rows] if isinstance(rows, slice) else rows
    cols = np.arange(image.shape[1])[cols] if isinstance(cols, slice) else cols
    return image[np.ix_(rows, cols)]


__all__ = ["Axis", "Span", "Tile", "TileGrid", "gaussian_1d", "read_tile", "reflect_indices", "tile_starts"]
