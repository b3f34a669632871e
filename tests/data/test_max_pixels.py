"""One pixel limit, read from the file header before any decoding: bombs are one sentence, not a traceback.

A PNG whose header says 30000x30000 used to escape as Pillow's DecompressionBombError, and a
419 KB TIFF took 792 MB in `data check`.
"""

from __future__ import annotations

import pickle
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data import SegmentationDataset, inspect_dataset
from unetkit.data.check import check_dataset
from unetkit.data.io import (
    DEFAULT_MAX_PIXELS,
    UnreadableFile,
    max_pixels,
    read_image,
    read_image_nodata,
    read_mask_raw,
    set_max_pixels,
    write_image,
    write_mask,
)
from unetkit.errors import UnetkitError

from .conftest import blob_mask, noise_image


@pytest.fixture(autouse=True)
def _restore_limit():
    before = max_pixels()
    yield
    set_max_pixels(before)


def bomb_png(path: Path, height: int = 30000, width: int = 30000) -> Path:
    """A 4x4 PNG whose IHDR claims height x width (CRC fixed, so decoders believe it)."""
    write_mask(path, np.zeros((4, 4), np.uint8))
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def huge_tiff(tmp_path_factory) -> Path:
    """A real 16384x16384 uint8 TIFF of zeros (268 Mpx over the 250 Mpx default), ~260 KB on disk."""
    path = tmp_path_factory.mktemp("huge") / "huge.tif"
    tile = np.zeros((2048, 2048), np.uint8)
    tifffile.imwrite(path, (tile for _ in range(64)), shape=(16384, 16384), dtype=np.uint8, tile=(2048, 2048),
                     compression="zlib")
    assert path.stat().st_size < 1_000_000
    return path


def refused(read, path: Path) -> str:
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableFile) as caught:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak:,} bytes: the pixels were decoded"  # refused from the header alone
    message = str(caught.value)
    assert str(path) in message and "\n" not in message and "--max-pixels" in message
    return message


def test_default_admits_a_sentinel_2_tile_and_a_large_scan():
    assert max_pixels() == DEFAULT_MAX_PIXELS == 250_000_000
    assert 10980 * 10980 <= DEFAULT_MAX_PIXELS and 10000 * 10000 <= DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("read", [read_image, read_image_nodata, read_mask_raw])
def test_png_with_a_huge_header_is_one_sentence(tmp_path, read):
    message = refused(read, bomb_png(tmp_path / "bomb.png"))
    assert "30000x30000 = 900,000,000 pixels" in message and "limit of 250,000,000" in message
    assert "--max-pixels 900000000" in message


@pytest.mark.parametrize("read", [read_image, read_image_nodata, read_mask_raw])
def test_tiff_with_a_huge_page_is_one_sentence(huge_tiff, read):
    message = refused(read, huge_tiff)
    assert "16384x16384 = 268,435,456 pixels" in message and "limit of 250,000,000" in message


def test_the_setter_and_the_per_call_override(tmp_path):
    png, tif = tmp_path / "a.png", tmp_path / "a.tif"
    write_image(png, noise_image(40, 30, 3, 0))
    write_image(tif, noise_image(40, 30, 5, 0, np.float32))
    set_max_pixels(1000)
    assert max_pixels() == 1000
    for path in (png, tif):
        with pytest.raises(UnreadableFile, match=r"40x30 = 1,200 pixels, over the limit of 1,000 pixels"):
            read_image(path)
        with pytest.raises(UnreadableFile, match="--max-pixels 1200"):
            read_mask_raw(path)
        assert read_image(path, pixel_limit=1200).shape[:2] == (40, 30)
        assert read_image(path, pixel_limit=None).shape[:2] == (40, 30)
    set_max_pixels(None)
    assert max_pixels() is None and read_image(png).shape == (40, 30, 3)
    with pytest.raises(UnreadableFile):
        read_image(png, pixel_limit=10)
    for bad in (0, -5, 2.5, True, "1000"):
        with pytest.raises(UnetkitError, match="--max-pixels"):
            set_max_pixels(bad)
    assert max_pixels() is None


def test_label_folder_files_are_limited_too(tmp_path):
    folder = tmp_path / "mask"
    write_mask(folder / "road.png", blob_mask(40, 30, 0))
    write_mask(folder / "car.png", blob_mask(40, 30, 1))
    set_max_pixels(1000)
    with pytest.raises(UnreadableFile, match="road.png: its header says 40x30"):
        read_mask_raw(folder, labels=["road", "car"])


def test_pillow_does_not_decide_and_its_own_error_is_caught(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    write_image(path, noise_image(40, 40, 3, 0))
    assert Image.MAX_IMAGE_PIXELS is None  # our limit decides, with a message naming --max-pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # someone else turned Pillow's back on
    with pytest.raises(UnreadableFile, match="--max-pixels") as caught:
        read_image(path, pixel_limit=None)
    assert "\n" not in str(caught.value)


def test_check_reports_each_oversized_file_once_and_checks_the_rest(builder, huge_tiff):
    builder.pairs(4, size=(12, 10))
    bomb_png(builder.root / "images" / "bomb.png")
    write_mask(builder.root / "masks" / "bomb.png", blob_mask(12, 10, 5))
    (builder.root / "images" / "huge.tif").write_bytes(huge_tiff.read_bytes())
    write_mask(builder.root / "masks" / "huge.png", blob_mask(12, 10, 6))
    builder.pair("bigmask", noise_image(12, 10, 3, 7), None)
    bomb_png(builder.root / "masks" / "bigmask.png", 20000, 20000)
    report = check_dataset(builder.root)
    assert sorted((p.code, p.file) for p in report.problems) == [
        ("unreadable", "images/bomb.png"), ("unreadable", "images/huge.tif"), ("unreadable", "masks/bigmask.png"),
    ]
    text = report.to_text()
    for problem in report.problems:
        assert problem.corrupts and "--max-pixels" in problem.message and "\n" not in problem.message
        assert text.count(problem.file + ":") == 1 and problem.to_line().startswith("error: ")
    assert report.pairs == 7 and report.bands == {"3 bands uint8": 5}  # every other image was read
    assert report.task == "binary" and [c["id"] for c in report.classes] == [0, 1]
    with pytest.raises(UnetkitError, match="--max-pixels"):
        inspect_dataset(builder.root)


def test_raised_limit_lets_check_read_them(builder):
    builder.pairs(3, size=(40, 30))
    set_max_pixels(1000)
    report = check_dataset(builder.root)
    assert len(report.errors) == 6 and not report.ok  # every image and every mask, one line each
    set_max_pixels(1200)
    assert check_dataset(builder.root).ok


def test_the_dataset_keeps_the_limit_it_was_built_under(builder):
    builder.pairs(3, size=(40, 30))
    spec, splits = inspect_dataset(builder.root)
    set_max_pixels(1000)
    dataset = SegmentationDataset(builder.root, splits["train"], spec)
    set_max_pixels(DEFAULT_MAX_PIXELS)  # a spawned worker process starts with the default
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.pixel_limit == 1000
    with pytest.raises(UnreadableFile, match="over the limit of 1,000 pixels"):
        copy[0]
