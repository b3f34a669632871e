"""Augmentation: image and mask transformed together, reproducible from one seed per call.

Built on albumentations 2.0.8 (the last MIT release). Levels (`build_augmentation(level=...)`):

- ``none``: nothing but the crop to ``patch_size`` (padded where the image is smaller);
- ``light``: + the 8 flips/90-degree rotations, mild brightness/contrast;
- ``default``: + random scale 0.8-1.25x, elastic deformation (30%), brightness/contrast,
  gamma, Gaussian noise, Gaussian blur;
- ``strong``: wider ranges, + rotation by any angle up to 30 degrees, elastic 50%.

``flips`` says which of the flips the levels above ``none`` use: ``all`` (the 8 flips and
90-degree turns, for images without an up: microscopy, aerial and satellite tiles),
``horizontal`` (left-right mirroring only, for scenes with a sky and a road) or ``none``.

The elastic deformation is the U-Net paper's: Gaussian random displacements on a coarse 3x3
grid, bicubic-interpolated to every pixel (std 2-4% of the patch side, 5-10 px at 256 px;
3-5% for ``strong``), mirrored at the borders.

Three pieces of glue are ours, each for a reason found by testing albumentations 2.0.8:

- its pixel transforms (brightness/contrast, gamma, noise, blur) clip float32 images to [0, 1],
  which would wreck normalised data. Our four subclasses keep albumentations' parameter
  sampling and replace only ``apply`` with a version valid for any real values: brightness is
  an additive shift in std units, contrast a scaling around each band's mean, gamma acts on a
  per-band min-max rescaled copy mapped back, noise is additive in std units.
- ``Compose.set_random_seed(seed)`` seeds every transform with the *same* number, so e.g. two
  transforms with p=0.5 always fire together. We hand all transforms one shared generator pair.
- masks go through OpenCV as compact uint8/uint16 codes with nearest-neighbour sampling and
  are decoded back to the caller's dtype, so any integer labels (even -100) survive exactly:
  an output mask only holds input labels or the padding label, never a blend.
- an image with a side under ``MIN_SIDE`` pixels is padded to it first (0 in the image, the
  padding label in the mask): RandomScale would shrink a 1-pixel side to 0 and OpenCV's
  resize fails on it. Without a patch size such an image comes back ``MIN_SIDE`` pixels wide.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import (offline)

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

from unetkit.errors import UnetkitError  # noqa: E402

LEVELS = ("none", "light", "default", "strong")
FLIPS = ("all", "horizontal", "none")
MIN_SIDE = 8  # the smallest side the geometric steps get: 8 x 0.67 (strong's zoom-out) still leaves 5

_CONSTANT = cv2.BORDER_CONSTANT
_MIRROR = cv2.BORDER_REFLECT_101


# --- intensity transforms valid on normalised float32 data (albumentations' clip to [0, 1]) ----


def _per_band(reduce: Any, img: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (C,) statistic as two axis-0 reductions: numpy's axis=(0, 1) reduction is
    ~50x slower on band-last images (2.5 ms instead of 0.05 ms at 256 x 256 x 3)."""
    return reduce(reduce(img, axis=0), axis=0).astype(np.float32)


def _affine_per_band(img: np.ndarray, scale: np.ndarray | float, offset: np.ndarray) -> np.ndarray:
    """img * scale + offset with per-band (C,) values, on the (H, W * C) view: broadcasting over a
    last axis of 3 bands runs ~6x slower in numpy."""
    height, width, bands = img.shape
    scale = np.tile(np.broadcast_to(np.float32(scale), (bands,)), width)
    out = img.reshape(height, width * bands) * scale + np.tile(offset, width)
    return out.reshape(height, width, bands).astype(np.float32, copy=False)


class ShiftScaleIntensity(A.RandomBrightnessContrast):
    """Brightness: add beta (std units); contrast: scale by alpha around each band's mean."""

    def apply(self, img: np.ndarray, alpha: float, beta: float, **params: Any) -> np.ndarray:
        mean = _per_band(np.mean, img)
        return _affine_per_band(img, alpha, mean * np.float32(1 - alpha) + np.float32(beta))


