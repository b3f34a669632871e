"""`prepare`: each public layout, built tiny in tmp_path, converts to a data set that checks clean."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data.check import check_dataset
from unetkit.data.io import read_image, read_mask_raw, write_image, write_mask
from unetkit.data.sources import SOURCES, prepare
from unetkit.data.sources.cityscapes import label_to_train_ids
from unetkit.errors import UnetkitError

RNG = np.random.default_rng(0)


def membrane_labels(count: int, size: int = 16) -> np.ndarray:
    labels = np.full((count, size, size), 255, np.uint8)
    labels[:, ::4, :] = 0  # membranes: every fourth row
    return labels


def assert_clean(out):
    report = check_dataset(out)
    assert report.ok, report.to_text()
    return report


def test_isbi2012_stacks(tmp_path):
    src = tmp_path / "download"
    src.mkdir()
    tifffile.imwrite(src / "train-volume.tif", RNG.integers(0, 256, (10, 16, 16), dtype=np.uint8))
    tifffile.imwrite(src / "train-labels.tif", membrane_labels(10))
    result = prepare("isbi2012", src, tmp_path / "isbi")
    assert result.pairs == 10 and result.splits == {"train": 8, "val": 2}
    report = assert_clean(tmp_path / "isbi")
    assert [c["name"] for c in report.classes] == ["other", "membrane"] and report.task == "binary"
    mask, _ = read_mask_raw(tmp_path / "isbi" / "masks" / "slice00.png")
    np.testing.assert_array_equal(mask, (membrane_labels(1)[0] == 0).astype(np.uint8))
    assert report.classes[1]["share"] == pytest.approx(0.25)
    assert (tmp_path / "isbi" / "splits" / "val.txt").read_text() == "slice04\nslice09\n"


def test_isbi2012_png_folders(tmp_path):
    folder = tmp_path / "unet" / "data" / "membrane" / "train"
    for i in range(3):
        write_image(folder / "image" / f"{i}.png", RNG.integers(0, 256, (16, 16), dtype=np.uint8))
        write_image(folder / "label" / f"{i}.png", membrane_labels(1)[0])
    prepare("isbi2012", tmp_path / "unet", tmp_path / "isbi")
    assert_clean(tmp_path / "isbi")
    np.testing.assert_array_equal(read_image(tmp_path / "isbi" / "images" / "slice02.png")[:, :, 0],
                                  read_image(folder / "image" / "2.png")[:, :, 0])


def test_isbi2012_refuses_a_folder_of_class_ids_it_would_turn_into_all_membrane(tmp_path):
    """A data set already in the standard layout (masks 0/1) is not the challenge's 0/255 labels."""
    done = tmp_path / "done"
    for i in range(3):
        write_image(done / "images" / f"slice{i}.png", RNG.integers(0, 256, (16, 16), dtype=np.uint8))
        write_mask(done / "masks" / f"slice{i}.png", (membrane_labels(1)[0] == 0).astype(np.uint8))
    with pytest.raises(UnetkitError, match=f"values up to 1.*--data {done}"):
        prepare("isbi2012", done, tmp_path / "isbi")
    assert not (tmp_path / "isbi").exists()


def test_carla_episodes_take_the_class_from_the_red_channel(tmp_path):
    src = tmp_path / "lyft"
    for episode, folder in (("dataA", "CameraSeg"), ("dataB", "CameraMask")):
        for i in range(2):
            ids = RNG.integers(0, 13, (6, 8)).astype(np.uint8)
            ids[0, :2] = [7, 10]
            mask = np.stack([ids, RNG.integers(0, 256, (6, 8)), np.zeros((6, 8))], axis=2).astype(np.uint8)
            write_image(src / episode / "CameraRGB" / f"{i:04d}.png", RNG.integers(0, 256, (6, 8, 4), dtype=np.uint8))
            write_image(src / episode / folder / f"{i:04d}.png", mask)
    result = prepare("carla", src, tmp_path / "carla")
    assert result.pairs == 4
    report = assert_clean(tmp_path / "carla")
    assert report.task == "multiclass" and len(report.classes) == 13 and report.bands == {"3 bands uint8": 4}
    back, kind = read_mask_raw(tmp_path / "carla" / "masks" / "dataB" / "0001.png")
    assert kind == "ids"
    np.testing.assert_array_equal(back, read_image(src / "dataB" / "CameraMask" / "0001.png")[:, :, 0])


