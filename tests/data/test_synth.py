"""Generated data sets: layout, determinism, refusals, and the properties that make them worth learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetkit.cli import main
from unetkit.data import synth
from unetkit.data.check import check_dataset
from unetkit.data.io import read_image, read_mask_raw
from unetkit.data.spec import read_classes_file
from unetkit.errors import UnetkitError

SIZES = {"cells": 48, "scenes": 64, "multispectral": 40}
SHAPES = {"cells": (), "scenes": (3,), "multispectral": (10,)}
DTYPES = {"cells": np.uint8, "scenes": np.uint8, "multispectral": np.uint16}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.mark.parametrize("name", list(synth.SETS))
def test_generators_are_pure_functions_of_the_seed(name: str) -> None:
    size = SIZES[name]
    image, mask = synth.generate(name, size, seed=3, index=1)
    assert image.shape == (size, size, *SHAPES[name]) and image.dtype == DTYPES[name]
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert mask.max() < len(synth.SETS[name].classes)
    again = synth.generate(name, size, seed=3, index=1)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(mask, again[1])
    assert not np.array_equal(image, synth.generate(name, size, seed=4, index=1)[0])


@pytest.mark.parametrize("name", list(synth.SETS))
def test_every_class_occurs(name: str) -> None:
    counts = np.zeros(len(synth.SETS[name].classes), int)
    for index in range(8):
        _, mask = synth.generate(name, SIZES[name], seed=0, index=index)
        counts += np.bincount(mask.ravel(), minlength=len(counts))
    assert (counts > 0).all(), dict(zip([c for c, _ in synth.SETS[name].classes], counts))


def test_write_dataset_layout_reads_back_and_passes_the_checker(tmp_path: Path) -> None:
    out = tmp_path / "cells"
    summary = synth.write_dataset("cells", out, count=5, size=40, seed=1)
    stems = [f"cells_{i:04d}" for i in range(5)]
    assert sorted(p.stem for p in (out / "images").iterdir()) == stems
    assert sorted(p.stem for p in (out / "masks").iterdir()) == stems
    classes = read_classes_file(out)
    assert [c["name"] for c in classes.classes] == ["background", "cell"]
    assert classes.ignore_index == 255 and classes.task == "binary"
    assert (out / "splits" / "train.txt").read_text().split() == stems[:4]
    assert (out / "splits" / "val.txt").read_text().split() == stems[4:]
    image, mask = synth.generate("cells", 40, seed=1, index=2)
    np.testing.assert_array_equal(read_image(out / "images" / "cells_0002.png")[:, :, 0], image)
    np.testing.assert_array_equal(read_mask_raw(out / "masks" / "cells_0002.png")[0], mask)
    assert summary.count == 5 and abs(sum(summary.shares.values()) - 1) < 1e-9
    assert "wrote 5 cells pairs" in summary.to_text() and "cell " in summary.to_text()
    assert check_dataset(out).ok
    assert [p.name for p in tmp_path.iterdir()] == ["cells"]  # no temporary folder left behind


def test_multispectral_is_written_as_ten_band_tiff(tmp_path: Path) -> None:
    synth.write_dataset("multispectral", tmp_path / "ms", count=2, size=32, seed=0)
    image = read_image(tmp_path / "ms" / "images" / "multispectral_0000.tif")
    assert image.shape == (32, 32, 10) and image.dtype == np.uint16 and image.max() <= 10000


def test_same_seed_same_files(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    for name in synth.SETS:
        first = files(synth.write_dataset(name, tmp_path / f"{name}-a", count=2, size=SIZES[name], seed=5).out)
        second = files(synth.write_dataset(name, tmp_path / f"{name}-b", count=2, size=SIZES[name], seed=5).out)
        other = files(synth.write_dataset(name, tmp_path / f"{name}-c", count=2, size=SIZES[name], seed=6).out)
        assert first == second
        assert first.keys() == other.keys() and first != other


def test_a_global_threshold_is_not_enough_for_cells() -> None:
    """Uneven illumination and dim cells: even the best threshold per image stays far from the mask."""
    images, masks = zip(*(synth.generate("cells", 96, seed=0, index=i) for i in range(8)))
    per_image = [max(dice(im >= t, m > 0) for t in range(0, 256, 2)) for im, m in zip(images, masks)]
    whole_set = max(dice(np.stack(images) >= t, np.stack(masks) > 0) for t in range(0, 256, 2))
    assert np.mean(per_image) < 0.9
    assert whole_set < 0.85


def test_touching_cells_are_split_by_thin_visible_gaps() -> None:
    cross = ndi.generate_binary_structure(2, 1)
    splits = 0
    for index in range(4):
        image, mask = synth.generate("cells", 96, seed=0, index=index)
        cells = mask > 0
        closed = ndi.binary_closing(cells, structure=np.ones((3, 3)), border_value=0)
        gaps = closed & ~cells  # background that a 1-pixel closing fills: lines at most 2 px wide
        splits += ndi.label(cells, cross)[1] - ndi.label(closed, cross)[1]
        assert not ndi.binary_erosion(gaps, structure=np.ones((3, 3))).any()  # none is 3 px wide
        if gaps.sum() > 10:  # the image shows each gap as a darker line than the cells beside it
            beside = ndi.binary_dilation(gaps, structure=np.ones((5, 5))) & cells
            assert image[gaps].mean() < image[beside].mean() - 5
    assert splits >= 4  # closing the gaps merges touching cells: each gap separated two cells


def test_touching_marks_both_sides_of_a_contact_and_never_the_background() -> None:
    labels = np.zeros((6, 8), np.int32)
    labels[1:5, 1:4] = 1
    labels[1:5, 4:7] = 2
    contact = synth._touching(labels)
    assert contact[1:5, 3:5].all() and contact.sum() == 8


def test_multispectral_classes_differ_by_signature_not_by_visible_colour() -> None:
    """Bare soil and built-up: same visible colour, different red-edge/NIR/SWIR."""
    pairs = [synth.generate("multispectral", 64, seed=0, index=i) for i in range(8)]
    pixels = np.concatenate([im.reshape(-1, 10) for im, _ in pairs]).astype(float)
    labels = np.concatenate([m.ravel() for _, m in pairs])
    soil, built = pixels[labels == synth.BARE_SOIL], pixels[labels == synth.BUILT_UP]
    visible = list(synth.VISIBLE)
    np.testing.assert_allclose(soil[:, visible].mean(0), built[:, visible].mean(0), rtol=0.05)
    assert (soil[:, 8:].mean(0) > 1.3 * built[:, 8:].mean(0)).all()  # SWIR

    def accuracy(bands: list[int]) -> float:
        """Nearest centroid on the spectral shape (log spectrum minus its mean: brightness-free)."""
        x = np.log1p(np.concatenate([soil, built])[:, bands])
        x -= x.mean(axis=1, keepdims=True)
        y = np.r_[np.zeros(len(soil)), np.ones(len(built))]
        train = np.arange(len(y)) % 2 == 0
        centroids = np.stack([x[train & (y == c)].mean(0) for c in (0, 1)])
        guess = np.argmin(((x[~train, None] - centroids) ** 2).sum(-1), axis=1)
        return float((guess == y[~train]).mean())

    assert accuracy(visible) < 0.65
    assert accuracy(list(range(10))) > 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "--count 0"),
        ({"size": 16}, "--size 16 is too small for cells: use --size 32"),
        ({"seed": -1}, "--seed -1"),
        ({"name": "moons"}, "no generated data set 'moons'"),
    ],
)
def test_bad_requests_are_refused_before_writing(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"name": "cells", "out": tmp_path / "new", "count": 2, "size": 40, "seed": 0, **kwargs}
    with pytest.raises(UnetkitError, match=message):
        synth.write_dataset(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(UnetkitError, match=f"{full} already exists and is not empty"):
        synth.write_dataset("cells", full, count=1, size=32)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UnetkitError, match="is a file"):
        synth.write_dataset("cells", afile, count=1, size=32)
    empty = tmp_path / "empty"
    empty.mkdir()
    synth.write_dataset("cells", empty, count=1, size=32)
    assert (empty / "classes.json").is_file() and not (empty / "splits").exists()


def test_a_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unetkit.data import io

    calls = []

    def failing_write_mask(path, mask, palette=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(path, mask, palette)

    original = io.write_mask
    monkeypatch.setattr(io, "write_mask", failing_write_mask)
    with pytest.raises(KeyboardInterrupt):
        synth.write_dataset("cells", tmp_path / "set", count=3, size=32)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_set_and_reports_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "scenes"
    argv = ["data", "synth", "scenes", "--count", "2", "--size", "48", "--out", str(out), "--seed", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote 2 scenes pairs of 48x48 to {out} (sky ") and printed.count("\n") == 1
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already exists and is not empty" in error