class RangeGamma(A.RandomGamma):
    """Gamma on a per-band [0, 1] rescaled copy, mapped back to the band's own range."""

    def apply(self, img: np.ndarray, gamma: float, **params: Any) -> np.ndarray:
        low = _per_band(np.min, img)
        span = np.maximum(_per_band(np.max, img) - low, np.float32(1e-6))
        unit = _affine_per_band(img, 1 / span, -low / span)
        np.clip(unit, 0.0, 1.0, out=unit)
        np.power(unit, np.float32(gamma), out=unit)
        return _affine_per_band(unit, span, low)


class AdditiveNoise(A.GaussNoise):
    """Gaussian noise added without clipping; its std (a fraction of 1.0) is in std units."""

    def apply(self, img: np.ndarray, noise_map: np.ndarray, **params: Any) -> np.ndarray:
        return (img + noise_map).astype(np.float32)


class UnclippedBlur(A.GaussianBlur):
    """Separable Gaussian blur (any band count) without the clip to [0, 1]."""

    def apply(self, img: np.ndarray, kernel: np.ndarray, **params: Any) -> np.ndarray:
        blurred = cv2.sepFilter2D(img, -1, kernel, kernel, borderType=_MIRROR)
        return blurred.reshape(img.shape)


class GridElastic(A.ElasticTransform):
    """The U-Net paper's elastic deformation: Gaussian random displacements on a coarse
    grid x grid lattice (std a `displacement` fraction of the shorter side), bicubic-interpolated
    to every pixel. albumentations does the warp (bilinear image, nearest mask, borders, p).
    On a 256 x 256 x 3 patch this takes ~1.3 ms, warp included; albumentations' ThinPlateSpline
    (3x3 grid) took ~14 ms and its ElasticTransform (per-pixel noise, blurred) ~11 ms."""

    def __init__(self, grid: int = 3, displacement: tuple[float, float] = (0.02, 0.04), *,
                 border_mode: int = cv2.BORDER_REFLECT_101, p: float = 0.5) -> None:
        super().__init__(border_mode=border_mode, p=p)
        self.grid = grid
        self.displacement = displacement

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        std = self.py_random.uniform(*self.displacement) * min(height, width)
        coarse = self.random_generator.normal(0.0, std, (2, self.grid, self.grid)).astype(np.float32)
        dx, dy = (cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC) for c in coarse)
        return {
            "map_x": dx + np.arange(width, dtype=np.float32)[None, :],
            "map_y": dy + np.arange(height, dtype=np.float32)[:, None],
        }


# --- levels --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    """Ranges and probabilities of one level; 0 probability or None range = left out."""

    dihedral: bool = False
    scale: tuple[float, float] | None = None
    rotate: float = 0.0
    elastic_p: float = 0.0
    elastic: tuple[float, float] = (0.02, 0.04)
    intensity_p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    gamma_p: float = 0.0
    gamma: tuple[float, float] = (80, 125)
    noise_p: float = 0.0
    noise_std: tuple[float, float] = (0.02, 0.1)
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.0)


_RECIPES = {
    "none": _Recipe(),
    "light": _Recipe(dihedral=True, intensity_p=0.3, brightness=0.1, contrast=0.1),
    "default": _Recipe(
        dihedral=True, scale=(0.8, 1.25), elastic_p=0.3,
        intensity_p=0.5, brightness=0.2, contrast=0.2,
        gamma_p=0.3, noise_p=0.25, blur_p=0.2,
    ),
    "strong": _Recipe(
        dihedral=True, scale=(0.67, 1.5), rotate=30.0, elastic_p=0.5, elastic=(0.03, 0.05),
        intensity_p=0.7, brightness=0.3, contrast=0.3,
        gamma_p=0.5, gamma=(70, 150), noise_p=0.4, noise_std=(0.05, 0.2),
        blur_p=0.3, blur_sigma=(0.3, 1.5),
    ),
}


