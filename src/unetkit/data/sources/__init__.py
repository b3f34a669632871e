"""Public data sets, converted from the layout they ship in to images/ + masks/.

Nothing is downloaded: each source says where its data can be obtained, and `prepare`
converts a folder the user has already unpacked. The new data set is written to a hidden
staging folder beside `out` and renamed into place only when complete, so a failure
(bad input, full disk, Ctrl-C) leaves no partial data set behind. This module imports
only the standard library so the CLI can list the sources without loading numpy.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.atomic import staging_folder
from unetkit.errors import UnetkitError


@dataclass(frozen=True)
class Source:
    """A public data set: its name, where to get it, and the module that converts it."""

    name: str
    where: str
    module: str


SOURCES: dict[str, Source] = {
    "isbi2012": Source(
        "isbi2012",
        "ISBI 2012 EM segmentation challenge, https://imagej.net/events/isbi-2012-segmentation-challenge "
        "(train-volume.tif + train-labels.tif), or the PNG copy in https://github.com/zhixuhao/unet "
        "(data/membrane/train/image + label)",
        "unetkit.data.sources.isbi2012",
    ),
    "carla": Source(
        "carla",
        "Lyft-Udacity CARLA road scenes, https://www.kaggle.com/datasets/kumaresanmanickavelu/lyft-udacity-challenge "
        "(CameraRGB/ + CameraSeg/ or CameraMask/, class id in the red channel)",
        "unetkit.data.sources.carla",
    ),
    "oxford-pet": Source(
        "oxford-pet",
        "Oxford-IIIT Pet, https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz + annotations.tar.gz "
        "unpacked in one folder)",
        "unetkit.data.sources.oxford_pet",
    ),
    "cityscapes": Source(
        "cityscapes",
        "Cityscapes, https://www.cityscapes-dataset.com/downloads/ (registration; leftImg8bit_trainvaltest.zip + "
        "gtFine_trainvaltest.zip unpacked in one folder)",
        "unetkit.data.sources.cityscapes",
    ),
}


@dataclass
class Prepared:
    """What `prepare` wrote: the data set folder, its pairs per split, what it skipped."""

    name: str
    out: Path
    pairs: int
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"wrote {self.pairs} pairs of {self.name} to {self.out}"]
        if self.splits:
            lines.append("splits: " + ", ".join(f"{name} {count}" for name, count in self.splits.items()))
        for item in self.skipped:
            lines.append(f"skipped: {item}")
        lines.append(f"next: unetkit data check {self.out}")
        return "\n".join(lines)


class Staging:
    """The folder a converter writes into: images/, masks/, classes.json, splits/."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pairs = 0
        self.splits: dict[str, list[str]] = {}
        self.skipped: list[str] = []

    def image_path(self, stem: str, ext: str) -> Path:
        return self.path / "images" / f"{stem}{ext}"

    def mask_path(self, stem: str) -> Path:
        return self.path / "masks" / f"{stem}.png"

    def write_classes(self, classes: list[dict], ignore_index: int | None) -> None:
        payload = {"classes": classes, "ignore_index": ignore_index}
        (self.path / "classes.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    def add_to_split(self, split: str, stem: str) -> None:
        self.splits.setdefault(split, []).append(stem)

    def write_splits(self) -> None:
        if not self.splits:
            return
        folder = self.path / "splits"
        folder.mkdir(exist_ok=True)
        for split, stems in self.splits.items():
            (folder / f"{split}.txt").write_text("".join(f"{s}\n" for s in sorted(stems)), encoding="utf-8")


def prepare(name: str, src: str | Path | None, out: str | Path) -> Prepared:
    """Convert the downloaded data set `name` in `src` to the standard layout in `out`."""
    if name not in SOURCES:
        raise UnetkitError(f"unknown data set {name!r}; choose one of {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    if src is None:
        raise UnetkitError(f"{name} is not downloaded by unetkit: get it from {source.where}, then pass the "
                           "unpacked folder as --src")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UnetkitError(f"--src {src} is not a folder; download {name} from {source.where} and unpack it there")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UnetkitError(f"--out {out} already exists and is not empty; choose a new folder or remove it")
    with staging_folder(out) as staging:
        stage = _convert(source, name, src, staging)
        try:
            if out.exists():
                out.rmdir()
            os.replace(staging, out)
        except OSError as error:
            raise UnetkitError(f"cannot write --out {out}: {error.strerror or error}; check the disk and permissions") \
                from None
    return Prepared(name, out, stage.pairs, {k: len(v) for k, v in stage.splits.items()}, stage.skipped)


def _convert(source: Source, name: str, src: Path, staging: Path) -> Staging:
    """Fill `staging` with the converted pairs and their splits."""
    try:
        stage = Staging(staging)
        importlib.import_module(source.module).convert(src, stage)
        if stage.pairs == 0:
            raise UnetkitError(f"--src {src} holds no {name} pairs; download {name} from {source.where}")
        stage.write_splits()
    except OSError as error:
        raise UnetkitError(f"cannot write {staging}: {error.strerror or error}; check the disk and permissions") \
            from None
    return stage


__all__ = ["SOURCES", "Prepared", "Source", "Staging", "prepare"]
