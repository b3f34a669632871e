"""CARLA road scenes (Lyft-Udacity challenge, DeepLearning.AI U-Net lab).

Each episode folder holds CameraRGB/ and CameraSeg/ (or CameraMask/) with the same file
names; the class id (CARLA 0.8 semantic tags 0..12) is in the first (red) channel of the
mask. Several episode folders (dataA..dataE) become sub-folders of images/ and masks/.
"""

from __future__ import annotations

from pathlib import Path

from unetkit.data.io import (
    IMAGE_EXTENSIONS,
    UnreadableFile,
    read_image,
    read_mask_raw,
    write_image,
    write_mask,
)
from unetkit.data.sources import Staging
from unetkit.errors import UnetkitError

CLASSES = [
    {"id": i, "name": name, "color": color}
    for i, (name, color) in enumerate([
        ("none", [0, 0, 0]), ("buildings", [70, 70, 70]), ("fences", [190, 153, 153]), ("other", [72, 0, 90]),
        ("pedestrians", [220, 20, 60]), ("poles", [153, 153, 153]), ("road lines", [157, 234, 50]),
        ("roads", [128, 64, 128]), ("sidewalks", [244, 35, 232]), ("vegetation", [107, 142, 35]),
        ("vehicles", [0, 0, 255]), ("walls", [102, 102, 156]), ("traffic signs", [220, 220, 0]),
    ])
]
MASK_FOLDERS = ("CameraSeg", "CameraMask")


def convert(src: Path, stage: Staging) -> None:
    episodes = sorted(p.parent for p in [src / "CameraRGB", *src.rglob("CameraRGB")] if p.is_dir())
    episodes = list(dict.fromkeys(episodes))
    if not episodes:
        raise UnetkitError(f"--src {src} has no CameraRGB/ folder; unpack the CARLA data set there")
    palette = [tuple(c["color"]) for c in CLASSES]
    for episode in episodes:
        masks = next((episode / n for n in MASK_FOLDERS if (episode / n).is_dir()), None)
        if masks is None:
            raise UnetkitError(f"{episode / 'CameraRGB'} has no CameraSeg/ or CameraMask/ beside it; "
                               "unpack the masks next to the images")
        prefix = "" if len(episodes) == 1 else episode.relative_to(src).as_posix() + "/"
        mask_files = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
        for image_file in sorted(p for p in (episode / "CameraRGB").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            if image_file.stem not in mask_files:
                stage.skipped.append(f"{image_file}: no mask with the same name")
                continue
            try:
                image = read_image(image_file)
                raw, kind = read_mask_raw(mask_files[image_file.stem])
            except UnreadableFile as error:
                stage.skipped.append(str(error))
                continue
            ids = raw[:, :, 0] if kind == "rgb" else raw
            stem = prefix + image_file.stem
            write_image(stage.image_path(stem, ".png"), image)
            write_mask(stage.mask_path(stem), ids, palette=palette)
            stage.pairs += 1
    stage.write_classes(CLASSES, ignore_index=None)
