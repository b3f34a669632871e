"""Oxford-IIIT Pet: images/*.jpg and annotations/trimaps/*.png.

Trimap values: 1 pet, 2 background, 3 border (uncertain). The standard layout makes a
binary task with the border ignored: 2 -> 0 "background", 1 -> 1 "pet", 3 -> 255.
annotations/trainval.txt and test.txt become splits/train.txt and splits/test.txt.
A few images of the release are PNG, grayscale or CMYK behind a .jpg name; they are
re-encoded as RGB PNG so that every image has three bands. Unreadable ones are skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from unetkit.data.io import UnreadableFile, read_image, read_mask_raw, write_image, write_mask
from unetkit.data.sources import Staging
from unetkit.errors import UnetkitError

CLASSES = [
    {"id": 0, "name": "background", "color": [0, 0, 0]},
    {"id": 1, "name": "pet", "color": [255, 255, 255]},
]
IGNORE = 255
TRIMAP_TO_ID = {1: 1, 2: 0, 3: IGNORE}


def convert(src: Path, stage: Staging) -> None:
    images, trimaps = _find_dir(src, "images"), _find_dir(src, "trimaps")
    if images is None or trimaps is None:
        raise UnetkitError(f"--src {src} needs images/ and annotations/trimaps/; unpack images.tar.gz and "
                           "annotations.tar.gz there")
    masks = {p.stem: p for p in trimaps.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")}
    lut = np.full(256, IGNORE, np.uint8)
    for value, class_id in TRIMAP_TO_ID.items():
        lut[value] = class_id
    palette = [tuple(c["color"]) for c in CLASSES]
    for image_file in sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        stem = image_file.stem
        if stem not in masks:
            stage.skipped.append(f"{image_file}: no trimap")
            continue
        try:
            raw, kind = read_mask_raw(masks[stem])
            if kind != "ids" or not set(np.unique(raw).tolist()) <= set(TRIMAP_TO_ID):
                raise UnreadableFile(masks[stem], "not a trimap of values 1, 2, 3")
            _copy_image(image_file, stage, stem)
        except UnreadableFile as error:
            stage.skipped.append(str(error))
            continue
        write_mask(stage.mask_path(stem), lut[raw], palette=palette)
        stage.pairs += 1
    for list_name, split in (("trainval.txt", "train"), ("test.txt", "test")):
        listing = trimaps.parent / list_name
        if listing.is_file():
            written = {p.stem for p in (stage.path / "masks").glob("*.png")}
            for line in listing.read_text(encoding="utf-8").splitlines():
                name = line.split()[0] if line.strip() and not line.startswith("#") else ""
                if name in written:
                    stage.add_to_split(split, name)
    stage.write_classes(CLASSES, ignore_index=IGNORE)


def _copy_image(image_file: Path, stage: Staging, stem: str) -> None:
    """Keep true RGB JPEGs byte for byte; re-encode anything else as an RGB PNG."""
    image = read_image(image_file)  # decodes fully: a damaged file is skipped, not copied
    with Image.open(image_file) as picture:
        plain_jpeg = picture.format == "JPEG" and picture.mode == "RGB"
    if plain_jpeg:
        target = stage.image_path(stem, ".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image_file, target)
        return
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    write_image(stage.image_path(stem, ".png"), image[:, :, :3].astype(np.uint8))


def _find_dir(src: Path, name: str) -> Path | None:
    direct = src / name if name == "images" else src / "annotations" / name
    if direct.is_dir():
        return direct
    return next((p for p in sorted(src.rglob(name)) if p.is_dir()), None)