def _pipeline(recipe: _Recipe, patch_size: tuple[int, int] | None, fill_code: int,
              flips: str = "all") -> list[A.BasicTransform]:
    """Geometry first (crop early so later steps touch only the patch), intensity last."""
    geometric: list[A.BasicTransform] = []
    square = patch_size is None or patch_size[0] == patch_size[1]
    dihedral: list[A.BasicTransform] = []
    if recipe.dihedral and flips == "all":
        dihedral = [A.D4(p=1.0)]
    elif recipe.dihedral and flips == "horizontal":
        dihedral = [A.HorizontalFlip(p=0.5)]
    if not square:  # a 90-degree turn of a non-square patch changes its shape: turn the image
        geometric += dihedral
    if recipe.scale is not None:
        low, high = recipe.scale
        if patch_size is None:
            geometric.append(A.Affine(scale=(low, high), border_mode=_CONSTANT, fill=0, fill_mask=fill_code, p=1.0))
        else:
            geometric.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0))
    if patch_size is not None:
        geometric.append(
            A.RandomCrop(
                *patch_size, pad_if_needed=True, pad_position="random",
                border_mode=_CONSTANT, fill=0, fill_mask=fill_code,
            )
        )
    if square:
        geometric += dihedral
    if recipe.rotate:
        geometric.append(
            A.Affine(rotate=(-recipe.rotate, recipe.rotate), border_mode=_CONSTANT, fill=0, fill_mask=fill_code, p=0.5)
        )
    if recipe.elastic_p:
        geometric.append(GridElastic(grid=3, displacement=recipe.elastic, border_mode=_MIRROR, p=recipe.elastic_p))
    intensity: list[A.BasicTransform] = []
    if recipe.intensity_p:
        intensity.append(
            ShiftScaleIntensity(
                brightness_limit=recipe.brightness, contrast_limit=recipe.contrast, p=recipe.intensity_p
            )
        )
    if recipe.gamma_p:
        intensity.append(RangeGamma(gamma_limit=recipe.gamma, p=recipe.gamma_p))
    if recipe.noise_p:
        intensity.append(AdditiveNoise(std_range=recipe.noise_std, p=recipe.noise_p))
    if recipe.blur_p:
        intensity.append(UnclippedBlur(sigma_limit=recipe.blur_sigma, p=recipe.blur_p))
    return geometric + intensity


# --- masks: exact labels through OpenCV ------------------------------------------------------


