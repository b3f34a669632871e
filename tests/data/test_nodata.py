"""Pixels without data (NaN, infinity, GeoTIFF nodata): found, kept out of the statistics, filled or ignored.

Rasters cut to an orbit or a coastline have them; a real 5-band Sentinel-2 set with every NaN
under the ignore label (255) used to be refused by `data check` and training.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from unetkit.data import SegmentationDataset, inspect_dataset
from unetkit.data.check import check_dataset
from unetkit.data.io import read_image, read_image_nodata
from unetkit.data.transforms import build_augmentation
from unetkit.errors import UnetkitError

from .conftest import blob_mask, noise_image

SIZE = (16, 12)


def sentinel_like(builder, count: int = 4, nan_under: str = "ignore", seed: int = 0) -> dict[str, np.ndarray]:
    """5-band float32 TIFFs, masks 0/1 with a 255 (ignore) strip; NaN under the strip or under labels.
    Returns each stem's no-data mask."""
    rng = np.random.default_rng(seed)
    where = {}
    for i in range(count):
        image = noise_image(*SIZE, 5, i, np.float32) * 3000
        mask = blob_mask(*SIZE, i)
        mask[:, -3:] = 255
        nodata = np.zeros(SIZE, bool)
        if nan_under == "ignore":
            nodata[:, -3:] = rng.random((SIZE[0], 3)) < 0.6
        else:  # labelled pixels: 2 + i of them in the image's first rows
            nodata[0, : 2 + i] = True
        image[nodata, rng.integers(0, 5, nodata.sum())] = np.nan  # one band is enough
        builder.pair(f"s{i}", image, mask, image_ext=".tif")
        where[f"s{i}"] = nodata
    return where


def valid_pixels(root, stems, where) -> np.ndarray:
    return np.concatenate([read_image(root / "images" / f"{s}.tif")[~where[s]].astype(np.float64) for s in stems])


def test_nan_only_under_the_ignore_label_passes_the_check(builder):
    where = sentinel_like(builder, nan_under="ignore")
    report = check_dataset(builder.root)
    assert report.ok and report.problems == [], report.to_text()
    assert report.ignore_index == 255
    total = sum(int(m.sum()) for m in where.values())
    assert any(f"{total:,} pixel(s) without data" in n and "ignore label 255" in n for n in report.notes)
    assert np.isfinite(report.spec.mean).all() and np.isfinite(report.spec.std).all()


def test_a_training_item_of_such_a_set_is_finite(builder):
    where = sentinel_like(builder, nan_under="ignore")
    spec, splits = inspect_dataset(builder.root)
    augmentation = build_augmentation((16, 16), level="strong", ignore_index=spec.ignore_index)
    train = SegmentationDataset(builder.root, splits["train"], spec, transform=augmentation, patch_size=(16, 16))
    for epoch in range(3):
        train.set_epoch(epoch)
        for item in train:
            assert np.isfinite(item["image"].numpy()).all()
    plain = SegmentationDataset(builder.root, splits["train"], spec)
    item = plain[0]
    nodata = where[item["stem"]]
    image = item["image"].permute(1, 2, 0).numpy()
    assert np.isfinite(image).all() and (image[nodata] == 0).all()  # the band mean, normalised
    assert (item["mask"].numpy()[nodata] == 255).all()


def test_nan_under_labels_is_a_warning_with_the_count(builder):
    where = sentinel_like(builder, nan_under="labels")
    report = check_dataset(builder.root)
    assert report.ok, report.to_text()
    (problem,) = report.problems
    total = sum(int(m.sum()) for m in where.values())
    assert problem.code == "nodata" and not problem.corrupts
    assert f"{total} pixel(s)" in problem.message and "in 4 image(s)" in problem.message
    assert "band mean" in problem.message and "--ignore_nodata" in problem.message
    assert problem.to_line().startswith("warning: ") and "\n" not in problem.message
    spec, splits = inspect_dataset(builder.root)
    item = SegmentationDataset(builder.root, ["s3"], spec)[0]
    image, mask = item["image"].permute(1, 2, 0).numpy(), item["mask"].numpy()
    assert (image[where["s3"]] == 0).all() and np.isfinite(image).all()
    np.testing.assert_array_equal(mask[where["s3"]], blob_mask(*SIZE, 3)[where["s3"]])  # trained on with labels


