"""data.io in memory: uploads read as files are read, masks encoded as files are written."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data.io import (
    UnreadableFile,
    encode_geo_mask,
    encode_mask_png,
    encode_mask_tiff,
    read_geo_profile,
    read_geo_profile_bytes,
    read_image_bytes,
    read_image_nodata,
    write_geo_mask,
    write_image,
    write_mask,
)

RNG = np.random.default_rng(0)
GRID = [
    ("grey.png", RNG.integers(0, 256, (9, 7), dtype=np.uint8)),
    ("deep.png", RNG.integers(0, 65536, (9, 7), dtype=np.uint16)),
    ("rgb16.png", RNG.integers(0, 65536, (9, 7, 3), dtype=np.uint16)),
    ("rgba.png", RNG.integers(0, 256, (9, 7, 4), dtype=np.uint8)),
    ("photo.jpg", RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)),
    ("old.bmp", RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)),
    ("bands.tif", RNG.integers(0, 4000, (9, 7, 10), dtype=np.uint16)),
    ("floats.tif", np.where(RNG.random((9, 7, 2)) < 0.1, np.nan, RNG.random((9, 7, 2))).astype(np.float32)),
]


@pytest.mark.parametrize("name, image", GRID, ids=[n for n, _ in GRID])
@pytest.mark.parametrize("alpha", [False, True])
def test_bytes_read_as_the_file_reads(tmp_path, name, image, alpha):
    path = tmp_path / name
    write_image(path, image)
    expected, expected_nodata = read_image_nodata(path, include_alpha=alpha)
    got, nodata = read_image_bytes(path.read_bytes(), name, include_alpha=alpha)
    assert got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=True)
    assert (nodata is None) == (expected_nodata is None)
    if nodata is not None:
        assert np.array_equal(nodata, expected_nodata)
    misnamed, _ = read_image_bytes(path.read_bytes(), "upload.bin", include_alpha=alpha)
    assert np.array_equal(misnamed, expected, equal_nan=True)


def test_the_pixel_limit_is_checked_from_the_header(tmp_path):
    path = tmp_path / "wide.png"
    write_image(path, np.zeros((30, 40), np.uint8))
    with pytest.raises(UnreadableFile, match="30x40 = 1,200 pixels, over the limit of 1,000") as caught:
        read_image_bytes(path.read_bytes(), "wide.png", pixel_limit=1000)
    with pytest.raises(UnreadableFile) as from_file:
        read_image_nodata(path, pixel_limit=1000)
    assert caught.value.reason == from_file.value.reason
    tif = tmp_path / "wide.tif"
    write_image(tif, np.zeros((30, 40, 3), np.uint16))
    with pytest.raises(UnreadableFile, match="over the limit"):
        read_image_bytes(tif.read_bytes(), "wide.tif", pixel_limit=1000)


@pytest.mark.parametrize("data, fragment", [(b"", "empty"), (b"II*\x00 not really", "damaged or truncated"),
                                            (b"plain text", "not a valid")])
def test_bad_bytes_are_one_sentence_naming_the_upload(data, fragment):
    with pytest.raises(UnreadableFile, match=fragment) as caught:
        read_image_bytes(data, "cells.png")
    assert str(caught.value).startswith("cannot read cells.png: ")


@pytest.mark.parametrize("mask, palette", [
    (RNG.integers(0, 3, (20, 30)), [(0, 0, 0), (255, 0, 0), (0, 255, 0)] + [(0, 0, 0)] * 253),
    (RNG.integers(0, 3, (20, 30)).astype(bool), None),
    (RNG.integers(0, 900, (20, 30)), None),
])
def test_encoded_masks_are_the_bytes_write_mask_writes(tmp_path, mask, palette):
    write_mask(tmp_path / "m.png", mask, palette)
    assert encode_mask_png(mask, palette) == (tmp_path / "m.png").read_bytes()
    write_mask(tmp_path / "m.tif", mask)
    assert encode_mask_tiff(mask) == (tmp_path / "m.tif").read_bytes()


def test_a_multilabel_stack_encodes_as_its_pages(tmp_path):
    stack = RNG.integers(0, 2, (3, 10, 12))
    write_mask(tmp_path / "ml.tif", stack)
    assert encode_mask_tiff(stack) == (tmp_path / "ml.tif").read_bytes()
    with pytest.raises(Exception, match="use .tif"):
        encode_mask_png(stack)


def test_geotiff_profile_and_mask_in_memory(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    path = tmp_path / "geo.tif"
    transform = Affine(10, 0, 500000, 0, -10, 4600000)
    with rasterio.open(path, "w", driver="GTiff", width=12, height=10, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=transform) as sink:
        sink.write(np.ones((1, 10, 12), np.uint16))
    profile = read_geo_profile_bytes(path.read_bytes())
    assert profile["crs"] == read_geo_profile(path)["crs"] and profile["transform"] == transform
    assert read_geo_profile_bytes(b"\x89PNG not a tiff") is None
    mask = RNG.integers(0, 3, (10, 12)).astype(np.uint8)
    write_geo_mask(tmp_path / "mask.tif", mask, profile, nodata=255)
    with rasterio.MemoryFile(encode_geo_mask(mask, profile, nodata=255)) as memory, memory.open() as made, \
            rasterio.open(tmp_path / "mask.tif") as written:
        assert made.profile == written.profile and np.array_equal(made.read(), written.read())
