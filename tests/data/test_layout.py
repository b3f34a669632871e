"""Pairing by stem (any extensions, sub-folders, label folders) and the splits."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data.layout import make_splits, scan
from unetkit.errors import UnetkitError

from .conftest import blob_mask, noise_image


def codes(problems):
    return sorted(p.code for p in problems)


def test_pairs_by_stem_whatever_the_extensions_and_subfolders(builder):
    builder.pair("a", noise_image(4, 4, 3, 0), blob_mask(4, 4, 0), image_ext=".jpg", mask_ext=".tif")
    builder.pair("site1/b", noise_image(4, 4, 3, 1), blob_mask(4, 4, 1), image_ext=".tif", mask_ext=".png")
    builder.pair("c", noise_image(4, 4, 3, 2), blob_mask(4, 4, 2), image_ext=".bmp", mask_ext=".png")
    layout = scan(builder.root)
    assert layout.pairs == ["a", "c", "site1/b"]
    assert layout.problems == []


def test_label_folder_pairs_with_its_image(builder):
    builder.pair("x", noise_image(4, 4, 3, 0), None)
    from unetkit.data.io import write_mask
    write_mask(builder.root / "masks" / "x" / "road.png", np.ones((4, 4), np.uint8))
    layout = scan(builder.root)
    assert layout.pairs == ["x"] and layout.masks["x"].is_dir()


def test_unpaired_and_duplicate_files_are_problems(builder):
    builder.pairs(2)
    builder.pair("lonely", noise_image(4, 4, 3, 0), None)
    builder.pair("p00", noise_image(4, 4, 3, 0), None, image_ext=".tif")  # same stem as p00.png
    from unetkit.data.io import write_mask
    write_mask(builder.root / "masks" / "orphan.png", np.zeros((4, 4), np.uint8))
    write_mask(builder.root / "masks" / "lonely_mask.png", np.zeros((4, 4), np.uint8))
    (builder.root / "images" / "notes.txt").write_text("hello")
    (builder.root / "images" / ".DS_Store").write_text("")
    layout = scan(builder.root)
    assert codes(layout.problems) == ["duplicate-stem", "image-without-mask", "mask-without-image",
                                      "mask-without-image", "not-an-image"]
    by_code = {p.code: p for p in layout.problems}
    assert "'lonely_mask'" in by_code["image-without-mask"].message  # the naming hint
    assert by_code["not-an-image"].corrupts is False


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "has no images/ folder"),
    (lambda root: (root / "images").mkdir(parents=True), "has no masks/ folder"),
    (lambda root: [(root / d).mkdir(parents=True) for d in ("images", "masks")], "holds no images"),
    (lambda root: root.write_text("x"), "is not a folder"),
], ids=["missing", "empty", "no-masks", "no-images", "a-file"])
def test_not_a_data_set_is_one_sentence(tmp_path, make, fragment):
    root = tmp_path / "set"
    make(root)
    with pytest.raises(UnetkitError, match=fragment) as caught:
        scan(root)
    assert str(root) in str(caught.value)


def test_seeded_split_is_deterministic_stable_and_never_empty(builder):
    builder.pairs(10)
    layout = scan(builder.root)
    first, source, problems = make_splits(layout, 0.2, seed=3)
    again, _, _ = make_splits(scan(builder.root), 0.2, seed=3)
    other, _, _ = make_splits(layout, 0.2, seed=4)
    assert first == again and first != other and problems == []
    assert len(first["val"]) == 2 and len(first["train"]) == 8 and first["test"] == []
    assert "seeded" in source
    builder.pairs(1, prefix="new")  # adding a pair moves no other pair to another split
    grown, _, _ = make_splits(scan(builder.root), 0.2, seed=3)
    assert set(grown["val"]) - {"new00"} <= set(first["val"])
    assert set(first["train"]) <= set(grown["train"])
    tiny = scan(builder.root)
    tiny.images = {k: tiny.images[k] for k in ["p00", "p01"]}
    two, _, _ = make_splits(tiny, 0.01)
    assert len(two["val"]) == 1 and len(two["train"]) == 1


def test_split_files_are_used_and_checked(builder):
    builder.pairs(6).split("train", ["p00", "p01.png", "p02"]).split("val", ["p03", "ghost"])
    builder.split("test", ["p04", "p02"])
    splits, source, problems = make_splits(scan(builder.root))
    assert splits == {"train": ["p00", "p01", "p02"], "val": ["p03"], "test": ["p02", "p04"]}
    assert "splits/" in source
    assert codes(problems) == ["not-in-any-split", "split-overlap", "split-unknown-stem"]
    assert {p.code: p.corrupts for p in problems} == {"not-in-any-split": False, "split-overlap": True,
                                                      "split-unknown-stem": True}


def test_val_is_drawn_from_train_when_only_train_is_listed(builder):
    builder.pairs(5).split("train", ["p00", "p01", "p02", "p03"])
    splits, _, _ = make_splits(scan(builder.root), 0.25)
    assert len(splits["val"]) == 1 and len(splits["train"]) == 3
    assert set(splits["train"]) | set(splits["val"]) == {"p00", "p01", "p02", "p03"}


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2])
def test_bad_val_fraction_is_refused(builder, fraction):
    builder.pairs(2)
    with pytest.raises(UnetkitError, match="--val-fraction"):
        make_splits(scan(builder.root), fraction)
