"""Every supported format round-trips through write_* / read_*; every bad file is one clear sentence."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data.io import (
    UnreadableFile,
    image_size,
    read_geo_profile,
    read_image,
    read_mask_raw,
    to_chw,
    to_hwc,
    write_image,
    write_mask,
)
from unetkit.errors import UnetkitError

RNG = np.random.default_rng(0)


def random_image(shape, dtype):
    if dtype == np.float32:
        return (RNG.standard_normal(shape) * 1000).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


LOSSLESS = [
    (ext, dtype, bands)
    for ext, dtypes, band_counts in [
        (".png", [np.uint8, np.uint16], [None, 1, 3, 4]),
        (".bmp", [np.uint8], [None, 3]),
        (".tif", [np.uint8, np.uint16, np.float32], [None, 1, 2, 3, 4, 10, 13]),
    ]
    for dtype in dtypes
    for bands in band_counts
]


@pytest.mark.parametrize(("ext", "dtype", "bands"), LOSSLESS,
                         ids=[f"{e}-{np.dtype(d).name}-{b}" for e, d, b in LOSSLESS])
def test_lossless_formats_round_trip(tmp_path, ext, dtype, bands):
    shape = (7, 5) if bands is None else (7, 5, bands)
    image = random_image(shape, dtype)
    path = tmp_path / f"x{ext}"
    write_image(path, image)
    back = read_image(path, include_alpha=True)
    expected = image if image.ndim == 3 else image[:, :, None]
    assert back.dtype == expected.dtype
    np.testing.assert_array_equal(back, expected)
    assert image_size(path) == (7, 5)


def test_jpeg_round_trips_within_compression_error(tmp_path):
    smooth = np.linspace(0, 255, 32 * 24 * 3).reshape(32, 24, 3).astype(np.uint8)
    for image, name in [(smooth, "rgb.jpg"), (smooth[:, :, 0], "gray.jpeg")]:
        write_image(tmp_path / name, image)
        back = read_image(tmp_path / name)
        assert back.shape == (32, 24, 3 if image.ndim == 3 else 1) and back.dtype == np.uint8
        assert np.abs(back.astype(int) - (image if image.ndim == 3 else image[:, :, None])).mean() < 3


def test_rgba_alpha_is_dropped_unless_asked(tmp_path):
    rgba = random_image((4, 6, 4), np.uint8)
    write_image(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])
    assert read_image(tmp_path / "a.png", include_alpha=True).shape == (4, 6, 4)
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert read_image(tmp_path / "a.tif").shape == (4, 6, 3)


def test_four_band_multispectral_tiff_keeps_its_fourth_band(tmp_path):
    write_image(tmp_path / "rgbn.tif", random_image((4, 6, 4), np.uint16))
    assert read_image(tmp_path / "rgbn.tif").shape == (4, 6, 4)


def test_grayscale_stays_one_band(tmp_path):
    write_image(tmp_path / "g.png", random_image((4, 6), np.uint8))
    assert read_image(tmp_path / "g.png").shape == (4, 6, 1)


@pytest.mark.parametrize("layout", ["planar", "pages"])
def test_band_first_tiffs_come_back_bands_last(tmp_path, layout):
    """Sentinel-2 style files store bands first (planar config or one page per band)."""
    bands = random_image((13, 6, 5), np.uint16)
    options = {"photometric": "minisblack", "planarconfig": "separate"} if layout == "planar" else {}
    tifffile.imwrite(tmp_path / "s2.tif", bands, **options)
    np.testing.assert_array_equal(read_image(tmp_path / "s2.tif"), np.moveaxis(bands, 0, -1))


def test_hwc_chw_conversion_lives_in_io():
    image = random_image((3, 4, 5), np.uint8)
    assert to_chw(image).shape == (5, 3, 4) and to_chw(image[:, :, 0]).shape == (1, 3, 4)
    np.testing.assert_array_equal(to_hwc(to_chw(image)), image)


# --- masks ---------------------------------------------------------------------------------


def test_palette_mask_is_mode_p_and_read_by_index(tmp_path):
    mask = RNG.integers(0, 4, (6, 8))
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    write_mask(tmp_path / "m.png", mask, palette=palette)
    with Image.open(tmp_path / "m.png") as picture:
        assert picture.mode == "P"
        assert picture.getpalette()[:12] == [v for c in palette for v in c]
    back, kind = read_mask_raw(tmp_path / "m.png")
    assert kind == "ids"
    np.testing.assert_array_equal(back, mask)


def test_mask_without_palette_is_mode_l(tmp_path):
    write_mask(tmp_path / "m.png", np.array([[0, 1], [2, 3]]))
    with Image.open(tmp_path / "m.png") as picture:
        assert picture.mode == "L"


@pytest.mark.parametrize("name", ["big.png", "big.tif"])
def test_ids_above_255_are_kept(tmp_path, name):
    mask = np.array([[0, 300], [65535, 7]])
    write_mask(tmp_path / name, mask)
    back, kind = read_mask_raw(tmp_path / name)
    assert kind == "ids"
    np.testing.assert_array_equal(back, mask)


def test_multilabel_mask_is_a_multipage_tiff(tmp_path):
    stack = RNG.integers(0, 2, (3, 6, 8))
    write_mask(tmp_path / "ml.tif", stack)
    with tifffile.TiffFile(tmp_path / "ml.tif") as tif:
        assert len(tif.pages) == 3
    back, kind = read_mask_raw(tmp_path / "ml.tif")
    assert kind == "multilabel"
    np.testing.assert_array_equal(back, stack)


def test_multilabel_folder_is_stacked_in_label_order(tmp_path):
    folder = tmp_path / "x"
    road, car = RNG.integers(0, 2, (5, 4)), RNG.integers(0, 2, (5, 4))
    write_mask(folder / "road.png", road * 255)
    write_mask(folder / "car.png", car)
    back, kind = read_mask_raw(folder, labels=["road", "car", "tree"])
    assert kind == "multilabel"
    np.testing.assert_array_equal(back, np.stack([road * 255, car, np.zeros_like(car)]))


def test_rgb_mask_is_reported_as_rgb(tmp_path):
    write_image(tmp_path / "c.png", random_image((4, 4, 3), np.uint8))
    assert read_mask_raw(tmp_path / "c.png")[1] == "rgb"


@pytest.mark.parametrize(("name", "mask", "why"), [
    ("m.jpg", np.zeros((3, 3), np.uint8), "lossless"),
    ("m.png", np.zeros((2, 3, 3), np.uint8), "multi-page TIFF"),
    ("m.png", np.zeros((3, 3), np.float32), "integer"),
    ("m.png", -np.ones((3, 3), np.int32), ">= 0"),
])
def test_write_mask_refuses_what_would_lose_labels(tmp_path, name, mask, why):
    with pytest.raises(UnetkitError, match=why):
        write_mask(tmp_path / name, mask)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("name", "image"), [
    ("a.jpg", np.zeros((3, 3, 4), np.uint8)),
    ("a.png", np.zeros((3, 3, 2), np.uint8)),
    ("a.png", np.zeros((3, 3), np.float32)),
    ("a.bmp", np.zeros((3, 3), np.uint16)),
    ("a.gif", np.zeros((3, 3), np.uint8)),
    ("a.tif", np.zeros((3, 3), np.int64)),
])
def test_write_image_refuses_what_the_format_cannot_hold(tmp_path, name, image):
    with pytest.raises(UnetkitError, match=str(tmp_path / name)):
        write_image(tmp_path / name, image)
    assert not list(tmp_path.iterdir())


def test_writes_create_folders_and_leave_no_temp_files(tmp_path):
    write_image(tmp_path / "deep" / "er" / "a.png", np.zeros((2, 2), np.uint8))
    write_mask(tmp_path / "deep" / "m.png", np.zeros((2, 2), np.uint8))
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["a.png", "m.png"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    write_image(path, np.full((2, 2), 7, np.uint8))

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(UnetkitError, match="No space left"):
        write_image(path, np.zeros((2, 2), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    monkeypatch.undo()
    assert read_image(path).max() == 7


def test_unwritable_folder_is_one_sentence(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(UnetkitError, match="Permission denied; choose a folder you can write to"):
        write_image(tmp_path / "a.png", np.zeros((2, 2), np.uint8))


# --- bad input -----------------------------------------------------------------------------


def truncated_png(path):
    write_image(path, random_image((40, 40, 3), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    (lambda p: p.write_text("this is a text file, not a picture"), "not a valid PNG"),
    (truncated_png, "damaged or truncated"),
    (lambda p: None, "does not exist"),
], ids=["zero-bytes", "not-an-image", "truncated", "missing"])
def test_bad_files_are_one_sentence_naming_the_file(tmp_path, make, fragment):
    path = tmp_path / "bad.png"
    make(path)
    for read in (read_image, lambda p: read_mask_raw(p)):
        with pytest.raises(UnreadableFile) as caught:
            read(path)
        message = str(caught.value)
        assert str(path) in message and fragment in message and "\n" not in message
        assert caught.value.path == path


def test_text_file_named_tif_is_refused(tmp_path):
    (tmp_path / "x.tif").write_text("not a tiff")
    with pytest.raises(UnreadableFile, match="not a valid TIFF"):
        read_image(tmp_path / "x.tif")


def test_sixteen_bit_colour_png_keeps_its_precision(tmp_path):
    """Pillow would silently read it as 8 bits; unetkit must not."""
    image = np.full((3, 3, 3), 4097, np.uint16)
    write_image(tmp_path / "a.png", image)
    assert read_image(tmp_path / "a.png").max() == 4097


def test_geo_profile_is_none_for_plain_files(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    write_image(tmp_path / "a.tif", np.zeros((2, 2), np.uint8))
    assert read_geo_profile(tmp_path / "a.png") is None
    assert read_geo_profile(tmp_path / "a.tif") is None


def test_geo_profile_round_trip(tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="the [geo] extra (rasterio) is not installed")
    from affine import Affine

    from unetkit.data.io import write_geo_mask

    profile = {"driver": "GTiff", "height": 4, "width": 5, "count": 2, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": Affine(10, 0, 500000, 0, -10, 4600000)}
    with rasterio.open(tmp_path / "s2.tif", "w", **profile) as sink:
        sink.write(np.arange(40, dtype=np.uint16).reshape(2, 4, 5))
    image = read_image(tmp_path / "s2.tif")
    assert image.shape == (4, 5, 2)
    geo = read_geo_profile(tmp_path / "s2.tif")
    assert geo["crs"].to_epsg() == 32633
    write_geo_mask(tmp_path / "pred.tif", np.ones((4, 5), np.uint8), geo)
    with rasterio.open(tmp_path / "pred.tif") as source:
        assert source.crs.to_epsg() == 32633 and source.transform == profile["transform"]
        assert source.read(1).tolist() == np.ones((4, 5)).tolist()


@pytest.mark.parametrize("labels", [1, 3, 4, 5])
def test_multilabel_tiff_with_any_width_stays_multilabel(tmp_path, labels):
    """Three or four pages must not be mistaken for colour channels (nor a width of 3 or 4)."""
    stack = RNG.integers(0, 2, (labels, 6, 3)) if labels > 1 else RNG.integers(0, 2, (2, 6, 4))
    write_mask(tmp_path / "ml.tif", stack)
    back, kind = read_mask_raw(tmp_path / "ml.tif")
    assert kind == "multilabel"
    np.testing.assert_array_equal(back, stack)


def test_rgb_tiff_mask_is_colour(tmp_path):
    write_image(tmp_path / "c.tif", random_image((5, 6, 3), np.uint8))
    assert read_mask_raw(tmp_path / "c.tif")[1] == "rgb"
    tifffile.imwrite(tmp_path / "p.tif", random_image((3, 5, 6), np.uint8), photometric="rgb",
                     planarconfig="separate")
    back, kind = read_mask_raw(tmp_path / "p.tif")
    assert kind == "rgb" and back.shape == (5, 6, 3)
