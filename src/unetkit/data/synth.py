"""Generated data sets for the demo, the tests and the learner.

Each generator is a pure function ``make_NAME(size, rng) -> (image, mask)``, built so that a
model has to learn shape and context, not a threshold:

- ``cells``: one-band microscopy-like images: touching round and irregular cells under uneven
  illumination, with blur, noise and debris; binary masks in which touching cells are split by
  background lines 1-2 px wide, as in the U-Net paper's cell data (the image shows only a faint
  membrane there). Cell and background intensities overlap across the image.
- ``scenes``: RGB road scenes (sky, building, vegetation, road, car) with varied horizon,
  vanishing point, buildings, trees, cars, textures and lighting.
- ``multispectral``: 10 Sentinel-2-like bands (``BANDS``): water, vegetation, bare soil, built-up,
  cloud. Bare soil and built-up have the same visible colour and differ in red-edge, NIR and
  SWIR, so the 3 visible bands alone cannot separate them.

`write_dataset` writes a set in the standard layout (images/, masks/, classes.json, splits/).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from unetkit.atomic import staging_folder
from unetkit.errors import UnetkitError

PairMaker = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


# --- shared helpers --------------------------------------------------------------------------


def smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean, unit std: textures and fields."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def coarse_field(size: int, grid: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth (size, size) field in [-1, 1]: random values on a grid x grid lattice, blended by
    normalised Gaussian bumps (two small matrix products instead of a per-pixel spline)."""
    nodes = np.linspace(0, size - 1, grid)
    spread = 0.5 * (size - 1) / max(grid - 1, 1)
    basis = np.exp(-0.5 * ((np.arange(size)[:, None] - nodes) / spread) ** 2)
    basis /= basis.sum(axis=1, keepdims=True)
    field = basis @ rng.uniform(-1.0, 1.0, (grid, grid)) @ basis.T
    return field / (np.abs(field).max() + 1e-12)


def _touching(labels: np.ndarray) -> np.ndarray:
    """Pixels of a labelled region that have a *different* region (not background) as a 4-neighbour."""
    cross = ndi.generate_binary_structure(2, 1)
    higher = ndi.maximum_filter(labels, footprint=cross, mode="nearest") > labels
    no_background = np.where(labels == 0, np.iinfo(labels.dtype).max, labels)
    lower = ndi.minimum_filter(no_background, footprint=cross, mode="nearest") < labels
    return (labels > 0) & (higher | lower)


# --- cells -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    y: float
    x: float
    radius: float
    elongation: float
    angle: float
    harmonics: np.ndarray  # (k, 2): amplitude, phase of the boundary's k-th harmonic, k = 2..


def _place_cells(size: int, rng: np.random.Generator) -> list[_Cell]:
    """Cells of similar size, most placed against an earlier one so that they touch in clusters."""
    mean_radius = rng.uniform(7.0, 11.0)
    coverage = rng.uniform(0.35, 0.6)
    target = max(2, int(coverage * size * size / (np.pi * mean_radius**2)))
    cells: list[_Cell] = []
    centres = np.empty((0, 2))
    radii = np.empty(0)
    for _ in range(target * 6):
        if len(cells) >= target:
            break
        radius = mean_radius * rng.uniform(0.75, 1.25)
        if cells and rng.random() < 0.6:  # touch a neighbour: centre distance < sum of radii
            anchor = rng.integers(len(cells))
            direction = rng.uniform(0, 2 * np.pi)
            distance = (radius + radii[anchor]) * rng.uniform(0.78, 0.92)
            centre = centres[anchor] + distance * np.array([np.sin(direction), np.cos(direction)])
        else:
            centre = rng.uniform(-0.1 * size, 1.1 * size, 2)
        if len(cells):
            gaps = np.hypot(*(centres - centre).T) / (radii + radius)
            if gaps.min() < 0.75:  # too much overlap would hide a cell
                continue
        irregular = rng.random() < 0.5
        amplitudes = rng.uniform(0.0, 0.12 if irregular else 0.03, 4) / np.arange(1, 5)
        harmonics = np.stack([amplitudes, rng.uniform(0, 2 * np.pi, 4)], axis=1)
        cells.append(_Cell(centre[0], centre[1], radius, rng.uniform(1.0, 1.45), rng.uniform(0, np.pi), harmonics))
        centres = np.vstack([centres, centre])
        radii = np.append(radii, radius)
    return cells


