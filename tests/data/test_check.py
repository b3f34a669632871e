"""`check_dataset`: the summary, the class-map decisions, and every problem it must find."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from unetkit.data.check import check_dataset
from unetkit.data.io import read_image, write_image, write_mask
from unetkit.errors import UnetkitError

from .conftest import blob_mask, noise_image

REPO = Path(__file__).resolve().parents[2]
ISBI = Path(os.environ.get("UNETKIT_ISBI", REPO / ".." / "shared" / "datasets" / "isbi2012")).resolve()


def codes(report, corrupting=None):
    return sorted(p.code for p in report.problems if corrupting is None or p.corrupts == corrupting)


def test_clean_binary_set_summary(builder):
    builder.pairs(5, size=(12, 10)).pair("odd", noise_image(8, 6, 3, 9), blob_mask(8, 6, 9))
    report = check_dataset(builder.root)
    assert report.ok and report.problems == []
    assert report.pairs == 6 and report.task == "binary"
    assert report.sizes == {"min": "8x6", "max": "12x10", "common": "12x10", "count": 5}
    assert report.bands == {"3 bands uint8": 6}
    assert [c["id"] for c in report.classes] == [0, 1] and [c["name"] for c in report.classes] == ["0", "1"]
    assert sum(c["share"] for c in report.classes) == pytest.approx(1)
    assert {k: len(v) for k, v in report.splits.items()} == {"train": 5, "val": 1, "test": 0}
    text = report.to_text()
    for fragment in ("pairs: 6", "most common 12x10", "3 bands uint8", "task: binary", "split: train 5, val 1",
                     "no problems found"):
        assert fragment in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] and data["spec"]["task"] == "binary" and data["spec"]["in_channels"] == 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_mean_and_std_are_those_of_the_training_images(builder, dtype):
    builder.pairs(4, size=(9, 7), bands=5, dtype=dtype, prefix="a").pairs(2, size=(5, 11), bands=5, dtype=dtype,
                                                                           prefix="b")
    report = check_dataset(builder.root, val_fraction=0.3)
    train = [read_image(next((builder.root / "images").glob(f"{s}.*"))) for s in report.splits["train"]]
    pixels = np.concatenate([t.reshape(-1, 5).astype(np.float64) for t in train])
    np.testing.assert_allclose(report.spec.mean, pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(report.spec.std, pixels.std(0), rtol=1e-9)
    assert report.spec.in_channels == 5 and len(report.splits["val"]) == 2


def test_zero_255_masks_are_read_as_zero_one(builder):
    for i in range(3):
        builder.pair(f"p{i}", noise_image(6, 6, 1, i), blob_mask(6, 6, i) * 255)
    report = check_dataset(builder.root)
    assert report.ok and report.task == "binary" and report.spec.binary_255
    assert [c["id"] for c in report.classes] == [0, 1]
    assert any("0/255" in n for n in report.notes)


def test_palette_masks_with_three_classes_are_multiclass(builder):
    palette = [(0, 0, 0), (200, 0, 0), (0, 200, 0)]
    for i in range(3):
        builder.pair(f"p{i}", noise_image(9, 6, 3, i), blob_mask(9, 6, i, classes=3), palette=palette)
    report = check_dataset(builder.root)
    assert report.ok and report.task == "multiclass" and [c["id"] for c in report.classes] == [0, 1, 2]
    assert report.spec.num_outputs == 3


CLASSES = [{"id": 0, "name": "sky", "color": [0, 0, 255]}, {"id": 1, "name": "road", "color": [128, 64, 128]},
           {"id": 2, "name": "car", "color": [255, 0, 0]}]


def colour_mask(ids: np.ndarray, classes=CLASSES) -> np.ndarray:
    return np.array([c["color"] for c in classes], np.uint8)[ids]


def test_rgb_masks_are_mapped_through_the_colour_map(builder):
    builder.classes(CLASSES)
    for i in range(3):
        builder.pair(f"p{i}", noise_image(9, 6, 3, i), colour_mask(blob_mask(9, 6, i, classes=3)))
    report = check_dataset(builder.root)
    assert report.ok and report.spec.color_coded and report.task == "multiclass"
    assert [c["name"] for c in report.classes] == ["sky", "road", "car"]
    assert all(c["pixels"] > 0 for c in report.classes)


def test_unknown_colour_is_outside_the_class_map(builder):
    builder.classes(CLASSES)
    mask = colour_mask(blob_mask(9, 6, 0, classes=3))
    mask[0, 0] = (1, 2, 3)
    builder.pair("p0", noise_image(9, 6, 3, 0), mask).pair("p1", noise_image(9, 6, 3, 1), colour_mask(
        blob_mask(9, 6, 1, classes=3)))
    report = check_dataset(builder.root)
    (problem,) = report.problems
    assert problem.code == "labels-outside-class-map" and problem.file == "masks/p0.png"
    assert "(1, 2, 3)" in problem.message


def test_rgb_mask_without_colour_map_is_refused(builder):
    builder.pairs(2)
    builder.pair("rgb", noise_image(12, 10, 3, 5), colour_mask(blob_mask(12, 10, 5, classes=3)))
    report = check_dataset(builder.root)
    assert codes(report) == ["rgb-without-colour-map"] and report.problems[0].file == "masks/rgb.png"
    assert "classes.json" in report.problems[0].message and not report.ok


def test_grey_rgb_masks_are_read_as_ids(builder):
    for i in range(3):
        ids = blob_mask(6, 6, i, classes=3)
        builder.pair(f"p{i}", noise_image(6, 6, 3, i), np.repeat(ids[:, :, None], 3, axis=2))
    report = check_dataset(builder.root)
    assert report.ok and report.task == "multiclass" and not report.spec.color_coded


def test_anti_aliased_binary_masks_are_caught(builder):
    for i in range(3):
        mask = blob_mask(20, 20, i) * 255
        mask[i, :3] = [17, 128, 240]  # a few grey levels at an edge
        builder.pair(f"p{i}", noise_image(20, 20, 1, i), mask)
    report = check_dataset(builder.root)
    assert codes(report) == ["grey-levels"] * 3 and report.spec is None


def test_255_beside_small_ids_is_the_ignore_index(builder):
    for i in range(3):
        mask = blob_mask(9, 6, i, classes=3)
        mask[0] = 255
        builder.pair(f"p{i}", noise_image(9, 6, 3, i), mask)
    report = check_dataset(builder.root)
    assert report.ok and report.ignore_index == 255 and [c["id"] for c in report.classes] == [0, 1, 2]


def test_classes_json_gives_names_ignore_and_never_occurring_classes(builder):
    builder.classes([{"id": 0, "name": "bg"}, {"id": 1, "name": "cell"}, {"id": 2, "name": "nucleus"}],
                    ignore_index=9)
    for i in range(3):
        mask = blob_mask(8, 8, i)
        mask[0, 0] = 9
        builder.pair(f"p{i}", noise_image(8, 8, 1, i), mask)
    report = check_dataset(builder.root)
    assert report.ok and report.task == "multiclass" and report.ignore_index == 9
    assert codes(report) == ["class-never-occurs"] and "nucleus" in report.problems[0].message


def test_foreground_near_zero_warns_and_none_is_an_error(builder):
    for i in range(4):
        mask = np.zeros((40, 40), np.uint8)
        if i == 0:
            mask[0, 0] = 1
        builder.pair(f"p{i}", noise_image(40, 40, 1, i), mask)
    builder.classes([{"id": 0, "name": "bg"}, {"id": 1, "name": "fg"}]).split("train", ["p0", "p1", "p2"])
    builder.split("val", ["p3"])
    report = check_dataset(builder.root)
    assert codes(report) == ["foreground-near-zero"] and report.ok
    builder.split("train", ["p1", "p2"]).split("val", ["p0", "p3"])
    report = check_dataset(builder.root)
    assert codes(report) == ["no-foreground"] and not report.ok


def test_all_black_set_without_classes_json_is_one_class(builder):
    for i in range(2):
        builder.pair(f"p{i}", noise_image(5, 5, 1, i), np.zeros((5, 5), np.uint8))
    report = check_dataset(builder.root)
    assert codes(report) == ["one-class"] and not report.ok


def test_multilabel_multipage_tiffs(builder):
    for i in range(3):
        stack = np.stack([blob_mask(8, 8, i), 1 - blob_mask(8, 8, i + 1), blob_mask(8, 8, i + 2)])
        builder.pair(f"p{i}", noise_image(8, 8, 4, i), stack, mask_ext=".tif")
    report = check_dataset(builder.root)
    assert report.ok and report.task == "multilabel" and report.spec.num_outputs == 3
    assert all(0 < c["share"] < 1 for c in report.classes)


def test_multilabel_folders_take_label_names_from_files(builder):
    for i in range(3):
        builder.pair(f"p{i}", noise_image(8, 8, 3, i), None)
        write_mask(builder.root / "masks" / f"p{i}" / "road.png", blob_mask(8, 8, i) * 255)
        write_mask(builder.root / "masks" / f"p{i}" / "car.png", (1 - blob_mask(8, 8, i)) * 255)
    report = check_dataset(builder.root)
    assert report.ok and report.task == "multilabel" and report.spec.binary_255
    assert [c["name"] for c in report.classes] == ["car", "road"]


def test_task_override(builder):
    builder.pairs(3)
    assert check_dataset(builder.root, task="multiclass").spec.num_outputs == 2
    with pytest.raises(UnetkitError, match="use --task binary"):
        check_dataset(builder.root, task="multilabel")
    with pytest.raises(UnetkitError, match="--task"):
        check_dataset(builder.root, task="regression")


def test_band_and_dtype_mismatches_are_errors(builder):
    builder.pairs(3, size=(6, 6))
    builder.pair("gray", noise_image(6, 6, 1, 7), blob_mask(6, 6, 7))
    builder.pair("deep", noise_image(6, 6, 3, 8, np.uint16), blob_mask(6, 6, 8))
    report = check_dataset(builder.root)
    assert codes(report) == ["bands-mismatch", "dtype-mismatch"]
    assert {p.file for p in report.problems} == {"images/gray.png", "images/deep.png"}


def seeded_with_every_problem(builder) -> None:
    """One data set with each problem of the issue, each in its own file."""
    builder.classes([{"id": 0, "name": "background"}, {"id": 1, "name": "cell"}, {"id": 2, "name": "never"}])
    for i in range(6):
        mask = np.zeros((40, 40), np.uint8)
        mask[0, i] = 1 if i < 3 else 0
        builder.pair(f"ok{i}", noise_image(40, 40, 2, i, np.float32), mask, image_ext=".tif")
    root = builder.root
    write_image(root / "images" / "lonely.tif", noise_image(40, 40, 2, 9, np.float32))
    write_mask(root / "masks" / "orphan.png", np.zeros((40, 40), np.uint8))
    builder.pair("small", noise_image(40, 40, 2, 1, np.float32), np.zeros((30, 40), np.uint8), image_ext=".tif")
    nan = noise_image(40, 40, 2, 2, np.float32)
    nan[3, 3, 1] = np.nan
    builder.pair("nan", nan, np.zeros((40, 40), np.uint8), image_ext=".tif")
    outside = np.zeros((40, 40), np.uint8)
    outside[5, 5] = 7
    builder.pair("outside", noise_image(40, 40, 2, 3, np.float32), outside, image_ext=".tif")
    builder.pair("rgb", noise_image(40, 40, 2, 4, np.float32), colour_mask(np.eye(40, dtype=int)), image_ext=".tif")
    builder.pair("empty", noise_image(40, 40, 2, 5, np.float32), np.zeros((40, 40), np.uint8), image_ext=".tif")
    (root / "masks" / "empty.png").write_bytes(b"")
    builder.pair("text", noise_image(40, 40, 2, 6, np.float32), np.zeros((40, 40), np.uint8), image_ext=".tif")
    (root / "images" / "text.tif").write_text("not an image at all")
    builder.pair("cut", noise_image(40, 40, 2, 7, np.float32), np.zeros((40, 40), np.uint8), image_ext=".tif")
    data = (root / "masks" / "cut.png").read_bytes()
    (root / "masks" / "cut.png").write_bytes(data[: len(data) // 2])


EVERY_PROBLEM = {
    ("image-without-mask", "images/lonely.tif"), ("mask-without-image", "masks/orphan.png"),
    ("size-mismatch", "masks/small.png"), ("nodata", "images/nan.tif"), ("labels-outside-class-map", "masks/outside.png"),
    ("rgb-without-colour-map", "masks/rgb.png"), ("unreadable", "masks/empty.png"), ("unreadable", "images/text.tif"),
    ("unreadable", "masks/cut.png"), ("class-never-occurs", "classes.json"), ("foreground-near-zero", "masks/"),
}


def test_every_problem_of_the_issue_is_reported(builder):
    seeded_with_every_problem(builder)
    report = check_dataset(builder.root, val_fraction=0.1)
    found = {(p.code, p.file) for p in report.problems}
    assert found == EVERY_PROBLEM
    assert not report.ok and report.spec is None
    text = report.to_text()
    for problem in report.problems:
        assert problem.to_line() in text and "\n" not in problem.message


@pytest.mark.skipif(not (ISBI / "images").is_dir(), reason=f"the ISBI 2012 data set is not at {ISBI} "
                    "(set UNETKIT_ISBI to its folder)")
def test_real_isbi2012_is_clean():
    report = check_dataset(ISBI)
    assert report.ok and report.problems == []
    assert report.pairs == 30 and report.task == "binary" and report.sizes["common"] == "512x512"
    assert [c["name"] for c in report.classes] == ["other", "membrane"]
    assert report.classes[1]["share"] == pytest.approx(0.2196, abs=1e-3)
    assert {k: len(v) for k, v in report.splits.items()} == {"train": 24, "val": 6, "test": 0}


def test_label_file_missing_from_classes_json_is_an_error(builder):
    builder.classes([{"id": 0, "name": "road"}, {"id": 1, "name": "car"}])
    for i in range(2):
        builder.pair(f"p{i}", noise_image(8, 8, 3, i), None)
        write_mask(builder.root / "masks" / f"p{i}" / "road.png", blob_mask(8, 8, i))
        write_mask(builder.root / "masks" / f"p{i}" / ("car.png" if i else "cars.png"), 1 - blob_mask(8, 8, i))
    report = check_dataset(builder.root)
    assert [(p.code, p.file) for p in report.errors] == [("unknown-label", "masks/p0/cars.png")]
    assert report.task == "multilabel" and not report.ok


def test_photo_saved_as_mask_is_refused(builder):
    builder.pairs(2, size=(80, 80))
    write_image(builder.root / "masks" / "p01.png", noise_image(80, 80, 3, 1))
    report = check_dataset(builder.root)
    assert [(p.code, p.file) for p in report.problems] == [("not-a-mask", "masks/p01.png")]


def test_retina_style_ppm_images_and_gif_masks_are_a_data_set(tmp_path):
    """Public sets ship these as they are (DRIVE: GIF masks; STARE: PPM images): read, not skipped."""
    from PIL import Image

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        image = noise_image(12, 10, 3, i)
        Image.fromarray(image).save(root / "images" / f"{i:02d}.ppm")
        Image.fromarray((blob_mask(12, 10, i) * 255).astype(np.uint8)).save(root / "masks" / f"{i:02d}.gif")
        np.testing.assert_array_equal(read_image(root / "images" / f"{i:02d}.ppm"), image)
    report = check_dataset(root)
    assert report.ok and report.pairs == 3 and report.task == "binary", report.to_text()
    assert report.bands == {"3 bands uint8": 3}
    assert 0 < report.classes[1]["share"] < 1  # the vessels (here blobs) were read, not an empty mask
