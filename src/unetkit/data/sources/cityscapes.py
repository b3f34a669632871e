"""Cityscapes-style label-id PNGs: leftImg8bit/SPLIT/CITY/*_leftImg8bit.png + gtFine/.../*_labelIds.png.

Label ids (0..33) become the 19 standard training ids, everything else 255 (ignored),
with the official names and colours. The train and val folders become splits/train.txt
and splits/val.txt; the test folder is left out (its public labels are empty).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from unetkit.data.io import UnreadableFile, read_image, read_mask_raw, write_mask
from unetkit.data.sources import Staging
from unetkit.errors import UnetkitError

IGNORE = 255
# (label id, train id name, colour) of the 19 evaluated classes, in train-id order.
TRAIN_CLASSES = [
    (7, "road", [128, 64, 128]), (8, "sidewalk", [244, 35, 232]), (11, "building", [70, 70, 70]),
    (12, "wall", [102, 102, 156]), (13, "fence", [190, 153, 153]), (17, "pole", [153, 153, 153]),
    (19, "traffic light", [250, 170, 30]), (20, "traffic sign", [220, 220, 0]),
    (21, "vegetation", [107, 142, 35]), (22, "terrain", [152, 251, 152]), (23, "sky", [70, 130, 180]),
    (24, "person", [220, 20, 60]), (25, "rider", [255, 0, 0]), (26, "car", [0, 0, 142]), (27, "truck", [0, 0, 70]),
    (28, "bus", [0, 60, 100]), (31, "train", [0, 80, 100]), (32, "motorcycle", [0, 0, 230]),
    (33, "bicycle", [119, 11, 32]),
]
CLASSES = [{"id": i, "name": name, "color": color} for i, (_, name, color) in enumerate(TRAIN_CLASSES)]
SPLITS = ("train", "val")


def label_to_train_ids() -> np.ndarray:
    """A 256-entry look-up table: label id -> train id, 255 for the unevaluated ones."""
    lut = np.full(256, IGNORE, np.uint8)
    for train_id, (label_id, _, _) in enumerate(TRAIN_CLASSES):
        lut[label_id] = train_id
    return lut


def convert(src: Path, stage: Staging) -> None:
    images_root, labels_root = _find_dir(src, "leftImg8bit"), _find_dir(src, "gtFine")
    if images_root is None or labels_root is None:
        raise UnetkitError(f"--src {src} needs leftImg8bit/ and gtFine/; unpack leftImg8bit_trainvaltest.zip and "
                           "gtFine_trainvaltest.zip there")
    lut = label_to_train_ids()
    palette = [tuple(c["color"]) for c in CLASSES]
    for split in SPLITS:
        for label_file in sorted((labels_root / split).rglob("*_gtFine_labelIds.png")):
            base = label_file.name.removesuffix("_gtFine_labelIds.png")
            relative = label_file.parent.relative_to(labels_root / split)
            image_file = images_root / split / relative / f"{base}_leftImg8bit.png"
            if not image_file.is_file():
                stage.skipped.append(f"{label_file}: no {image_file.name}")
                continue
            try:
                raw, kind = read_mask_raw(label_file)
                if kind != "ids":
                    raise UnreadableFile(label_file, "not a single-channel label-id PNG")
                read_image(image_file)
            except UnreadableFile as error:
                stage.skipped.append(str(error))
                continue
            stem = f"{relative.as_posix()}/{base}" if relative.parts else base
            target = stage.image_path(stem, ".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image_file, target)
            write_mask(stage.mask_path(stem), lut[np.clip(raw, 0, 255).astype(np.uint8)], palette=palette)
            stage.add_to_split(split, stem)
            stage.pairs += 1
    stage.write_classes(CLASSES, ignore_index=IGNORE)


def _find_dir(src: Path, name: str) -> Path | None:
    if (src / name).is_dir():
        return src / name
    return next((p for p in sorted(src.rglob(name)) if p.is_dir()), None)