def test_one_image_names_the_file(builder):
    builder.pairs(3, size=SIZE, bands=2, dtype=np.float32)
    image = noise_image(*SIZE, 2, 7, np.float32)
    image[2, 3, 0] = np.inf
    builder.pair("inf", image, blob_mask(*SIZE, 7), image_ext=".tif")
    report = check_dataset(builder.root)
    assert [(p.code, p.file) for p in report.problems] == [("nodata", "images/inf.tif")]
    assert "1 pixel(s)" in report.problems[0].message and "in 1 image(s)" in report.problems[0].message


@pytest.mark.parametrize(("masks", "ignore"), [("0/1 + 255", 255), ("0/1", 255), ("0/255", 256)])
def test_ignore_nodata_leaves_labelled_nodata_out(builder, masks, ignore):
    """The ignore index the set has (255 beside 0/1), or one added: 255, or 256 where 255 is a class."""
    where = sentinel_like(builder, nan_under="labels")
    expected = {stem: blob_mask(*SIZE, int(stem[1:])) for stem in where}
    for stem, labels in expected.items():
        if masks == "0/1 + 255":
            labels[:, -3:] = 255  # sentinel_like's ignore strip, kept
        else:
            stored = labels * 255 if masks == "0/255" else labels
            builder.pair(stem, read_image(builder.root / "images" / f"{stem}.tif"), stored.astype(np.uint8),
                         image_ext=".tif")
    report = check_dataset(builder.root, ignore_nodata=True)
    assert report.ok and report.ignore_index == ignore and report.spec.ignore_index == ignore
    added = [n for n in report.notes if f"ignore index {ignore} added" in n and "--ignore_nodata" in n]
    assert len(added) == (0 if masks == "0/1 + 255" else 1)
    (problem,) = report.problems
    assert problem.code == "nodata" and not problem.corrupts and "left out of the loss" in problem.message
    assert "trained on with their labels" not in problem.message
    assert report.spec.ignore_index not in {c["id"] for c in report.spec.classes}

    spec, _ = inspect_dataset(builder.root, ignore_nodata=True)
    assert spec.ignore_index == ignore
    for cache in (False, True):
        dataset = SegmentationDataset(builder.root, list(where), spec, ignore_nodata=True, cache=cache)
        for _ in range(2 if cache else 1):
            for item in dataset:
                nodata, mask = where[item["stem"]], item["mask"].numpy()
                assert (mask[nodata] == ignore).all()
                np.testing.assert_array_equal(mask[~nodata], expected[item["stem"]][~nodata])
    without = check_dataset(builder.root).spec.ignore_index
    assert without == (255 if masks == "0/1 + 255" else None)  # only asked for, never kept


def test_ignore_nodata_needs_an_ignore_index_in_the_spec(builder):
    builder.pairs(3, size=SIZE, bands=2, dtype=np.float32)
    image = noise_image(*SIZE, 2, 7, np.float32)
    image[0, 0, 1] = np.nan
    builder.pair("nan", image, blob_mask(*SIZE, 7), image_ext=".tif")
    spec, _ = inspect_dataset(builder.root)  # without ignore_nodata: no ignore index
    assert spec.ignore_index is None
    with pytest.raises(UnetkitError, match="ignore_nodata=True") as caught:
        SegmentationDataset(builder.root, ["nan"], spec, ignore_nodata=True)[0]
    assert "images/nan.tif" in str(caught.value) and "\n" not in str(caught.value)