def test_oxford_pet_trimaps(tmp_path):
    src = tmp_path / "pets"
    names = ["Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2"]
    (src / "images").mkdir(parents=True)
    for name in names:
        trimap = np.full((8, 10), 2, np.uint8)
        trimap[2:6, 3:7] = 1
        trimap[2, 3:7] = 3
        write_mask(src / "annotations" / "trimaps" / f"{name}.png", trimap)
        Image.fromarray(RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(src / "images" / f"{name}.jpg")
    Image.fromarray(RNG.integers(0, 256, (8, 10), dtype=np.uint8)).save(src / "images" / "beagle_1.jpg")  # gray
    Image.fromarray(RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(src / "images" / "beagle_2.jpg",
                                                                         format="PNG")  # PNG behind .jpg
    (src / "images" / "broken_1.jpg").write_bytes(b"")
    write_mask(src / "annotations" / "trimaps" / "broken_1.png", np.ones((8, 10), np.uint8))
    (src / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_1 2 2 1\nbeagle_2 2 2 1\n")
    (src / "annotations" / "test.txt").write_text("Abyssinian_2 1 1 1\n")
    result = prepare("oxford-pet", src, tmp_path / "pet")
    assert result.pairs == 4 and len(result.skipped) == 1 and "broken_1" in result.skipped[0]
    report = assert_clean(tmp_path / "pet")
    assert report.ignore_index == 255 and [c["name"] for c in report.classes] == ["background", "pet"]
    assert report.bands == {"3 bands uint8": 4}
    assert {k: len(v) for k, v in report.splits.items()} == {"train": 2, "val": 1, "test": 1}
    mask, _ = read_mask_raw(tmp_path / "pet" / "masks" / "beagle_1.png")
    assert mask[0, 0] == 0 and mask[4, 4] == 1 and mask[2, 4] == 255
    assert (tmp_path / "pet" / "images" / "Abyssinian_1.jpg").read_bytes() == \
        (src / "images" / "Abyssinian_1.jpg").read_bytes()


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    src = tmp_path / "cs"
    for split, city, count in (("train", "aachen", 2), ("val", "lindau", 1)):
        for i in range(count):
            base = f"{city}_{i:06d}_000019"
            labels = RNG.choice([0, 7, 8, 11, 26, 33, 4], size=(6, 8)).astype(np.uint8)
            write_image(src / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png",
                        RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            write_mask(src / "gtFine" / split / city / f"{base}_gtFine_labelIds.png", labels)
    result = prepare("cityscapes", src, tmp_path / "city")
    assert result.pairs == 3 and result.splits == {"train": 2, "val": 1}
    report = check_dataset(tmp_path / "city")
    assert report.ok and len(report.classes) == 19 and report.ignore_index == 255
    labels, _ = read_mask_raw(src / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png")
    train_ids, _ = read_mask_raw(tmp_path / "city" / "masks" / "lindau" / "lindau_000000_000019.png")
    np.testing.assert_array_equal(train_ids, label_to_train_ids()[labels])
    assert label_to_train_ids()[[7, 26, 33, 0]].tolist() == [0, 13, 18, 255]


# --- refusals ------------------------------------------------------------------------------


def test_without_src_says_where_to_get_the_data(tmp_path):
    for name in SOURCES:
        with pytest.raises(UnetkitError, match="https://") as caught:
            prepare(name, None, tmp_path / "out")
        assert "is not downloaded by unetkit" in str(caught.value)
    with pytest.raises(UnetkitError, match="choose one of"):
        prepare("imagenet", tmp_path, tmp_path / "out")


def test_missing_src_and_wrong_layout_are_refused(tmp_path):
    with pytest.raises(UnetkitError, match="is not a folder"):
        prepare("carla", tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    for name in SOURCES:
        with pytest.raises(UnetkitError, match=str(tmp_path / "empty")):
            prepare(name, tmp_path / "empty", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_existing_out_is_not_overwritten(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UnetkitError, match="already exists and is not empty"):
        prepare("isbi2012", tmp_path / "src", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_failure_half_way_leaves_no_partial_output(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "train-volume.tif", RNG.integers(0, 256, (4, 16, 16), dtype=np.uint8),
                     photometric="minisblack")
    tifffile.imwrite(src / "train-labels.tif", membrane_labels(3), photometric="minisblack")
    with pytest.raises(UnetkitError, match="matching pair of stacks"):
        prepare("isbi2012", src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_unwritable_out_is_one_sentence(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkdtemp", denied)
    with pytest.raises(UnetkitError, match="cannot create .*out: Permission denied; choose a folder you can write to"):
        prepare("isbi2012", tmp_path / "src", tmp_path / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_parent_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UnetkitError, match="Permission denied"):
            prepare("isbi2012", tmp_path / "src", locked / "out")
    finally:
        locked.chmod(0o700)
