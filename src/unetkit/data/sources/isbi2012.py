"""ISBI 2012 EM membranes: train-volume.tif / train-labels.tif stacks, or PNG folders of them.

The challenge labels are 255 for cell interior and 0 for membrane; the standard layout
makes membrane the foreground: 0 -> class 1 "membrane", 255 -> class 0 "other" (values
in between, from resampled copies, go to the nearer of the two). Slices become
slice00..slice29 and every fifth slice is the validation split, as in the reference copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from unetkit.data.io import IMAGE_EXTENSIONS, read_image, read_mask_raw, write_image, write_mask
from unetkit.data.sources import Staging
from unetkit.errors import UnetkitError

CLASSES = [
    {"id": 0, "name": "other", "color": [0, 0, 0]},
    {"id": 1, "name": "membrane", "color": [255, 255, 255]},
]
IMAGE_FOLDERS = ("image", "images", "img", "volume")
LABEL_FOLDERS = ("label", "labels", "mask", "masks")


def convert(src: Path, stage: Staging) -> None:
    slices = _from_stacks(src) or _from_folders(src)
    if slices is None:
        raise UnetkitError(
            f"--src {src} has neither train-volume.tif + train-labels.tif nor image/ + label/ PNG folders; "
            "unpack the ISBI 2012 training data there"
        )
    _check_challenge_labels(slices, src)
    width = max(2, len(str(len(slices) - 1)))
    for index, (image, labels) in enumerate(slices):
        stem = f"slice{index:0{width}d}"
        write_image(stage.image_path(stem, ".png"), image)
        write_mask(stage.mask_path(stem), membrane_ids(labels), palette=[tuple(c["color"]) for c in CLASSES])
        stage.add_to_split("val" if index % 5 == 4 else "train", stem)
        stage.pairs += 1
    stage.write_classes(CLASSES, ignore_index=255)


def membrane_ids(labels: np.ndarray) -> np.ndarray:
    """Challenge labels (0 membrane, 255 interior) -> class ids (1 membrane, 0 other)."""
    top = 65535 if labels.dtype == np.uint16 else 255
    return (labels.astype(np.int64) * 2 < top).astype(np.uint8)


def _check_challenge_labels(slices: list[tuple[np.ndarray, np.ndarray]], src: Path) -> None:
    """Challenge labels use the two ends of their range (0 membrane, 255 cell); labels that
    never reach the upper half are class ids already (0/1), which `membrane_ids` would turn
    into all membrane."""
    highest = max(int(labels.max()) for _, labels in slices)
    top = 65535 if slices[0][1].dtype == np.uint16 else 255
    if highest * 2 < top:
        raise UnetkitError(
            f"--src {src}: its labels hold values up to {highest}, not the challenge's 0 (membrane) and {top} "
            f"(cell); if it is a data set with images/ and masks/ of class ids already, train on it with "
            f"--data {src} directly"
        )


def _from_stacks(src: Path) -> list[tuple[np.ndarray, np.ndarray]] | None:
    volume, labels = _find(src, "train-volume.tif"), _find(src, "train-labels.tif")
    if volume is None or labels is None:
        return None
    images, masks = _read_stack(volume), _read_stack(labels)
    if images.shape != masks.shape:
        raise UnetkitError(
            f"{labels} holds {masks.shape[0]} slices of {masks.shape[1]}x{masks.shape[2]} but {volume} holds "
            f"{images.shape[0]} of {images.shape[1]}x{images.shape[2]}; use the matching pair of stacks"
        )
    return list(zip(images, masks))


def _read_stack(path: Path) -> np.ndarray:
    try:
        stack = tifffile.imread(path)
    except (tifffile.TiffFileError, OSError, ValueError) as error:
        raise UnetkitError(f"cannot read {path}: {error}; download it again") from None
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise UnetkitError(f"{path} is not a stack of grayscale slices (shape {stack.shape}); use the challenge file")
    return stack


def _from_folders(src: Path) -> list[tuple[np.ndarray, np.ndarray]] | None:
    for folder in sorted([src, *(p for p in src.rglob("*") if p.is_dir())]):
        images = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), None)
        labels = next((folder / n for n in LABEL_FOLDERS if (folder / n).is_dir()), None)
        if images is None or labels is None:
            continue
        image_files = _by_stem(images)
        label_files = _by_stem(labels)
        stems = sorted(set(image_files) & set(label_files), key=_natural)
        if not stems:
            continue
        pairs = []
        for stem in stems:
            image = read_image(image_files[stem])
            raw, kind = read_mask_raw(label_files[stem])
            pairs.append((image[:, :, 0] if image.shape[2] == 1 else image, raw if kind == "ids" else raw[..., 0]))
        return pairs
    return None


def _find(src: Path, name: str) -> Path | None:
    direct = src / name
    return direct if direct.is_file() else next(iter(sorted(src.rglob(name))), None)


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def _natural(stem: str) -> tuple:
    """'2' before '10': the PNG copies number their slices without zero padding."""
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)