def test_band_statistics_use_only_pixels_with_data(builder):
    where = sentinel_like(builder, nan_under="labels")
    report = check_dataset(builder.root, val_fraction=0.25)
    pixels = valid_pixels(builder.root, report.splits["train"], where)
    np.testing.assert_allclose(report.spec.mean, pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(report.spec.std, pixels.std(0), rtol=1e-9)


def gdal_tiff(path, image, nodata: str) -> None:
    layout = {"planarconfig": "contig"} if image.ndim == 3 else {}
    tifffile.imwrite(path, image, photometric="minisblack", extratags=[(42113, "s", 0, nodata, False)], **layout)


@pytest.mark.parametrize(("dtype", "value", "text"), [(np.uint16, 0, "0"), (np.int16, -9999, "-9999"),
                                                       (np.float32, -9999.0, "-9999.0"), (np.uint8, 255, " 255 ")])
def test_gdal_nodata_tag_is_recognised(tmp_path, dtype, value, text):
    image = (noise_image(9, 7, 3, 1, np.uint8) % 200 + 1).astype(dtype)
    expected = np.zeros((9, 7), bool)
    expected[1, 2] = expected[8, 6] = True
    image[1, 2, 0] = image[8, 6, 2] = value
    gdal_tiff(tmp_path / "x.tif", image, text)
    back, nodata = read_image_nodata(tmp_path / "x.tif")
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(read_image(tmp_path / "x.tif"), image)  # read_image is unchanged
    assert nodata is not None and nodata.dtype == bool
    np.testing.assert_array_equal(nodata, expected)


def test_no_nodata_is_none(tmp_path):
    image = noise_image(5, 4, 2, 0, np.uint16) + 1
    gdal_tiff(tmp_path / "tag.tif", image, "0")  # a tag, but no pixel holds its value
    gdal_tiff(tmp_path / "far.tif", image.astype(np.uint8), "-9999")  # a value uint8 cannot hold
    tifffile.imwrite(tmp_path / "plain.tif", image)
    for name in ("tag.tif", "far.tif", "plain.tif"):
        assert read_image_nodata(tmp_path / name)[1] is None
    nan_tag = noise_image(5, 4, 2, 0, np.float32)
    nan_tag[0, 0, 1] = np.nan
    gdal_tiff(tmp_path / "nan.tif", nan_tag, "nan")
    assert read_image_nodata(tmp_path / "nan.tif")[1].sum() == 1


def test_gdal_nodata_set_checks_and_trains(builder):
    """uint16 GeoTIFF-style images whose 0 means 'no data': under the ignore label, nothing to report."""
    where = {}
    for i in range(3):
        image = noise_image(*SIZE, 4, i, np.uint16) + 1
        mask = blob_mask(*SIZE, i)
        mask[-2:] = 255
        image[-2:, ::2] = 0
        builder.pair(f"g{i}", image, mask, image_ext=".tif")
        gdal_tiff(builder.root / "images" / f"g{i}.tif", image, "0")
        where[f"g{i}"] = np.zeros(SIZE, bool)
        where[f"g{i}"][-2:, ::2] = True
    report = check_dataset(builder.root, val_fraction=0.34)
    assert report.ok and report.problems == [] and report.ignore_index == 255
    pixels = valid_pixels(builder.root, report.splits["train"], where)
    np.testing.assert_allclose(report.spec.mean, pixels.mean(0), rtol=1e-9)
    item = SegmentationDataset(builder.root, ["g0"], report.spec)[0]
    assert (item["image"].permute(1, 2, 0).numpy()[where["g0"]] == 0).all()


def test_training_images_without_any_data_are_an_error(builder):
    for i in range(2):
        image = np.full((*SIZE, 2), np.nan, np.float32)
        mask = blob_mask(*SIZE, i)
        builder.pair(f"e{i}", image, mask, image_ext=".tif")
    report = check_dataset(builder.root)
    assert "no-valid-pixels" in [p.code for p in report.errors]