def _rasterise_cells(cells: list[_Cell], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, f): each pixel goes to the cell with the smallest normalised radius f (< 1 inside).

    Where two cells overlap the boundary is where their f are equal: a curved contact line.
    """
    best = np.full((size, size), np.inf)
    labels = np.zeros((size, size), np.int32)
    for index, cell in enumerate(cells, start=1):
        reach = cell.radius * cell.elongation * 1.6
        y0, y1 = max(0, int(cell.y - reach)), min(size, int(cell.y + reach) + 1)
        x0, x1 = max(0, int(cell.x - reach)), min(size, int(cell.x + reach) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1) - cell.y)[:, None]
        dx = (np.arange(x0, x1) - cell.x)[None, :]
        cos, sin = np.cos(cell.angle), np.sin(cell.angle)
        u = (dx * cos + dy * sin) / cell.elongation
        v = -dx * sin + dy * cos
        theta = np.arctan2(v, u)
        k = np.arange(2, 2 + len(cell.harmonics))[:, None, None]
        outline = 1.0 + np.sum(cell.harmonics[:, :1, None] * np.cos(k * theta + cell.harmonics[:, 1:, None]), axis=0)
        f = np.hypot(u, v) / (cell.radius * outline)
        window = best[y0:y1, x0:x1]
        closer = f < window
        window[closer] = f[closer]
        labels[y0:y1, x0:x1][closer & (f < 1.0)] = index
    return labels, best


def make_cells(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One-band (size, size) uint8 image and 0/1 mask of touching cells (min size 32)."""
    cells = _place_cells(size, rng)
    labels, f = _rasterise_cells(cells, size)
    inside = labels > 0
    contact = _touching(labels)
    mask = (inside & ~contact).astype(np.uint8)

    n = len(cells) + 1
    brightness = np.concatenate([[0.0], rng.uniform(0.14, 0.34, n - 1)])  # cell contrast over the background
    nucleus = np.concatenate([[0.0], rng.uniform(0.1, 0.4, n - 1) * (rng.random(n - 1) < 0.6)])
    contrast = brightness[labels]
    dome = np.where(inside, 1.0 - 0.35 * np.minimum(f, 1.0) ** 2, 0.0)
    core = np.where(inside, np.clip(1.0 - f / 0.45, 0.0, 1.0), 0.0)  # a darker nucleus at the centre
    texture = smooth_noise((size, size), 1.2, rng)
    cell_layer = contrast * (dome - nucleus[labels] * core) * (1.0 + 0.15 * texture)

    outside = ~inside
    distance_out = ndi.distance_transform_edt(outside) if inside.any() else np.full((size, size), np.inf)
    halo = np.exp(-((distance_out - 1.0) ** 2) / 1.5) * outside * rng.uniform(0.03, 0.08)
    membrane = contact * rng.uniform(0.6, 1.0) * contrast  # contact lines lose most of their brightness

    background = rng.uniform(0.28, 0.42) + 0.025 * smooth_noise((size, size), 3.0, rng)
    debris = _debris(size, rng)
    illumination = 1.0 + rng.uniform(0.25, 0.45) * coarse_field(size, 3, rng)
    image = illumination * (background + cell_layer - membrane + halo + debris)
    image = ndi.gaussian_filter(image, rng.uniform(0.6, 1.1))
    image += rng.normal(0.0, rng.uniform(0.015, 0.04), image.shape)
    return _to_uint8(image), mask


def _debris(size: int, rng: np.random.Generator) -> np.ndarray:
    """A few small bright or dark specks: intensity like a cell, shape unlike one."""
    specks = np.zeros((size, size))
    count = rng.poisson(size * size / 2500)
    ys, xs = rng.integers(0, size, (2, count))
    specks[ys, xs] = rng.uniform(-1.0, 1.0, count) * 0.3 * 2 * np.pi * 1.5**2  # peak +-0.3 once blurred
    return ndi.gaussian_filter(specks, 1.5)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# --- scenes ----------------------------------------------------------------------------------

SKY, BUILDING, VEGETATION, ROAD, CAR = range(5)
_SKIES = {  # (zenith, horizon) colours
    "clear": ((60, 120, 200), (175, 205, 235)),
    "overcast": ((140, 145, 155), (200, 200, 205)),
    "dusk": ((55, 60, 110), (235, 150, 95)),
}
_FACADES = np.array([(150, 80, 60), (175, 170, 160), (205, 190, 150), (110, 130, 150), (120, 115, 110)], float)
_CAR_PAINTS = np.array([(170, 20, 25), (25, 50, 140), (225, 225, 225), (25, 25, 28), (150, 155, 160), (220, 180, 30)], float)


