"""`unetkit data check`: read every pair once, summarise it, list what would corrupt training.

One pass decodes each image and mask (so unreadable, truncated and oversized files are
found), counts label values, and streams the per-band mean and std of the training split
over the pixels that have data. Pixels without data (NaN, infinity, the GeoTIFF nodata
value) are normal in rasters: under the ignore label they are what the mask says; under a
label they are a warning (filled with the band mean, or left out with `ignore_nodata`). The
class map, the task and the mask encoding are then decided from what was found, with the
same rules `decode_mask` applies during training, and every file that breaks them is
reported on its own line. Training calls this first (`inspect_dataset`) and stops on any
problem marked as corrupting.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unetkit.data.io import LOSSY, UnreadableFile, label_files, pack_rgb, read_image_nodata, read_mask_raw
from unetkit.data.layout import Layout, Problem, make_splits, scan
from unetkit.data.spec import (
    TASKS,
    ClassesFile,
    DataSpec,
    classes_by_id,
    read_classes_file,
    show_value,
    value_indices,
)
from unetkit.errors import UnetkitError

FOREGROUND_NEAR_ZERO = 1e-3  # below 0.1 % of labelled pixels, predictions tend to collapse to background
MAX_COLOURS = 4096  # an "RGB mask" with more colours than this is a photo or a JPEG


@dataclass
class _Pair:
    """What one pass learned about one image/mask pair."""

    stem: str
    size: tuple[int, int] | None = None
    bands: int | None = None
    dtype: str | None = None
    kind: str | None = None  # mask kind: ids | rgb | multilabel
    values: list[Counter] = field(default_factory=list)  # one Counter per layer (one for ids/rgb)
    grey: bool = True  # an rgb mask whose three channels are equal
    left_out: bool = False  # its mask is already reported and stays out of the class map
    nodata: int = 0  # image pixels without data
    nodata_values: Counter | None = None  # mask values under them (multilabel: the value all layers share, or -1)


@dataclass
class CheckReport:
    """The summary `data check` prints, and the spec training uses when nothing corrupts."""

    root: str
    pairs: int
    sizes: dict
    bands: dict[str, int]
    task: str | None
    classes: list[dict]  # id, name, color, pixels, share (over labelled pixels of all masks)
    ignore_index: int | None
    splits: dict[str, list[str]]
    split_source: str
    notes: list[str]
    problems: list[Problem]
    spec: DataSpec | None
    input_dtype: str | None = None  # the training images' dtype (one for all, or it is an error)
    band_low: list[float] | None = None  # per-band min and max of the training images' valid pixels
    band_high: list[float] | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.corrupts]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "root": self.root, "pairs": self.pairs, "sizes": self.sizes, "bands": self.bands, "task": self.task,
            "classes": self.classes, "ignore_index": self.ignore_index,
            "splits": self.splits, "split_source": self.split_source,
            "notes": self.notes, "problems": [p.to_dict() for p in self.problems],
            "ok": self.ok, "spec": self.spec.to_dict() if self.spec else None,
        }

    def to_text(self) -> str:
        lines = [f"data set: {self.root}", f"pairs: {self.pairs}"]
        if self.sizes:
            lines.append(
                "image sizes (HxW): min {min}, max {max}, most common {common} ({count} images)".format(**self.sizes))
        if self.bands:
            lines.append("bands and dtypes: " + ", ".join(f"{k} ({n} images)" for k, n in self.bands.items()))
        if self.task:
            lines.append(f"task: {self.task}" + (f", ignore index {self.ignore_index}" if self.ignore_index is not None
                                                 else ""))
        if self.classes:
            lines.append("labels (pixel share of labelled pixels):")
            width = max(len(c["name"]) for c in self.classes)
            for c in self.classes:
                lines.append(f"  {c['id']:>5}  {c['name']:<{width}}  {100 * c['share']:7.3f} %  "
                             f"{c['pixels']:>12,} px  colour {tuple(c['color'])}")
        counts = ", ".join(f"{name} {len(stems)}" for name, stems in self.splits.items())
        lines.append(f"split: {counts} ({self.split_source})")
        if self.spec:
            lines.append("mean per band: " + ", ".join(f"{v:.4g}" for v in self.spec.mean))
            lines.append("std per band:  " + ", ".join(f"{v:.4g}" for v in self.spec.std))
        lines += [f"note: {n}" for n in self.notes]
        if not self.problems:
            lines.append("no problems found")
        else:
            errors = len(self.errors)
            lines.append(f"{len(self.problems)} problem(s), {errors} would corrupt training:")
            lines += [f"  {p.to_line()}" for p in self.problems]
        return "\n".join(lines)


def check_dataset(
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    task: str | None = None,
    include_alpha: bool = False,
    ignore_nodata: bool = False,
) -> CheckReport:
    """Check the data set at `root`; raises UnetkitError only when it is not a data set at all.

    `ignore_nodata`: labelled pixels without data are to be left out of loss and metrics;
    the spec gets an ignore index for them when the data set has none.
    """
    if task is not None and task not in TASKS:
        raise UnetkitError(f"--task {task!r} must be one of {', '.join(TASKS)}")
    layout = scan(root)
    classes_file = read_classes_file(layout.root)
    splits, split_source, split_problems = make_splits(layout, val_fraction, seed)
    problems = list(layout.problems) + split_problems
    train = set(splits["train"])
    labels = _label_names(layout, classes_file)
    stats = _BandStats()
    pairs = [_read_pair(layout, stem, labels, include_alpha, stats if stem in train else None, problems)
             for stem in layout.pairs]
    if not pairs:
        problems.append(Problem("no-pairs", "", "no image has a mask with the same name; pair images/X.* with masks/X.*"))
    notes: list[str] = []
    _band_problems(layout, pairs, problems)
    spec = _decide(layout, pairs, classes_file, labels, task, include_alpha, problems, notes)
    classes = _label_shares(spec, pairs, train, problems, layout) if spec else []
    if spec:
        _nodata_findings(layout, spec, pairs, ignore_nodata, problems, notes)
        spec.mean, spec.std = stats.result(problems, notes)
        spec.in_channels = len(spec.mean) if spec.mean else spec.in_channels
    if len(layout.pairs) == 1:
        problems.append(Problem("one-pair", "", "only one pair: there is nothing to validate on", corrupts=False))
    return CheckReport(
        root=str(layout.root), pairs=len(layout.pairs), sizes=_sizes(pairs), bands=_band_summary(pairs),
        task=spec.task if spec else None, classes=classes, ignore_index=spec.ignore_index if spec else None,
        splits=splits, split_source=split_source, notes=notes, problems=problems,
        spec=spec if spec and not any(p.corrupts for p in problems) else None,
        input_dtype=_common_dtype(pairs, train), band_low=stats.low(), band_high=stats.high(),
    )


# --- one pass over the pairs ---------------------------------------------------------------


def _label_names(layout: Layout, classes_file: ClassesFile | None) -> list[str] | None:
    """Layer order of per-label mask folders: classes.json names, else every file stem found."""
    folders = [path for path in layout.masks.values() if path.is_dir()]
    if not folders:
        return None
    if classes_file is not None:
        return [c["name"] for c in sorted(classes_file.classes, key=lambda c: c["id"])]
    return sorted(set().union(*(label_files(folder) for folder in folders)))


def _read_pair(
    layout: Layout, stem: str, labels: list[str] | None, include_alpha: bool, stats: _BandStats | None,
    problems: list[Problem],
) -> _Pair:
    pair = _Pair(stem)
    image_path, mask_path = layout.images[stem], layout.masks[stem]
    image = nodata = None
    try:
        image, nodata = read_image_nodata(image_path, include_alpha=include_alpha)
    except UnreadableFile as error:
        problems.append(Problem("unreadable", layout.relative(image_path), error.reason))
    if image is not None:
        pair.size, pair.bands, pair.dtype = image.shape[:2], image.shape[2], image.dtype.name
        if nodata is not None:
            pair.nodata = int(nodata.sum())
        if stats is not None:
            stats.add(image, None if nodata is None else ~nodata)
    if mask_path.is_dir() and labels is not None:
        for name, path in label_files(mask_path).items():
            if name not in labels:
                problems.append(Problem("unknown-label", layout.relative(path),
                                        f"label {name!r} is not in classes.json; rename the file or add the label"))
    try:
        raw, pair.kind = read_mask_raw(mask_path, labels=labels if mask_path.is_dir() else None)
    except UnreadableFile as error:
        problems.append(Problem("unreadable", layout.relative(error.path), error.reason))
        return pair
    mask_size = raw.shape[1:] if pair.kind == "multilabel" else raw.shape[:2]
    if pair.size is not None and tuple(mask_size) != tuple(pair.size):
        problems.append(Problem(
            "size-mismatch", layout.relative(mask_path),
            f"mask is {mask_size[0]}x{mask_size[1]} but its image is {pair.size[0]}x{pair.size[1]}; "
            "resize the mask (nearest neighbour) or re-export the pair",
        ))
    if pair.kind == "rgb":
        raw = raw[:, :, :3]
        pair.grey = bool((raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all())
        keys, counts = np.unique(pack_rgb(raw), return_counts=True)
        if len(keys) > MAX_COLOURS:
            problems.append(Problem(
                "not-a-mask", layout.relative(mask_path),
                f"has {len(keys):,} colours, more like a photo or a JPEG than a mask; save masks as PNG class ids",
            ))
            pair.left_out, keys, counts = True, keys[:0], counts[:0]
        pair.values = [Counter(dict(zip(keys.tolist(), counts.tolist())))]
    else:
        layers = raw if pair.kind == "multilabel" else raw[None]
        pair.values = [_count(layer) for layer in layers]
    if nodata is not None and tuple(mask_size) == tuple(nodata.shape):
        pair.nodata_values = _values_under(raw, pair.kind, nodata)
    return pair


def _values_under(raw: np.ndarray, kind: str, nodata: np.ndarray) -> Counter:
    """Mask values at the no-data pixels: ids, packed colours, or for label stacks the value
    every layer holds there (-1 where the layers differ: some label is set)."""
    if kind == "rgb":
        under = pack_rgb(raw[nodata])
    elif kind == "multilabel":
        layers = raw[:, nodata].astype(np.int64)
        under = np.where((layers == layers[:1]).all(axis=0), layers[0], -1)
    else:
        under = raw[nodata]
    keys, counts = np.unique(under, return_counts=True)
    return Counter(dict(zip(keys.astype(np.int64).tolist(), counts.tolist())))


def _count(layer: np.ndarray) -> Counter:
    if layer.dtype == np.uint8:
        counts = np.bincount(layer.ravel(), minlength=256)
        return Counter({v: int(n) for v, n in enumerate(counts) if n})
    keys, counts = np.unique(layer, return_counts=True)
    return Counter(dict(zip(keys.astype(np.int64).tolist(), counts.tolist())))


class _BandStats:
    """Per-band mean and variance, merged block by block (Chan et al.): exact, in bounded memory."""

    BLOCK = 1 << 22  # values per float64 block (32 MiB)

    def __init__(self) -> None:
        self.n = 0
        self.images = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def add(self, image: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Merge an (H, W, C) image's pixels where `valid` (H, W) is True (all when None), a
        block of rows at a time so float64 copies stay small."""
        self.images += 1
        rows = max(1, self.BLOCK // max(1, image.shape[1] * image.shape[2]))
        for start in range(0, image.shape[0], rows):
            pixels = image[start:start + rows].reshape(-1, image.shape[2])
            if valid is not None:
                pixels = pixels[valid[start:start + rows].ravel()]
            if len(pixels):
                self._merge(pixels.astype(np.float64))

    def low(self) -> list[float] | None:
        return None if self.min is None else [float(v) for v in self.min]

    def high(self) -> list[float] | None:
        return None if self.max is None else [float(v) for v in self.max]

    def _merge(self, pixels: np.ndarray) -> None:
        low, high = pixels.min(axis=0), pixels.max(axis=0)
        if self.min is None or self.min.shape != low.shape:
            self.min, self.max = (low, high) if self.min is None else (self.min, self.max)
        else:
            self.min, self.max = np.minimum(self.min, low), np.maximum(self.max, high)
        n, mean = pixels.shape[0], pixels.mean(axis=0)
        m2 = ((pixels - mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        if self.mean.shape != mean.shape:
            return  # a band-count mismatch is reported on its own
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
        self.n = total

    def result(self, problems: list[Problem], notes: list[str]) -> tuple[list[float], list[float]]:
        if self.mean is None:
            if self.images:
                problems.append(Problem("no-valid-pixels", "images/", "every pixel of the training images is "
                                        "without data (NaN, infinite or the GeoTIFF nodata value); check the images"))
            return [], []
        std = np.sqrt(self.m2 / self.n)
        for band in np.flatnonzero(std == 0):
            problems.append(Problem("constant-band", "", f"band {band + 1} is constant over the training images; "
                                    "it carries no information (its std is set to 1)", corrupts=False))
        std = np.where(std > 0, std, 1.0)
        return [float(v) for v in self.mean], [float(v) for v in std]


# --- pixels without data ------------------------------------------------------------------


def _nodata_findings(
    layout: Layout, spec: DataSpec, pairs: list[_Pair], ignore_nodata: bool, problems: list[Problem],
    notes: list[str],
) -> None:
    """No-data under the ignore label is a note; under labels a warning (and an ignore index
    for them when `ignore_nodata` asks and the data set has none)."""
    ignored = labelled = 0
    images: list[str] = []
    for pair in pairs:
        if not pair.nodata_values or pair.left_out:
            continue
        keys = np.fromiter(pair.nodata_values.keys(), dtype=np.int64, count=len(pair.nodata_values))
        counts = np.fromiter(pair.nodata_values.values(), dtype=np.int64, count=len(pair.nodata_values))
        under_ignore = int(counts[_is_ignore(spec, keys, pair.kind)].sum())
        ignored += under_ignore
        if under_ignore < pair.nodata:
            labelled += pair.nodata - under_ignore
            images.append(layout.relative(layout.images[pair.stem]))
    if ignored:
        notes.append(f"{ignored:,} pixel(s) without data lie under the ignore label {spec.ignore_index}: "
                     "left out of training, as the masks say")
    if not labelled:
        return
    if ignore_nodata and spec.ignore_index is None:
        spec.ignore_index = _free_ignore_index(spec, pairs)
        notes.append(f"--ignore_nodata: ignore index {spec.ignore_index} added for the labelled pixels without data")
    where = images[0] if len(images) == 1 else "images/"
    which = "" if len(images) == 1 else " (" + ", ".join(images[:3]) + (", ..." if len(images) > 3 else "") + ")"
    then = ("left out of the loss and the metrics (--ignore_nodata)" if ignore_nodata else
            "filled with the band mean and trained on with their labels; pass --ignore_nodata to leave them "
            "out of the loss and the metrics")
    problems.append(Problem(
        "nodata", where, f"{labelled:,} pixel(s) without data (NaN, infinite or the GeoTIFF nodata value) in "
        f"{len(images)} image(s){which} lie under labels, not the ignore label: they are {then}", corrupts=False,
    ))


def _is_ignore(spec: DataSpec, keys: np.ndarray, kind: str | None) -> np.ndarray:
    """Which stored mask values are the ignore label (decided on the stored value, as decode_mask does)."""
    ignore = spec.ignore_index
    if ignore is None or kind is None:
        return np.zeros(keys.shape, bool)
    if kind == "rgb":
        if spec.color_coded:
            return np.zeros(keys.shape, bool)
        grey = keys & 0xFF
        is_grey = ((keys >> 16) == grey) & (((keys >> 8) & 0xFF) == grey)
        return is_grey & _is_ignore(spec, grey, "ids")
    if spec.binary_255:
        keys = np.where(keys == 255, 1, keys)
    return keys == ignore


def _free_ignore_index(spec: DataSpec, pairs: list[_Pair]) -> int:
    """255, or the first value above it that is no class id or index and no stored mask value."""
    taken = {c["id"] for c in spec.classes}
    for pair in pairs:
        if pair.kind in ("ids", "multilabel"):
            for layer in pair.values:
                taken |= set(layer)
        elif pair.kind == "rgb":
            taken |= {key & 0xFF for key in pair.values[0]} if pair.values else set()
    value = max(255, len(spec.classes))
    while value in taken:
        value += 1
    return value


# --- deciding the class map ----------------------------------------------------------------


def _band_problems(layout: Layout, pairs: list[_Pair], problems: list[Problem]) -> None:
    """Every image must have the same band count and dtype: one model, one normalisation."""
    for attribute, what, fix in (("bands", "band(s)", "give every image the same bands"),
                                 ("dtype", "pixels", "convert every image to one bit depth")):
        counts = Counter(getattr(p, attribute) for p in pairs if getattr(p, attribute) is not None)
        if len(counts) < 2:
            continue
        usual = counts.most_common(1)[0][0]
        for pair in pairs:
            value = getattr(pair, attribute)
            if value is not None and value != usual:
                problems.append(Problem(
                    f"{attribute}-mismatch", layout.relative(layout.images[pair.stem]),
                    f"has {value} {what} but most images have {usual}; {fix}",
                ))


def _decide(
    layout: Layout, pairs: list[_Pair], classes_file: ClassesFile | None, labels: list[str] | None,
    task: str | None, include_alpha: bool, problems: list[Problem], notes: list[str],
) -> DataSpec | None:
    """The task, classes, ignore index and mask encoding implied by the masks (and classes.json)."""
    read = [p for p in pairs if p.kind is not None]
    if not read:
        return None
    kinds = Counter("multilabel" if p.kind == "multilabel" else "single" for p in read)
    multilabel = kinds["multilabel"] > kinds["single"]
    if len(kinds) > 1:
        for pair in read:
            if (pair.kind == "multilabel") != multilabel:
                problems.append(Problem(
                    "mixed-masks", layout.relative(layout.masks[pair.stem]),
                    "is " + ("multi-label" if not multilabel else "single-label") + " while most masks are not; "
                    "use one kind of mask for the whole data set",
                ))
        read = [p for p in read if (p.kind == "multilabel") == multilabel]
    bands = Counter(p.bands for p in pairs if p.bands).most_common(1)
    in_channels = bands[0][0] if bands else 0
    if multilabel:
        spec = _decide_multilabel(layout, read, classes_file, labels, in_channels, problems, notes)
    else:
        spec = _decide_single(layout, read, classes_file, in_channels, problems, notes)
    if spec is None:
        return None
    spec.include_alpha = include_alpha
    wanted = task or (classes_file.task if classes_file else None)
    if wanted and wanted != spec.task:
        if spec.task == "binary" and wanted == "multiclass":
            spec.task = "multiclass"
        else:
            raise UnetkitError(
                f"task {wanted!r} does not fit {layout.root}: its masks make it {spec.task}"
                + (" (more than two classes)" if spec.task == "multiclass" else "")
                + f"; use --task {spec.task} or change the masks"
            )
    _unknown_values(layout, spec, read, problems)
    return spec


def _decide_single(
    layout: Layout, read: list[_Pair], classes_file: ClassesFile | None, in_channels: int,
    problems: list[Problem], notes: list[str],
) -> DataSpec | None:
    rgb = [p for p in read if p.kind == "rgb"]
    colour_keys = set().union(*(p.values[0] for p in rgb)) if rgb else set()
    color_coded = False
    if rgb and classes_file is not None and classes_file.has_colors:
        palette = {(c["color"][0] << 16) | (c["color"][1] << 8) | c["color"][2] for c in classes_file.classes}
        color_coded = any(not p.grey for p in rgb) or colour_keys <= palette
    if rgb and not color_coded:
        for pair in rgb:
            if not pair.grey and not pair.left_out:
                pair.left_out = True
                problems.append(Problem(
                    "rgb-without-colour-map", layout.relative(layout.masks[pair.stem]),
                    "is a colour-coded RGB mask but there is no colour map; list each class's colour in "
                    "classes.json (or save masks as single-channel class ids)",
                ))
        read = [p for p in read if not p.left_out]  # the rest of the set is still worth checking
    ids = Counter()
    for pair in read:
        if pair.kind == "ids" or (pair.kind == "rgb" and not color_coded):
            for key, count in pair.values[0].items():
                ids[key & 0xFF if pair.kind == "rgb" else key] += count
    values = set(ids)
    class_ids = {c["id"] for c in classes_file.classes} if classes_file else None
    binary_255 = (
        255 in values and values <= {0, 255}
        and (class_ids is None or (1 in class_ids and 255 not in class_ids))
    )
    if binary_255:
        notes.append("masks hold 0/255: read as 0/1")
        ids = Counter({(1 if k == 255 else k): n for k, n in ids.items()})
        values = set(ids)
    if classes_file is not None:
        classes, ignore = classes_file.classes, classes_file.ignore_index
    else:
        if _grey_levels(layout, read, ids, problems):
            return None
        ignore = _guess_ignore(values, notes)
        found = sorted(values - {ignore})
        if not color_coded and not found:
            return None
        classes = classes_by_id(found)
        if [c["id"] for c in classes] != list(range(len(classes))):
            notes.append(f"class ids {[c['id'] for c in classes]} are not 0..{len(classes) - 1}: "
                         "the model's outputs follow the order listed")
    if len(classes) < 2:
        only = classes[0]["id"] if classes else "none"
        problems.append(Problem(
            "one-class", "classes.json" if classes_file else "masks/",
            f"only one class ({only}) occurs: there is nothing to separate; check the masks are not all empty",
        ))
        return None
    task = "binary" if len(classes) == 2 else "multiclass"
    return DataSpec(task, classes, ignore, in_channels, [], [], binary_255=binary_255, color_coded=color_coded)


def _grey_levels(layout: Layout, read: list[_Pair], ids: Counter, problems: list[Problem]) -> bool:
    """0/255 masks with a few anti-aliased or JPEG grey levels would become dozens of classes."""
    values = set(ids)
    others = values - {0, 255}
    if not ({0, 255} <= values and len(others) >= 2):
        return False
    total = sum(ids.values())
    if sum(ids[v] for v in others) / total >= 0.05:
        return False
    for pair in read:
        found = set(pair.values[0]) - {0, 255} if pair.kind == "ids" else set()
        if found:
            problems.append(Problem(
                "grey-levels", layout.relative(layout.masks[pair.stem]),
                f"a 0/255 mask with {len(found)} grey level(s) in between (anti-aliasing or JPEG); "
                "threshold it to 0/255 and save as PNG, or describe the classes in classes.json",
            ))
    return True


def _guess_ignore(values: set[int], notes: list[str]) -> int | None:
    """Without classes.json, 255 beside ids 0..K-1 is the usual 'ignore' (VOC, trimap borders)."""
    others = sorted(values - {255})
    if 255 in values and len(others) >= 2 and others == list(range(len(others))):
        notes.append("255 next to ids 0.." + str(len(others) - 1) + " is taken as the ignore index "
                     '(write "ignore_index" in classes.json to say otherwise)')
        return 255
    return None


def _decide_multilabel(
    layout: Layout, read: list[_Pair], classes_file: ClassesFile | None, labels: list[str] | None,
    in_channels: int, problems: list[Problem], notes: list[str],
) -> DataSpec | None:
    layers = Counter(len(p.values) for p in read)
    count = classes_file and len(classes_file.classes) or layers.most_common(1)[0][0]
    for pair in read:
        if len(pair.values) != count:
            problems.append(Problem(
                "label-count", layout.relative(layout.masks[pair.stem]),
                f"has {len(pair.values)} labels but the data set has {count}; give every mask the same labels",
            ))
    ignore = classes_file.ignore_index if classes_file else None
    values = set().union(*(set(layer) for p in read for layer in p.values)) - {ignore}
    binary_255 = 255 in values and values <= {0, 255}
    if binary_255:
        notes.append("label masks hold 0/255: read as 0/1")
    if classes_file is not None:
        classes = sorted(classes_file.classes, key=lambda c: c["id"])
    else:
        classes = classes_by_id(range(count))
        for entry, name in zip(classes, labels or []):
            entry["name"] = name
    return DataSpec("multilabel", classes, ignore, in_channels, [], [], binary_255=binary_255)


def _unknown_values(layout: Layout, spec: DataSpec, read: list[_Pair], problems: list[Problem]) -> None:
    """One line per mask holding a value the class map cannot place."""
    for pair in read:
        if pair.left_out:
            continue
        bad = set()
        for layer in pair.values:
            keys = np.fromiter(layer.keys(), dtype=np.int64, count=len(layer))
            bad |= set(keys[value_indices(spec, keys, pair.kind) < 0].tolist())
        if not bad:
            continue
        path = layout.masks[pair.stem]
        shown = ", ".join(show_value(v, pair.kind) for v in sorted(bad)[:6]) + (" ..." if len(bad) > 6 else "")
        hint = " (lossy compression changes labels: save masks as PNG)" if path.suffix.lower() in LOSSY else ""
        problems.append(Problem(
            "labels-outside-class-map", layout.relative(path),
            f"holds label value(s) {shown} outside the class map; fix the mask or add them to classes.json{hint}",
        ))


def _label_shares(
    spec: DataSpec, pairs: list[_Pair], train: set[str], problems: list[Problem], layout: Layout
) -> list[dict]:
    """Pixel share per class (per label: of its own layer) over all masks; foreground judged on train."""
    size = len(spec.classes)
    hits = {"all": np.zeros(size, np.int64), "train": np.zeros(size, np.int64)}
    labelled = {"all": np.zeros(size, np.int64), "train": np.zeros(size, np.int64)}
    multilabel = spec.task == "multilabel"
    for pair in pairs:
        if pair.kind is None or pair.left_out or (pair.kind == "multilabel") != multilabel:
            continue
        for position, layer in enumerate(pair.values[:size]):
            keys = np.fromiter(layer.keys(), dtype=np.int64, count=len(layer))
            counts = np.fromiter(layer.values(), dtype=np.int64, count=len(layer))
            indices = value_indices(spec, keys, pair.kind)
            valid = (indices >= 0) & (indices != spec.ignore_index if spec.ignore_index is not None else True)
            found = np.zeros(size, np.int64)
            seen = np.zeros(size, np.int64)
            if multilabel:
                found[position] = counts[valid & (indices == 1)].sum()
                seen[position] = counts[valid].sum()
            else:
                found = np.bincount(indices[valid], weights=counts[valid], minlength=size)[:size].astype(np.int64)
                seen[:] = counts[valid].sum()
            for split in ("all", "train") if pair.stem in train else ("all",):
                hits[split] += found
                labelled[split] += seen
    shares = np.divide(hits["all"], labelled["all"], out=np.zeros(size), where=labelled["all"] > 0)
    classes = [{**c, "pixels": int(hits["all"][i]), "share": float(shares[i])} for i, c in enumerate(spec.classes)]
    if not labelled["train"].any():
        return classes
    foreground = list(range(size)) if multilabel else list(range(1, size))
    where = "classes.json" if (layout.root / "classes.json").is_file() else "masks/"
    for i in foreground:
        if hits["train"][i] == 0 and spec.task != "binary":
            problems.append(Problem(
                "class-never-occurs", where,
                f"class {spec.classes[i]['id']} ({spec.classes[i]['name']}) never occurs in the training masks; "
                "the model cannot learn it: add examples or drop the class", corrupts=False,
            ))
    name = {"binary": "foreground", "multiclass": "any class but the first", "multilabel": "any label"}[spec.task]
    if multilabel:
        share = float(hits["train"].sum() / max(labelled["train"].max(), 1))
    else:
        share = float(hits["train"][1:].sum() / labelled["train"][0])
    if share == 0:
        problems.append(Problem(
            "no-foreground", "masks/",
            f"the training masks hold no {name}: the model would learn to predict background everywhere; "
            "check the masks are not all black (0/1 masks saved as 8-bit look black but are fine)",
        ))
    elif share < FOREGROUND_NEAR_ZERO:
        problems.append(Problem(
            "foreground-near-zero", "masks/",
            f"{name} covers only {100 * share:.3f} % of the training pixels: predictions tend to collapse to "
            "all background; use a Dice or focal loss, class weights, or crop patches around the foreground",
            corrupts=False,
        ))
    return classes


# --- summary -------------------------------------------------------------------------------


def _common_dtype(pairs: list[_Pair], train: set[str]) -> str | None:
    dtypes = Counter(p.dtype for p in pairs if p.dtype is not None and p.stem in train)
    return dtypes.most_common(1)[0][0] if dtypes else None


def _sizes(pairs: list[_Pair]) -> dict:
    sizes = [p.size for p in pairs if p.size is not None]
    if not sizes:
        return {}
    (common, count), = Counter(sizes).most_common(1)

    def show(size: tuple[int, int]) -> str:
        return f"{size[0]}x{size[1]}"

    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    return {"min": show(by_area[0]), "max": show(by_area[-1]), "common": show(common), "count": count}


def _band_summary(pairs: list[_Pair]) -> dict[str, int]:
    counts = Counter(f"{p.bands} band{'s' if p.bands != 1 else ''} {p.dtype}" for p in pairs if p.bands)
    return dict(counts.most_common())
