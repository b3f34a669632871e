"""Tile placement and blending weights: full coverage, aligned starts, weights summing to one."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.infer.tiling import Axis, TileGrid, gaussian_1d, read_tile, reflect_indices, tile_starts


@pytest.mark.parametrize("length, tile, overlap, multiple", [
    (100, 32, 0.5, 1), (128, 32, 0.5, 16), (1024, 256, 0.25, 16), (1000, 256, 0.25, 1), (64, 64, 0.5, 8), (40, 64, 0.5, 8),
    (96, 32, 0.0, 16), (512, 64, 0.9, 16),
])
def test_starts_cover_the_length_flush_and_aligned(length, tile, overlap, multiple):
    starts = tile_starts(length, tile, overlap, multiple)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)
    assert all(s % multiple == 0 for s in starts)
    assert starts == sorted(set(starts))
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    if len(starts) > 1:
        steps = np.diff(starts)
        assert steps.max() <= tile * (1 - overlap) + multiple  # never a gap, overlap close to asked


def test_gaussian_peaks_in_the_middle_and_stays_positive():
    g = gaussian_1d(64)
    assert g.argmax() in (31, 32) and g.max() == pytest.approx(1.0, abs=0.01)
    assert np.allclose(g, g[::-1])
    assert g.min() > 1e-4


def test_reflect_indices_mirror_without_repeating_the_edge():
    assert reflect_indices(-3, 8, 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert reflect_indices(-2, 3, 1).tolist() == [0] * 5
    assert reflect_indices(0, 5, 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("height, width, tile", [(150, 97, 32), (64, 64, 64), (33, 200, 48)])
def test_same_padding_weights_sum_to_one_everywhere(height, width, tile):
    grid = TileGrid(Axis.same(height, tile, 16, 0.5), Axis.same(width, tile, 16, 0.5))
    total = np.zeros((height, width))
    for t in grid:
        total[t.window] += grid.weight(t)
    assert np.allclose(total, 1.0, atol=1e-5)


def test_same_padding_reads_the_canvas_the_model_would_pad():
    """Height 50 pads to 64 (7 rows above, 7 below): edge tiles get zero rows, like the model."""
    axis = Axis.same(50, 32, 16, 0.5)
    assert axis.canvas == 64 and axis.offset == 7 and axis.starts == (0, 16, 32)
    first, last = axis.span(0), axis.span(32)
    assert (first.before, first.source, first.keep, first.image_start) == (7, slice(0, 25), slice(7, 32), 0)
    assert (last.after, last.source, last.keep, last.image_start) == (7, slice(25, 50), slice(0, 25), 25)


def test_valid_padding_mirrors_context_and_drops_overhang():
    axis = Axis.valid(30, out_tile=20, margin=4, multiple=4, overlap=0.5)
    assert axis.starts == (0, 8, 12) and axis.canvas == 32  # steps of at most 20 * (1 - 0.5)
    first = axis.span(0)
    assert first.source.tolist()[:5] == [4, 3, 2, 1, 0]  # mirrored context above the image
    last = axis.span(12)
    assert last.keep == slice(0, 18) and last.image_start == 12  # 2 output rows past the edge dropped


def test_read_tile_gathers_mirrored_pixels():
    image = np.arange(5 * 6).reshape(5, 6, 1)
    grid = TileGrid(Axis.valid(5, 4, 2, 1, 0.0), Axis.valid(6, 4, 2, 1, 0.0))
    tile = next(iter(grid))
    patch = read_tile(image, tile)
    assert patch.shape == (8, 8, 1)
    assert patch[2, 2, 0] == image[0, 0, 0] and patch[0, 0, 0] == image[2, 2, 0]