def _paint(rgb: np.ndarray, labels: np.ndarray, where: np.ndarray, colour: np.ndarray, label: int) -> None:
    """Fill `where` with a colour (a triple or an (H, W, 3) field) and a class id."""
    rgb[where] = colour[where] if colour.ndim == 3 else colour
    labels[where] = label


def make_scenes(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """RGB (size, size, 3) uint8 road scene and class ids 0..4 (min size 48)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    rgb = np.zeros((size, size, 3))
    labels = np.zeros((size, size), np.uint8)
    horizon = size * rng.uniform(0.35, 0.55)
    fine = smooth_noise((size, size), 0.8, rng)[..., None]

    zenith, low = (np.array(c, float) for c in _SKIES[rng.choice(list(_SKIES))])
    t = np.clip(yy / horizon, 0, 1)[..., None]
    clouds = np.clip(smooth_noise((size, size), size / 14, rng) - 0.6, 0, None)[..., None] * rng.uniform(0, 60)
    _paint(rgb, labels, np.ones_like(labels, bool), zenith * (1 - t) + low * t + clouds, SKY)

    _draw_buildings(rgb, labels, yy, xx, horizon, size, rng)
    ground = yy >= horizon
    grass = np.array([rng.uniform(60, 110), rng.uniform(110, 150), rng.uniform(40, 70)])
    depth = np.clip((yy - horizon) / (size - horizon), 0, 1)[..., None]
    _paint(rgb, labels, ground, grass * (0.75 + 0.3 * depth) * (1 + 0.12 * fine), VEGETATION)
    road_edges = _draw_road(rgb, labels, yy, xx, horizon, size, fine, rng)
    _draw_trees(rgb, labels, yy, xx, horizon, size, road_edges, rng)
    _draw_cars(rgb, labels, yy, xx, horizon, size, road_edges, rng)

    light = rng.uniform(0.65, 1.15) * rng.uniform(0.92, 1.08, 3)
    image = ndi.gaussian_filter(rgb * light, (0.6, 0.6, 0)) + rng.normal(0, rng.uniform(2, 6), rgb.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def _draw_buildings(rgb, labels, yy, xx, horizon, size, rng) -> None:
    """A skyline of facades with window grids, sometimes with gaps of sky between them."""
    x = rng.uniform(-0.1, 0.05) * size
    while x < size:
        width = size * rng.uniform(0.08, 0.28)
        if rng.random() < 0.8:
            top = horizon - size * rng.uniform(0.06, 0.42)
            body = (xx >= x) & (xx < x + width) & (yy >= top) & (yy < horizon + 1)
            facade = _FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.7, 1.2)
            pitch = rng.uniform(4.0, 9.0)
            windows = (((xx - x) % pitch) < pitch * 0.5) & (((yy - top) % (pitch * 1.3)) < pitch * 0.6) & (yy > top + 2)
            glass = np.array([rng.uniform(30, 90), rng.uniform(40, 100), rng.uniform(60, 130)])
            colour = np.where(windows[..., None], glass, facade * (1 + 0.06 * smooth_noise(yy.shape, 1.0, rng)[..., None]))
            _paint(rgb, labels, body, colour, BUILDING)
        x += width + (size * rng.uniform(0.0, 0.1) if rng.random() < 0.4 else 0.0)


def _draw_road(rgb, labels, yy, xx, horizon, size, fine, rng) -> tuple[np.ndarray, np.ndarray]:
    """A road narrowing to a vanishing point on the horizon, with dashed centre and edge lines."""
    vanish = size * rng.uniform(0.3, 0.7)
    bottom_left, bottom_right = size * rng.uniform(-0.45, 0.2), size * rng.uniform(0.8, 1.45)
    depth = np.clip((yy - horizon) / (size - horizon), 0, 1)
    left = vanish + (bottom_left - vanish) * depth
    right = vanish + (bottom_right - vanish) * depth
    road = (yy >= horizon) & (xx >= left) & (xx <= right)
    grey = rng.uniform(65, 125)
    asphalt = grey * (1 + 0.1 * fine) * np.array([1.0, 1.0, rng.uniform(1.0, 1.08)])
    _paint(rgb, labels, road, asphalt, ROAD)
    line_width = 0.5 + 0.02 * size * depth
    centre = np.abs(xx - (left + right) / 2) < line_width / 2
    dashes = (np.sqrt(depth) * 10 + rng.uniform()) % 1 < 0.5
    edges = (np.abs(xx - left - 2 * line_width) < line_width / 2) | (np.abs(xx - right + 2 * line_width) < line_width / 2)
    paint = road & ((centre & dashes) | edges) & (depth > 0.04)
    rgb[paint] = rng.uniform(190, 240)
    return left, right


def _draw_trees(rgb, labels, yy, xx, horizon, size, road_edges, rng) -> None:
    """Round, ragged canopies on trunks along the horizon, off the road."""
    left, right = road_edges
    for _ in range(rng.integers(1, 7)):
        radius = size * rng.uniform(0.04, 0.12)
        cx = rng.uniform(0, size)
        base = horizon + size * rng.uniform(0.0, 0.08)
        row = min(size - 1, int(base))
        if left[row, 0] - radius < cx < right[row, 0] + radius:
            continue  # keep the road clear
        cy = base - radius * rng.uniform(1.2, 2.2)
        ragged = 0.25 * smooth_noise(yy.shape, 1.5, rng)
        canopy = ((xx - cx) / radius) ** 2 + ((yy - cy) / (radius * rng.uniform(0.9, 1.3))) ** 2 < 1 + ragged
        trunk = (np.abs(xx - cx) < max(1.0, radius * 0.12)) & (yy >= cy) & (yy < base)
        leaves = np.array([rng.uniform(30, 70), rng.uniform(70, 120), rng.uniform(25, 50)])
        shade = 1 + 0.25 * smooth_noise(yy.shape, 1.0, rng)[..., None] - 0.25 * ((yy - cy) / radius).clip(-1, 1)[..., None]
        _paint(rgb, labels, trunk, np.array([80.0, 60, 40]), VEGETATION)
        _paint(rgb, labels, canopy, leaves * shade, VEGETATION)


def _draw_cars(rgb, labels, yy, xx, horizon, size, road_edges, rng) -> None:
    """Cars on the road, sized by perspective, far ones first so near ones occlude them."""
    left, right = road_edges
    for depth in np.sort(rng.uniform(0.15, 0.95, rng.integers(1, 5))):
        bottom = horizon + depth * (size - horizon)
        row = min(size - 1, int(bottom))
        road_width = right[row, 0] - left[row, 0]
        width = road_width * rng.uniform(0.16, 0.26)
        if width < 4:
            continue
        height = width * rng.uniform(0.55, 0.75)
        cx = left[row, 0] + road_width * rng.uniform(0.2, 0.8)
        shadow = ((xx - cx) / (width * 0.6)) ** 2 + ((yy - bottom) / (height * 0.12)) ** 2 < 1
        rgb[shadow & (labels == ROAD)] *= 0.5
        body = (np.abs(xx - cx) < width / 2) & (yy > bottom - height * 0.6) & (yy < bottom - height * 0.08)
        rise = (bottom - height * 0.6 - yy) / (height * 0.4)  # 0 at the roof line's foot, 1 at the roof
        cabin = (rise >= 0) & (rise < 1) & (np.abs(xx - cx) < width * (0.42 - 0.1 * rise))
        wheels = ((np.abs(np.abs(xx - cx) - width * 0.32) < width * 0.11) & (yy >= bottom - height * 0.2) & (yy < bottom))
        paint = _CAR_PAINTS[rng.integers(len(_CAR_PAINTS))] * (1 + 0.05 * rng.standard_normal())
        _paint(rgb, labels, body | cabin, paint, CAR)
        glass = cabin & (np.abs(xx - cx) < width * (0.36 - 0.1 * rise)) & (rise < 0.8)
        rgb[glass] = (40, 50, 60)
        rgb[(yy > bottom - height * 0.5) & (yy < bottom - height * 0.4) & body] *= 0.8  # a door line
        _paint(rgb, labels, wheels, np.array([20.0, 20, 22]), CAR)


# --- multispectral ---------------------------------------------------------------------------

BANDS = ("B2 blue", "B3 green", "B4 red", "B5 red edge", "B6 red edge", "B7 red edge",
         "B8 NIR", "B8A narrow NIR", "B11 SWIR", "B12 SWIR")
VISIBLE = (0, 1, 2)
WATER, LAND_VEGETATION, BARE_SOIL, BUILT_UP, CLOUD = range(5)
SPECTRA = np.array([  # surface reflectance x 10000, one row per class, one column per band
    [700, 620, 420, 320, 260, 230, 180, 160, 80, 50],  # water: dark, darkest in NIR/SWIR
    [350, 700, 380, 1150, 2800, 3400, 3700, 3800, 2000, 1000],  # vegetation: red edge, NIR plateau
    [1100, 1350, 1650, 1950, 2150, 2300, 2450, 2550, 3300, 2900],  # bare soil: SWIR highest
    [1100, 1350, 1650, 1700, 1750, 1780, 1800, 1820, 1950, 1750],  # built-up: soil's colour, flat beyond
    [5600, 5500, 5400, 5350, 5300, 5250, 5200, 5150, 3600, 2300],  # cloud: bright, dips in SWIR
], float)


def make_multispectral(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """10-band (size, size, 10) uint16 reflectance-like image, class ids 0..4 (min size 32)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    labels = np.full((size, size), LAND_VEGETATION, np.uint8)
    labels[smooth_noise((size, size), size / 12, rng) < rng.uniform(-0.6, 0.6)] = BARE_SOIL
    _add_built_up(labels, size, rng)
    elevation = smooth_noise((size, size), size / 8, rng)
    water = elevation < np.quantile(elevation, rng.uniform(0.0, 0.25))
    if rng.random() < 0.5:  # a meandering river
        course = size * rng.uniform(0.2, 0.8) + size * 0.15 * np.sin(xx / size * rng.uniform(3, 9) + rng.uniform(0, 6))
        water |= np.abs(yy - course) < size * rng.uniform(0.015, 0.04)
    labels[water] = WATER

    surface = SPECTRA[labels]
    vigour = 0.15 * smooth_noise((size, size), 3.0, rng)
    nir_side = np.linspace(0, 1, len(BANDS)) * (labels == LAND_VEGETATION)[..., None]
    surface *= 1 + vigour[..., None] * nir_side  # healthier plants: more NIR
    roofs = (labels == BUILT_UP)[..., None] * 0.15 * smooth_noise((size, size), 0.7, rng)[..., None]
    surface *= (1 + 0.1 * smooth_noise((size, size), 2.0, rng)[..., None] + roofs)

    thickness = np.clip((smooth_noise((size, size), size / 10, rng) - rng.uniform(0.5, 3.0)) / 0.6, 0, 1)
    labels[thickness > 0.5] = CLOUD
    alpha = thickness[..., None]
    image = (1 - alpha) * surface + alpha * SPECTRA[CLOUD] * (1 + 0.04 * smooth_noise((size, size), 2.0, rng))[..., None]
    image = image * rng.uniform(0.85, 1.15) + rng.normal(0, 30, image.shape)
    return np.clip(np.rint(image), 0, 10000).astype(np.uint16), labels


def _add_built_up(labels: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """Towns: blocks of a street grid, kept where a smooth 'urban' field is high."""
    block = int(rng.integers(6, 12))
    urban = smooth_noise((size, size), size / 8, rng)
    town = urban[block // 2 :: block, block // 2 :: block] > rng.uniform(0.5, 1.5)
    town = np.kron(town, np.ones((block, block), bool))[:size, :size]
    padded = np.zeros((size, size), bool)
    padded[: town.shape[0], : town.shape[1]] = town
    labels[padded] = BUILT_UP


# --- writing a data set ----------------------------------------------------------------------

IGNORE_INDEX = 255
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class SynthSet:
    """One generated data set: its generator, classes (name, colour), file type and limits."""

    make: PairMaker
    classes: tuple[tuple[str, tuple[int, int, int]], ...]
    extension: str
    min_size: int
    task: str


SETS: dict[str, SynthSet] = {
    "cells": SynthSet(make_cells, (("background", (0, 0, 0)), ("cell", (255, 255, 255))), ".png", 32, "binary"),
    "scenes": SynthSet(
        make_scenes,
        (("sky", (70, 130, 180)), ("building", (70, 70, 70)), ("vegetation", (107, 142, 35)),
         ("road", (128, 64, 128)), ("car", (0, 0, 142))),
        ".png", 48, "multiclass",
    ),
    "multispectral": SynthSet(
        make_multispectral,
        (("water", (28, 107, 160)), ("vegetation", (34, 139, 34)), ("bare soil", (196, 164, 132)),
         ("built-up", (200, 30, 30)), ("cloud", (255, 255, 255))),
        ".tif", 32, "multiclass",
    ),
}


@dataclass(frozen=True)
class SynthSummary:
    """What `write_dataset` wrote: where, how many pairs, and each class's share of the pixels."""

    name: str
    out: Path
    count: int
    size: int
    shares: dict[str, float]

    def to_text(self) -> str:
        shares = ", ".join(f"{name} {share:.1%}" for name, share in self.shares.items())
        return f"wrote {self.count} {self.name} pairs of {self.size}x{self.size} to {self.out} ({shares})"


def generate(name: str, size: int, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair number `index` of a set: its own generator seeded by (seed, index), so any pair can
    be regenerated alone and the first N pairs do not depend on how many were asked for."""
    return _lookup(name).make(size, np.random.default_rng([seed, index]))


def write_dataset(name: str, out: str | Path, *, count: int = 200, size: int = 128, seed: int = 0) -> SynthSummary:
    """Write `count` pairs to `out` in the standard layout; all or nothing.

    The set is built in a hidden sibling folder and renamed into place at the end, so an
    interrupted run never leaves a half-written data set. splits/train.txt and val.txt hold
    the first 80% and the last 20% of the stems (the pairs are independent draws).
    """
    from unetkit.data.io import write_image, write_mask

    spec = _lookup(name)
    out = Path(out)
    _check_request(name, spec, out, count, size, seed)
    with staging_folder(out) as temp:
        (temp / "images").mkdir()
        (temp / "masks").mkdir()
        palette = [colour for _, colour in spec.classes]
        counts = np.zeros(len(spec.classes), np.int64)
        stems = [f"{name}_{index:0{max(4, len(str(count - 1)))}d}" for index in range(count)]
        for index, stem in enumerate(stems):
            image, mask = generate(name, size, seed, index)
            write_image(temp / "images" / f"{stem}{spec.extension}", image)
            write_mask(temp / "masks" / f"{stem}.png", mask, palette)
            counts += np.bincount(mask.ravel(), minlength=len(spec.classes))
        _write_classes(temp, spec)
        _write_splits(temp, stems)
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace cannot take its place on every OS
        os.replace(temp, out)
    shares = {cls: float(n) / counts.sum() for (cls, _), n in zip(spec.classes, counts)}
    return SynthSummary(name, out, count, size, shares)


def _lookup(name: str) -> SynthSet:
    if name not in SETS:
        raise UnetkitError(f"there is no generated data set {name!r}: choose one of {', '.join(SETS)}")
    return SETS[name]


def _check_request(name: str, spec: SynthSet, out: Path, count: int, size: int, seed: int) -> None:
    """Refuse, before writing anything, what would fail or overwrite data."""
    if count < 1:
        raise UnetkitError(f"--count {count} asks for no images: use --count 1 or more")
    if size < spec.min_size:
        raise UnetkitError(f"--size {size} is too small for {name}: use --size {spec.min_size} or more")
    if seed < 0:
        raise UnetkitError(f"--seed {seed} is negative: use a seed of 0 or more")
    if out.exists() and not out.is_dir():
        raise UnetkitError(f"{out} is a file: give --out a new folder path")
    if out.is_dir() and any(out.iterdir()):
        raise UnetkitError(f"{out} already exists and is not empty: choose a new --out folder or empty this one")


def _write_classes(root: Path, spec: SynthSet) -> None:
    """One class a line, so the file reads like a table."""
    rows = ",\n".join(
        "    " + json.dumps({"id": i, "name": n, "color": list(c)}) for i, (n, c) in enumerate(spec.classes)
    )
    text = f'{{\n  "classes": [\n{rows}\n  ],\n  "ignore_index": {IGNORE_INDEX},\n  "task": "{spec.task}"\n}}\n'
    (root / "classes.json").write_text(text, encoding="utf-8")


def _write_splits(root: Path, stems: list[str]) -> None:
    """80/20 by position; a single pair gets no splits (the checker then trains on it alone)."""
    if len(stems) < 2:
        return
    val = min(max(1, round(VAL_FRACTION * len(stems))), len(stems) - 1)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("".join(f"{s}\n" for s in stems[:-val]), encoding="utf-8")
    (root / "splits" / "val.txt").write_text("".join(f"{s}\n" for s in stems[-val:]), encoding="utf-8")


__all__ = [
    "BANDS", "SETS", "SynthSet", "SynthSummary", "generate", "make_cells", "make_multispectral", "make_scenes",
    "write_dataset",
]
