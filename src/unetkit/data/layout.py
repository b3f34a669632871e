"""Where a data set's files are: images/ and masks/ paired by file stem, and its splits.

A stem is the path below images/ (or masks/) without the extension, so sub-folders pair
too (images/a/x.png <-> masks/a/x.tif is stem "a/x"). A folder masks/STEM/ holding one
binary image per label is the multi-label mask of images/STEM.*. Nothing here decodes
pixels: scanning a large data set costs one directory walk.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.data.io import IMAGE_EXTENSIONS
from unetkit.errors import UnetkitError

SPLITS = ("train", "val", "test")
MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_label", "-label", "_labels", "_gt", "_seg", "_segmentation", "_anno")
_SKIPPED_DIRS = {"__MACOSX", "__pycache__"}
_SKIPPED_FILES = {"Thumbs.db", "desktop.ini"}


@dataclass
class Problem:
    """One thing wrong with a data set: the file, one sentence with the fix, its weight."""

    code: str
    file: str  # relative to the data set root; "" for the data set as a whole
    message: str
    corrupts: bool = True  # True: training would be wrong; False: worth knowing

    def to_line(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{'error' if self.corrupts else 'warning'}: {where}{self.message}"

    def to_dict(self) -> dict:
        return {"severity": "error" if self.corrupts else "warning", "code": self.code, "file": self.file,
                "message": self.message}


@dataclass
class Layout:
    """The files of one data set, by stem, and the problems of pairing them."""

    root: Path
    images: dict[str, Path]
    masks: dict[str, Path]
    problems: list[Problem] = field(default_factory=list)

    @property
    def pairs(self) -> list[str]:
        return sorted(set(self.images) & set(self.masks))

    def relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def scan(root: str | Path) -> Layout:
    """Find images/ and masks/ under `root` and pair them by stem; refuses a non-data-set."""
    root = Path(root)
    if not root.exists():
        raise UnetkitError(f"{root} does not exist; check the path")
    if not root.is_dir():
        raise UnetkitError(f"{root} is not a folder; a data set is a folder with images/ and masks/")
    for part in ("images", "masks"):
        if not (root / part).is_dir():
            raise UnetkitError(
                f"{root} has no {part}/ folder; a data set is a folder with images/ and masks/ "
                "whose files pair by name (or convert a public one with `unetkit data prepare`)"
            )
    layout = Layout(root, {}, {})
    image_stems = _collect(layout, root / "images", label_folders=None)
    if not layout.images:
        raise UnetkitError(
            f"{root / 'images'} holds no images; put the images there as {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    _collect(layout, root / "masks", label_folders=image_stems)
    _pairing_problems(layout)
    return layout


def _collect(layout: Layout, top: Path, label_folders: set[str] | None) -> set[str]:
    """Fill layout.images (label_folders None) or layout.masks; report what cannot be used."""
    found = layout.images if label_folders is None else layout.masks
    for folder, dirs, files in os.walk(top):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        if label_folders is not None:
            for name in list(dirs):
                stem = (here / name).relative_to(top).as_posix()
                if stem in label_folders:
                    dirs.remove(name)  # masks/STEM/ is a per-label folder: do not descend
                    _add(layout, found, stem, here / name)
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or name in _SKIPPED_FILES:
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                layout.problems.append(Problem(
                    "not-an-image", layout.relative(path),
                    f"not an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))}); it is skipped", corrupts=False,
                ))
                continue
            _add(layout, found, path.relative_to(top).with_suffix("").as_posix(), path)
    return set(found)


def _add(layout: Layout, found: dict[str, Path], stem: str, path: Path) -> None:
    if stem in found:
        layout.problems.append(Problem(
            "duplicate-stem", layout.relative(path),
            f"has the same name as {layout.relative(found[stem])}; a stem must be unique: rename or remove one",
        ))
        return
    found[stem] = path


def _pairing_problems(layout: Layout) -> None:
    lonely_images = sorted(set(layout.images) - set(layout.masks))
    lonely_masks = sorted(set(layout.masks) - set(layout.images))
    renamed = {_strip_mask_suffix(stem): stem for stem in lonely_masks}
    for stem in lonely_images:
        hint = f"its mask seems to be {renamed[stem]!r}: rename masks to the image's name" if stem in renamed else \
            f"add masks/{stem}.png or remove the image"
        layout.problems.append(Problem(
            "image-without-mask", layout.relative(layout.images[stem]), f"image without mask; {hint}"))
    for stem in lonely_masks:
        layout.problems.append(Problem(
            "mask-without-image", layout.relative(layout.masks[stem]),
            f"mask without image; add images/{_strip_mask_suffix(stem)}.* or remove the mask",
        ))


def _strip_mask_suffix(stem: str) -> str:
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


# --- splits --------------------------------------------------------------------------------


def make_splits(
    layout: Layout, val_fraction: float = 0.2, seed: int = 0
) -> tuple[dict[str, list[str]], str, list[Problem]]:
    """The train/val/test stems: splits/*.txt where present, else a seeded validation draw.

    Returns (splits, how they were made, problems). Without val.txt, the validation stems
    are the `val_fraction` of the training stems with the smallest hash of (seed, stem):
    the same on every machine, and adding a pair moves no other pair between splits.
    Validation is never empty when there are two pairs or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UnetkitError(f"--val-fraction {val_fraction} must be at least 0 and below 1, e.g. 0.2")
    pairs = layout.pairs
    problems: list[Problem] = []
    listed = {name: _read_split_file(layout, name, set(pairs), problems) for name in SPLITS}
    splits: dict[str, list[str]] = {}
    splits["test"] = listed["test"] or []
    if listed["train"] is not None:
        splits["train"] = listed["train"]
    else:
        taken = set(splits["test"]) | set(listed["val"] or [])
        splits["train"] = [s for s in pairs if s not in taken]
    if listed["val"] is not None:
        splits["val"] = listed["val"]
    else:
        train = splits["train"]
        count = round(val_fraction * len(train))
        if len(train) >= 2:
            count = min(max(count, 1), len(train) - 1)
        chosen = set(sorted(train, key=lambda stem: _draw(seed, stem))[:count])
        splits["val"] = [s for s in train if s in chosen]
        splits["train"] = [s for s in train if s not in chosen]
    splits = {name: sorted(set(splits[name])) for name in SPLITS}
    _overlap_problems(splits, problems)
    files = [name for name in SPLITS if listed[name] is not None]
    if files:
        used = set().union(*map(set, splits.values()))
        unused = [s for s in pairs if s not in used]
        if unused:
            problems.append(Problem(
                "not-in-any-split", "splits/",
                f"{len(unused)} pair(s) are in no split file (first: {unused[0]!r}); they are not used", corrupts=False,
            ))
        source = "splits/" + ", ".join(f"{n}.txt" for n in files)
        if listed["val"] is None:
            source += f"; val drawn from train (val-fraction {val_fraction}, seed {seed})"
    else:
        source = f"seeded: val-fraction {val_fraction}, seed {seed}"
    return splits, source, problems


def _draw(seed: int, stem: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{stem}".encode(), digest_size=8).digest()


def _read_split_file(layout: Layout, name: str, pairs: set[str], problems: list[Problem]) -> list[str] | None:
    path = layout.root / "splits" / f"{name}.txt"
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UnetkitError(f"cannot read {path}: {error}; it must be a text file with one stem a line") from None
    stems = []
    for line in lines:
        stem = line.strip().replace("\\", "/").removeprefix("images/")
        if not stem or stem.startswith("#"):
            continue
        if Path(stem).suffix.lower() in IMAGE_EXTENSIONS:
            stem = stem[: -len(Path(stem).suffix)]
        stems.append(stem)
    unknown = [s for s in stems if s not in pairs]
    if unknown:
        problems.append(Problem(
            "split-unknown-stem", f"splits/{name}.txt",
            f"lists {len(unknown)} stem(s) with no image/mask pair (first: {unknown[0]!r}); fix or remove those lines",
        ))
    return [s for s in stems if s in pairs]


def _overlap_problems(splits: dict[str, list[str]], problems: list[Problem]) -> None:
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1:]:
            shared = sorted(set(splits[first]) & set(splits[second]))
            if shared:
                problems.append(Problem(
                    "split-overlap", f"splits/{second}.txt",
                    f"{len(shared)} stem(s) are in both {first} and {second} (first: {shared[0]!r}); "
                    "a pair belongs to one split only",
                ))