def _encode_mask(mask: np.ndarray, fill_label: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Labels -> uint8/uint16 codes OpenCV can warp; returns (codes, code->label table, fill code)."""
    if mask.size and 0 <= fill_label <= 255 and mask.min() >= 0 and mask.max() <= 255:
        return mask.astype(np.uint8), None, fill_label
    labels = np.union1d(np.unique(mask), [fill_label])
    if labels.size > 65536:
        raise ValueError(f"mask has {labels.size} distinct labels; at most 65536 are supported")
    dtype = np.uint8 if labels.size <= 256 else np.uint16
    codes = np.searchsorted(labels, mask).astype(dtype)
    return codes, labels, int(np.searchsorted(labels, fill_label))


def _pad_to_min_side(image: np.ndarray, codes: np.ndarray, fill_code: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre an image (and its mask codes) with a side under MIN_SIDE on a MIN_SIDE canvas."""
    grow_h, grow_w = max(MIN_SIDE - image.shape[0], 0), max(MIN_SIDE - image.shape[1], 0)
    if not (grow_h or grow_w):
        return image, codes
    spatial = ((grow_h // 2, grow_h - grow_h // 2), (grow_w // 2, grow_w - grow_w // 2))
    image = np.pad(image, (*spatial, (0, 0)))
    codes = np.pad(codes, spatial + ((0, 0),) * (codes.ndim - 2), constant_values=fill_code)
    return image, codes


# --- the public object -------------------------------------------------------------------------


class Augmentation:
    """A seeded image+mask augmentation; build it with `build_augmentation`.

    Call it as ``aug(image, mask, seed)``; the same seed gives the same output whatever the
    global numpy/random state, so a data loader can derive the seed from (epoch, index).
    A call reseeds the shared pipeline, so use one object per thread (DataLoader worker
    processes each get their own copy; it pickles).
    """

    def __init__(self, level: str, patch_size: tuple[int, int] | None, ignore_index: int | None,
                 flips: str = "all") -> None:
        self.level = level
        self.flips = flips
        self.patch_size = patch_size
        self.ignore_index = ignore_index
        self._fill_label = 0 if ignore_index is None else int(ignore_index)
        self._recipe = _RECIPES[level]
        self._compose_by_fill: dict[int, A.Compose] = {}

    def _compose(self, fill_code: int) -> A.Compose:
        """One Compose per padding code (the code depends on the mask's labels; usually one)."""
        if fill_code not in self._compose_by_fill:
            transforms = _pipeline(self._recipe, self.patch_size, fill_code, self.flips)
            self._compose_by_fill[fill_code] = A.Compose(transforms, p=1.0)
        return self._compose_by_fill[fill_code]

    @property
    def transform_names(self) -> list[str]:
        """The albumentations steps in order (for logs and the report)."""
        return [type(t).__name__ for t in self._compose(0).transforms]

    def __repr__(self) -> str:
        return (
            f"Augmentation(level={self.level!r}, flips={self.flips!r}, patch_size={self.patch_size}, "
            f"ignore_index={self.ignore_index}, steps={self.transform_names})"
        )

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """image (H, W, C) float32, mask (H, W) or (H, W, L) integer -> the augmented pair."""
        image = np.ascontiguousarray(image, dtype=np.float32)
        mask = np.asarray(mask)
        if image.ndim != 3:
            raise ValueError(f"image must be (H, W, C), got shape {image.shape}")
        if mask.ndim not in (2, 3) or mask.shape[:2] != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
        if not np.issubdtype(mask.dtype, np.integer):
            raise TypeError(f"mask must hold integer labels, got dtype {mask.dtype}")
        codes, labels, fill_code = _encode_mask(mask, self._fill_label)
        image, codes = _pad_to_min_side(image, codes, fill_code)
        compose = self._compose(fill_code)
        seed = int(seed) & (2**64 - 1)
        compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = compose(image=image, mask=np.ascontiguousarray(codes))
        out_image = np.ascontiguousarray(out["image"], dtype=np.float32).reshape(*out["image"].shape[:2], -1)
        out_codes = out["mask"].reshape(*out["mask"].shape[:2], *mask.shape[2:])
        out_mask = out_codes if labels is None else labels[out_codes]
        return out_image, np.ascontiguousarray(out_mask.astype(mask.dtype, copy=False))


def build_augmentation(
    patch_size: tuple[int, int] | None, *, level: str = "default", ignore_index: int | None = None,
    flips: str = "all",
) -> Augmentation:
    """The augmentation of one level; patch_size crops (and pads) every sample to (ph, pw).

    Padding (crops past the border, zoom-out, rotations) is 0 in the image (the mean of
    normalised data) and ignore_index in the mask (0 when ignore_index is None).
    """
    if level not in _RECIPES:
        raise UnetkitError(f"augmentation level {level!r} is unknown: use one of {', '.join(LEVELS)}")
    if flips not in FLIPS:
        raise UnetkitError(f"flips {flips!r} is unknown: use one of {', '.join(FLIPS)}")
    if patch_size is not None:
        patch_size = (int(patch_size[0]), int(patch_size[1]))
        if min(patch_size) < 1:
            raise UnetkitError(f"patch size {patch_size} must be positive: use e.g. 256 or 256x256")
    return Augmentation(level, patch_size, ignore_index, flips)


__all__ = ["FLIPS", "LEVELS", "MIN_SIDE", "Augmentation", "build_augmentation"]
