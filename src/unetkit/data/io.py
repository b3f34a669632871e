"""Read and write images and masks: the only place that knows file formats.

Images come back as (H, W, C) arrays in their native dtype (C >= 1); masks as (H, W)
class ids or (L, H, W) multi-label stacks. The HWC <-> CHW conversion of the package
happens here too (`to_chw`, `to_hwc`), so the rest of the code never guesses an axis order.
Every writer is atomic (`unetkit.atomic`): an interrupted run never leaves half a file behind. Problems a user can fix raise `UnetkitError` with one
sentence naming the file.

Every reader checks the image's size in the file header before decoding a pixel
(`set_max_pixels`, the `--max-pixels` flag): a 400 KB file that claims 30000x30000 pixels
is refused in one sentence instead of taking gigabytes. `read_image_nodata` also says where
an image holds no data (NaN, infinity, the GeoTIFF nodata value), which rasters often do.

The same readers and encoders work in memory (`read_image_bytes`, `encode_mask_png`, ...)
for the server, which decodes uploads without writing them to disk; `write_mask` writes the
very bytes `encode_mask_png` returns.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import EllipsisType

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from unetkit.atomic import atomic_path
from unetkit.errors import UnetkitError

PNG = frozenset({".png"})
JPEG = frozenset({".jpg", ".jpeg"})
BMP = frozenset({".bmp"})
TIFF = frozenset({".tif", ".tiff"})
# Read only (Pillow decodes them; the writers keep to the four above): the formats public data
# sets ship in, such as retina sets' GIF masks (DRIVE) and PPM images (STARE).
GIF = frozenset({".gif"})
PNM = frozenset({".ppm", ".pgm", ".pbm", ".pnm"})
WEBP = frozenset({".webp"})
IMAGE_EXTENSIONS = PNG | JPEG | BMP | TIFF | GIF | PNM | WEBP
LOSSY = JPEG | WEBP  # as masks: compression may have changed labels (WebP can be either)
TIFF_MAGIC = frozenset({b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"})  # classic and BigTIFF, for bytes
WRITABLE_DTYPES = (np.uint8, np.uint16, np.float32)

Palette = Sequence[tuple[int, int, int]]

DEFAULT_MAX_PIXELS = 250_000_000  # admits a 10980x10980 Sentinel-2 tile and a 10000x10000 scan
GDAL_NODATA = 42113  # TIFF tag: the no-data value of a GeoTIFF, as text ("0", "-9999", "nan")

PixelLimit = int | None | EllipsisType  # per call: a limit, None for none, ... for `max_pixels()`

_max_pixels: int | None = DEFAULT_MAX_PIXELS
# Our header check decides (with a message that names --max-pixels); Pillow's own would stop
# some files at open with DecompressionBombError and only warn for others.
Image.MAX_IMAGE_PIXELS = None


class UnreadableFile(UnetkitError):
    """A file that cannot be decoded; `reason` is the sentence without the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read {path}: {reason}")


# --- the pixel limit ---------------------------------------------------------------------


def set_max_pixels(n: int | None) -> None:
    """Set the largest image (height x width, bands not counted) any reader decodes; None: no limit."""
    global _max_pixels
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise UnetkitError(f"--max-pixels {n!r} must be a whole number of pixels >= 1 (or none for no limit)")
    _max_pixels = None if n is None else int(n)
    Image.MAX_IMAGE_PIXELS = None  # keep Pillow out of it, even if something else set it since


def max_pixels() -> int | None:
    """The limit readers apply when a call gives none (default DEFAULT_MAX_PIXELS; None: no limit)."""
    return _max_pixels


def _limit(pixel_limit: PixelLimit) -> int | None:
    return _max_pixels if pixel_limit is ... else pixel_limit


def _check_pixels(path: Path, height: int, width: int, limit: int | None) -> None:
    """Refuse, before decoding, an image whose header says it is larger than `limit` pixels."""
    pixels = int(height) * int(width)
    if limit is not None and pixels > limit:
        raise UnreadableFile(
            path, f"its header says {height}x{width} = {pixels:,} pixels, over the limit of {limit:,} pixels; "
            f"pass --max-pixels {pixels} to read it anyway, or cut it into tiles"
        )


# --- axis order ----------------------------------------------------------------------------


def to_chw(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W), contiguous: the package's tensor layout."""
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(np.moveaxis(image, -1, 0))


def to_hwc(array: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, C), contiguous: the on-disk layout."""
    return np.ascontiguousarray(np.moveaxis(array, 0, -1))


# --- writing -------------------------------------------------------------------------------


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W) or (H, W, C) image; the extension picks the format.

    PNG holds 1, 3 or 4 bands of uint8 or uint16; JPEG 1 or 3 bands of uint8 (lossy);
    BMP 1 or 3 bands of uint8; TIFF any band count of uint8, uint16 or float32 (bands
    interleaved, one page). Any other combination is refused rather than silently changed.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise UnetkitError(f"cannot write {path}: an image is (H, W) or (H, W, C), got shape {image.shape}")
    if image.dtype not in WRITABLE_DTYPES:
        raise UnetkitError(f"cannot write {path}: images are uint8, uint16 or float32, got {image.dtype}; convert first")
    bands = 1 if image.ndim == 2 else image.shape[2]
    ext = path.suffix.lower()
    if ext in TIFF:
        _write_tiff(path, image)
        return
    allowed = {".png": ({1, 3, 4}, {np.uint8, np.uint16}), ".jpg": ({1, 3}, {np.uint8}),
               ".jpeg": ({1, 3}, {np.uint8}), ".bmp": ({1, 3}, {np.uint8})}
    if ext not in allowed:
        raise UnetkitError(f"cannot write {path}: unknown image extension; use .png, .jpg, .bmp or .tif")
    band_counts, dtypes = allowed[ext]
    if bands not in band_counts or image.dtype.type not in dtypes:
        raise UnetkitError(
            f"cannot write {path}: {ext} cannot hold {bands} band(s) of {image.dtype}; use .tif"
        )
    image = image[:, :, 0] if image.ndim == 3 and bands == 1 else image
    if ext == ".png" and image.dtype == np.uint16 and image.ndim == 3:
        _write_png16_color(path, image)
        return
    pil_format = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[ext]
    options = {"quality": 95} if pil_format == "JPEG" else {}
    with atomic_path(path) as temp:
        Image.fromarray(image).save(temp, format=pil_format, **options)


def write_mask(path: str | Path, mask: np.ndarray, palette: Palette | None = None) -> None:
    """Write class ids (H, W) or a multi-label stack (L, H, W) losslessly.

    (H, W) ids up to 255 go to PNG mode "P" with `palette` (index = class id; mode "L"
    without one); ids up to 65535 to a 16-bit PNG; a .tif path takes any integer ids.
    (L, H, W) 0/1 labels go to a multi-page TIFF, one page per label.
    """
    path = Path(path)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise UnetkitError(f"cannot write {path}: a mask holds integer class ids, got {mask.dtype}")
    ext = path.suffix.lower()
    if mask.ndim == 3:
        if ext not in TIFF:
            raise UnetkitError(f"cannot write {path}: a multi-label mask is a multi-page TIFF; use .tif")
        _write_pages(path, _smallest_uint(mask, path))
        return
    if mask.ndim != 2 or mask.size == 0:
        raise UnetkitError(f"cannot write {path}: a mask is (H, W) or (L, H, W), got shape {mask.shape}")
    if ext in TIFF:
        with atomic_path(path) as temp:
            tifffile.imwrite(temp, _smallest_uint(mask, path), compression="zlib")
        return
    if ext != ".png":
        raise UnetkitError(f"cannot write {path}: masks must be lossless; use .png or .tif")
    data = _mask_png_bytes(mask, palette, path)
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def encode_mask_png(mask: np.ndarray, palette: Palette | None = None, name: str = "the mask") -> bytes:
    """The PNG bytes `write_mask` writes for (H, W) class ids: mode "P" with `palette` for ids
    up to 255 (mode "L" without one), 16-bit grey for ids up to 65535. `name` is for messages."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise UnetkitError(f"cannot write {name}: a mask holds integer class ids, got {mask.dtype}")
    if mask.ndim != 2 or mask.size == 0:
        raise UnetkitError(f"cannot write {name}: a PNG mask is (H, W), got shape {mask.shape}; use .tif")
    return _mask_png_bytes(mask, palette, name)


def _mask_png_bytes(mask: np.ndarray, palette: Palette | None, path: str | Path) -> bytes:
    mask = _smallest_uint(mask, path)
    if mask.dtype == np.uint8:
        picture = Image.fromarray(mask) if palette is None else _with_palette(mask, palette)
    elif mask.dtype == np.uint16:
        picture = Image.fromarray(mask)
    else:
        raise UnetkitError(f"cannot write {path}: ids above 65535 do not fit a PNG; use .tif")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_mask_tiff(mask: np.ndarray, name: str = "the mask") -> bytes:
    """The TIFF bytes `write_mask` writes to a .tif path: (H, W) ids of any size, zlib; an
    (L, H, W) multi-label stack as one page per label."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise UnetkitError(f"cannot write {name}: a mask holds integer class ids, got {mask.dtype}")
    if mask.ndim not in (2, 3) or mask.size == 0:
        raise UnetkitError(f"cannot write {name}: a mask is (H, W) or (L, H, W), got shape {mask.shape}")
    buffer = io.BytesIO()
    if mask.ndim == 3:
        tifffile.imwrite(buffer, _smallest_uint(mask, name), photometric="minisblack", compression="zlib")
    else:
        tifffile.imwrite(buffer, _smallest_uint(mask, name), compression="zlib")
    return buffer.getvalue()


def _with_palette(mask: np.ndarray, palette: Palette) -> Image.Image:
    picture = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    flat = [int(v) for colour in palette[:256] for v in colour]
    picture.putpalette(flat + [0] * (768 - len(flat)))
    return picture


def _smallest_uint(mask: np.ndarray, path: str | Path) -> np.ndarray:
    if mask.size and int(mask.min()) < 0:
        raise UnetkitError(f"cannot write {path}: class ids must be >= 0, found {int(mask.min())}")
    top = int(mask.max()) if mask.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return mask.astype(dtype, copy=False)
    raise UnetkitError(f"cannot write {path}: class id {top} is too large")


def _write_tiff(path: Path, image: np.ndarray) -> None:
    bands = 1 if image.ndim == 2 else image.shape[2]
    image = image.reshape(image.shape[:2]) if bands == 1 else image
    if bands == 3 and image.dtype != np.float32:
        options = {"photometric": "rgb"}
    elif image.ndim == 3:
        options = {"photometric": "minisblack", "planarconfig": "contig"}
    else:
        options = {"photometric": "minisblack"}
    with atomic_path(path) as temp:
        tifffile.imwrite(temp, image, compression="zlib", **options)


def _write_pages(path: Path, stack: np.ndarray) -> None:
    with atomic_path(path) as temp:
        tifffile.imwrite(temp, stack, photometric="minisblack", compression="zlib")


def _write_png16_color(path: Path, image: np.ndarray) -> None:
    """Pillow cannot write 16-bit RGB(A); OpenCV can (it stores BGR order, hence the swap)."""
    import cv2

    order = [2, 1, 0] if image.shape[2] == 3 else [2, 1, 0, 3]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[:, :, order]))
    if not ok:
        raise UnetkitError(f"cannot write {path}: the PNG encoder failed; use .tif")
    with atomic_path(path) as temp:
        temp.write_bytes(encoded.tobytes())


# --- reading -------------------------------------------------------------------------------


def read_image(path: str | Path, *, include_alpha: bool = False, pixel_limit: PixelLimit = ...) -> np.ndarray:
    """Read any supported image as (H, W, C), native dtype; RGBA's alpha dropped unless asked.

    Grayscale stays one band. Multi-band TIFF (bands interleaved, planar, or one page per
    band) comes back with the bands last. Alpha is only dropped where the file says it is
    alpha (PNG/BMP RGBA, TIFF extra samples): a 4-band multispectral TIFF keeps 4 bands.
    An image larger than `pixel_limit` (default: `max_pixels()`) is refused before decoding.
    """
    return _read_image(Path(path), include_alpha, _limit(pixel_limit))[0]


def read_image_nodata(
    path: str | Path, *, include_alpha: bool = False, pixel_limit: PixelLimit = ...
) -> tuple[np.ndarray, np.ndarray | None]:
    """`read_image`, and an (H, W) bool mask of the pixels without data (None when there are none).

    A pixel has no data when any of its bands is NaN or infinite (float images) or equals the
    GeoTIFF nodata value (TIFF tag GDAL_NODATA, integer and float images): rasters cut to an
    orbit or a coastline have such pixels, and they must not poison statistics or training.
    """
    image, nodata_value = _read_image(Path(path), include_alpha, _limit(pixel_limit))
    return image, nodata_mask(image, nodata_value)


def nodata_mask(image: np.ndarray, nodata_value: float | None = None) -> np.ndarray | None:
    """(H, W) True where any band of an (H, W, C) image is NaN/inf or `nodata_value`; None if nowhere."""
    floating = image.dtype.kind == "f"
    value = None
    if nodata_value is not None and not np.isnan(nodata_value):
        if floating:
            value = image.dtype.type(nodata_value)
        elif float(nodata_value).is_integer():
            info = np.iinfo(image.dtype)
            value = image.dtype.type(nodata_value) if info.min <= nodata_value <= info.max else None
    if not floating and value is None:
        return None
    mask = np.zeros(image.shape[:2], bool)
    for band in range(image.shape[2]):  # band by band: no (H, W, C) temporary
        plane = image[:, :, band]
        if floating:
            mask |= ~np.isfinite(plane)
        if value is not None:
            mask |= plane == value
    return mask if mask.any() else None


def read_image_bytes(
    data: bytes, name: str, *, include_alpha: bool = False, pixel_limit: PixelLimit = ...
) -> tuple[np.ndarray, np.ndarray | None]:
    """`read_image_nodata` of a file's bytes held in memory (an upload); `name` names it in
    messages. The format comes from the bytes (TIFF by its magic number, the rest as Pillow
    reads them), so a misnamed upload still reads; the rules, errors and the pixel limit
    (checked from the header, before decoding) are those of the file readers."""
    path = Path(name or "the upload")
    if len(data) == 0:
        raise UnreadableFile(path, "the file is empty (0 bytes); re-export or remove it")
    tiff = bytes(data[:4]) in TIFF_MAGIC
    image, nodata_value = _decode_image(path, io.BytesIO(data), tiff, include_alpha, _limit(pixel_limit))
    return image, nodata_mask(image, nodata_value)


def _read_image(path: Path, include_alpha: bool, limit: int | None) -> tuple[np.ndarray, float | None]:
    """(image (H, W, C), the GeoTIFF nodata value or None)."""
    _require_file(path)
    return _decode_image(path, path, path.suffix.lower() in TIFF, include_alpha, limit)


def _decode_image(path: Path, source: Path | io.BytesIO, tiff: bool, include_alpha: bool,
                  limit: int | None) -> tuple[np.ndarray, float | None]:
    """Decode `source` (the file, or its bytes); `path` names it in messages."""
    nodata_value = None
    if tiff:
        image, has_alpha, nodata_value = _guard(path, lambda: _read_tiff_image(path, limit, source))
    else:
        image, has_alpha = _guard(path, lambda: _read_pillow_image(path, limit, source))
    if image.ndim == 2:
        image = image[:, :, None]
    if has_alpha and not include_alpha:
        image = image[:, :, :-1]
    if image.dtype == bool:
        image = image.astype(np.uint8)
    elif image.dtype in (np.float16, np.float64):
        image = image.astype(np.float32)
    elif not (np.issubdtype(image.dtype, np.integer) or image.dtype == np.float32):
        raise UnreadableFile(path, f"pixel type {image.dtype} is not supported; save it as uint8, uint16 or float32")
    if image.ndim != 3 or min(image.shape) < 1:
        raise UnreadableFile(path, f"expected an (H, W[, C]) image, got shape {image.shape}")
    return np.ascontiguousarray(image), nodata_value


def read_mask_raw(
    path: str | Path, labels: Sequence[str] | None = None, *, pixel_limit: PixelLimit = ...
) -> tuple[np.ndarray, str]:
    """Read a mask file or per-label folder as stored, and say what kind it is.

    Returns (array, kind): kind "ids" for (H, W) single-channel values (palette PNGs by
    index), "rgb" for (H, W, 3) colour-coded masks, "multilabel" for (L, H, W) stacks from
    a multi-page TIFF or a folder of one binary image per label (`labels` gives the order
    by file stem; a label without a file is all zeros). A mask larger than `pixel_limit`
    (default: `max_pixels()`) is refused before decoding.
    """
    path = Path(path)
    limit = _limit(pixel_limit)
    if path.is_dir():
        return _read_label_folder(path, labels, limit), "multilabel"
    _require_file(path)
    if path.suffix.lower() in TIFF:
        return _guard(path, lambda: _read_tiff_mask(path, limit))
    array = _guard(path, lambda: _read_pillow_mask(path, limit))
    return array, ("ids" if array.ndim == 2 else "rgb")


def label_files(folder: Path) -> dict[str, Path]:
    """The per-label files of a multi-label mask folder, by label name (file stem)."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            and not p.name.startswith(".")}


def _read_label_folder(folder: Path, labels: Sequence[str] | None, limit: int | None) -> np.ndarray:
    files = label_files(folder)
    if not files:
        raise UnreadableFile(folder, "a multi-label mask folder needs one image per label; it has none")
    names = list(labels) if labels is not None else sorted(files)
    layers: list[np.ndarray | None] = []
    for name in names:
        if name not in files:
            layers.append(None)
            continue
        array, kind = read_mask_raw(files[name], pixel_limit=limit)
        if kind == "rgb" and _is_gray(array):
            array = array[:, :, 0]
        elif kind != "ids":
            raise UnreadableFile(files[name], "a label image must be single-channel 0/1 or 0/255")
        layers.append(array)
    shape = next((a.shape for a in layers if a is not None), None)
    if shape is None:
        raise UnreadableFile(folder, f"none of the labels {names} has a file in it")
    for name, layer in zip(names, layers):
        if layer is not None and layer.shape != shape:
            raise UnreadableFile(files[name], f"its size {layer.shape} differs from the other labels' {shape}")
    dtype = np.result_type(*[a.dtype for a in layers if a is not None])
    return np.stack([np.zeros(shape, dtype) if a is None else a.astype(dtype) for a in layers])


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]))


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) colours -> (H, W) int64 keys r<<16 | g<<8 | b, for colour-map look-ups."""
    rgb = rgb[..., :3].astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_geo_profile(path: str | Path) -> dict | None:
    """The GeoTIFF georeferencing (rasterio profile) of `path`, or None.

    None when rasterio (the `[geo]` extra) is not installed, the file is not a TIFF, or it
    has no coordinate reference system. Kept so predictions can be written back in place.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF:
        return None
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as source:
                if source.crs is None and source.transform.is_identity:
                    return None
                return dict(source.profile)
    except RasterioIOError as error:
        raise UnreadableFile(path, f"{error}; check the file is a valid GeoTIFF") from None


def read_geo_profile_bytes(data: bytes, name: str = "the upload") -> dict | None:
    """`read_geo_profile` of a file's bytes in memory (GDAL's /vsimem/, nothing on disk):
    None when rasterio is missing, the bytes are not a TIFF, or it is not georeferenced."""
    if bytes(data[:4]) not in TIFF_MAGIC:
        return None
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
        from rasterio.io import MemoryFile
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(data) as memory, memory.open() as source:
                if source.crs is None and source.transform.is_identity:
                    return None
                return dict(source.profile)
    except (RasterioIOError, rasterio.errors.RasterioError) as error:
        raise UnreadableFile(name, f"{error}; check the file is a valid GeoTIFF") from None


def encode_geo_mask(mask: np.ndarray, profile: dict, nodata: int | None = None) -> bytes:
    """The GeoTIFF `write_geo_mask` writes, as bytes made in memory (GDAL's /vsimem/)."""
    try:
        from rasterio.io import MemoryFile
    except ImportError:
        raise UnetkitError(
            "cannot write the mask georeferenced: install the geo extra (pip install 'unetkit[geo]')"
        ) from None
    stack = mask[None] if mask.ndim == 2 else mask
    with MemoryFile() as memory:
        with memory.open(**_geo_mask_profile(profile, stack, nodata)) as sink:
            sink.write(stack)
        return bytes(memory.read())


def _geo_mask_profile(profile: dict, stack: np.ndarray, nodata: int | None) -> dict:
    profile = {**profile, "count": stack.shape[0], "dtype": stack.dtype.name, "driver": "GTiff",
               "height": stack.shape[1], "width": stack.shape[2]}
    for key in ("photometric", "nodata", "blockxsize", "blockysize", "tiled", "interleave"):
        profile.pop(key, None)  # describe the source's pixels, not the mask's
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def write_geo_mask(path: str | Path, mask: np.ndarray, profile: dict, nodata: int | None = None) -> None:
    """Write a (H, W) mask or (C, H, W) stack as a GeoTIFF with the source's georeferencing;
    `nodata` is the mask value that marks pixels without data (the source's own nodata value
    describes its pixels, not the mask's, and is dropped)."""
    try:
        import rasterio
    except ImportError:
        raise UnetkitError(
            f"cannot write {path} georeferenced: install the geo extra (pip install 'unetkit[geo]')"
        ) from None
    stack = mask[None] if mask.ndim == 2 else mask
    profile = _geo_mask_profile(profile, stack, nodata)
    with atomic_path(Path(path)) as temp, rasterio.open(temp, "w", **profile) as sink:
        sink.write(stack)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image or mask from its header only, without decoding the pixels."""
    path = Path(path)
    _require_file(path)
    if path.suffix.lower() in TIFF:
        def size() -> tuple[int, int]:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                return int(page.imagelength), int(page.imagewidth)
        return _guard(path, size)

    def pil_size() -> tuple[int, int]:
        with Image.open(path) as picture:
            return picture.height, picture.width
    return _guard(path, pil_size)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise UnreadableFile(path, "it does not exist; check the path")
    if not path.is_file():
        raise UnreadableFile(path, "it is not a file; point to an image file")
    if path.stat().st_size == 0:
        raise UnreadableFile(path, "the file is empty (0 bytes); re-export or remove it")


def _guard(path: Path, read: Callable):
    """Turn a library's failure to decode into one sentence naming the file."""
    try:
        return read()
    except UnetkitError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableFile(  # only when something set Pillow's own limit again; ours runs first
            path, f"it is too large to decode safely ({_short(error)}); pass --max-pixels N to raise the limit"
        ) from None
    except UnidentifiedImageError:
        kind = path.suffix.lower().lstrip(".").upper() or "image"
        raise UnreadableFile(
            path, f"not a valid {kind} file (another format, or cut short); re-export or remove it"
        ) from None
    except tifffile.TiffFileError as error:
        raise UnreadableFile(path, f"not a valid TIFF file ({_short(error)}); re-export or remove it") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, MemoryError) as error:
        raise UnreadableFile(
            path, f"the file is damaged or truncated ({_short(error)}); re-export or remove it"
        ) from None


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:120]


def _read_pillow_image(path: Path, limit: int | None,
                       source: Path | io.BytesIO | None = None) -> tuple[np.ndarray, bool]:
    source = path if source is None else source
    with Image.open(source) as picture:
        _check_pixels(path, picture.height, picture.width, limit)  # .size is the header's; nothing decoded yet
        picture.load()
        mode = picture.mode
        if picture.format == "PNG" and mode in ("RGB", "RGBA") and _png_bit_depth(source) == 16:
            return _read_png16_color(source), mode == "RGBA"
        if mode == "P":
            has_alpha = "transparency" in picture.info
            picture = picture.convert("RGBA" if has_alpha else "RGB")
            mode = picture.mode
        elif mode == "PA":
            picture, mode = picture.convert("RGBA"), "RGBA"
        elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            picture = picture.convert("L" if mode == "1" else "RGB")
        array = np.array(picture)
        if mode == "I" and picture.format == "PNG":
            array = array.astype(np.uint16)  # a 16-bit PNG Pillow opened as 32-bit
    return array, mode in ("RGBA", "LA", "La", "RGBa")


def _png_bit_depth(path: Path | io.BytesIO) -> int:
    """The IHDR bit depth (byte 24); Pillow reads 16-bit colour PNGs as 8-bit, losing data."""
    if isinstance(path, io.BytesIO):
        header = path.getbuffer()[:25].tobytes()
    else:
        with open(path, "rb") as handle:
            header = handle.read(25)
    return header[24] if len(header) == 25 and header[:8] == b"\x89PNG\r\n\x1a\n" else 8


def _read_png16_color(path: Path | io.BytesIO) -> np.ndarray:
    import cv2

    raw = np.frombuffer(path.getbuffer(), np.uint8) if isinstance(path, io.BytesIO) else np.fromfile(path, np.uint8)
    array = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise OSError("OpenCV could not decode it")
    order = [2, 1, 0] if array.shape[2] == 3 else [2, 1, 0, 3]
    return array[:, :, order]


def _read_tiff_image(path: Path, limit: int | None,
                     source: Path | io.BytesIO | None = None) -> tuple[np.ndarray, bool, float | None]:
    with tifffile.TiffFile(path if source is None else source) as tif:
        _check_tiff_pixels(path, tif, limit)
        array, axes = _read_series(tif)
        page = tif.pages.first
        extras = tuple(np.atleast_1d(page.extrasamples)) if page.extrasamples is not None else ()
        photometric = page.photometric
        nodata_value = _gdal_nodata(page)
    array, axes = _squeeze_axes(array, axes)
    if array.ndim == 3 and not axes.endswith("S"):
        array = np.moveaxis(array, 0, -1)  # planar, or one page per band: bands first on disk
    has_alpha = (
        array.ndim == 3
        and photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.MINISBLACK)
        and bool(extras)
        and extras[-1] in (1, 2)  # associated or unassociated alpha
    )
    return array, has_alpha, nodata_value


def _check_tiff_pixels(path: Path, tif: tifffile.TiffFile, limit: int | None) -> None:
    """The largest height x width among the pages `_read_series` would decode, from the IFDs only."""
    if limit is None:
        return
    height = width = 0
    for series in tif.series:
        shape, axes = series.shape, series.axes
        if "Y" in axes and "X" in axes:
            h, w = shape[axes.index("Y")], shape[axes.index("X")]
        else:
            h, w = series.keyframe.imagelength, series.keyframe.imagewidth
        if h * w > height * width:
            height, width = h, w
    _check_pixels(path, height, width, limit)


def _gdal_nodata(page: tifffile.TiffPage) -> float | None:
    """The GDAL_NODATA tag as a number ("nan" included), or None when absent or not a number."""
    tag = page.tags.get(GDAL_NODATA)
    if tag is None:
        return None
    text = tag.value.decode("ascii", "replace") if isinstance(tag.value, bytes) else str(tag.value)
    try:
        return float(text.strip().strip("\x00"))
    except ValueError:
        return None


def _read_series(tif: tifffile.TiffFile) -> tuple[np.ndarray, str]:
    """The first series; pages written one by one (one series each, same 2-D shape) stack."""
    series = tif.series
    first = series[0]
    if len(series) > 1 and all(s.ndim == 2 and s.shape == first.shape for s in series):
        return np.stack([s.asarray() for s in series]), "I" + first.axes
    return first.asarray(), first.axes


def _squeeze_axes(array: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Drop length-1 axes other than Y and X, so (1, H, W) pages read as (H, W)."""
    keep = [i for i, (axis, n) in enumerate(zip(axes, array.shape)) if n > 1 or axis in "YX"]
    if len(keep) != array.ndim:
        array = array.reshape([array.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
    if array.ndim > 3:
        raise ValueError(f"a {array.ndim}-D TIFF ({axes}) is not a 2-D image")
    return array, axes


def _read_tiff_mask(path: Path, limit: int | None) -> tuple[np.ndarray, str]:
    """One page -> (H, W) ids; an RGB(A) page -> (H, W, 3|4) colours; anything else -> (L, H, W) labels."""
    with tifffile.TiffFile(path) as tif:
        _check_tiff_pixels(path, tif, limit)
        array, axes = _squeeze_axes(*_read_series(tif))
        rgb = tif.pages.first.photometric == tifffile.PHOTOMETRIC.RGB
    if array.ndim == 2:
        return array, "ids"
    if axes.endswith("S"):  # samples interleaved: (H, W, S)
        return (array, "rgb") if rgb else (np.moveaxis(array, -1, 0), "multilabel")
    if axes.startswith("S") and rgb:  # planar colour: (S, H, W)
        return np.moveaxis(array, 0, -1), "rgb"
    return array, "multilabel"  # one page per label


def _read_pillow_mask(path: Path, limit: int | None) -> np.ndarray:
    with Image.open(path) as picture:
        _check_pixels(path, picture.height, picture.width, limit)
        picture.load()
        mode = picture.mode
        if picture.format == "PNG" and mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
            return _read_png16_color(path)[:, :, :3]
        if mode in ("P", "L", "I;16", "I;16B", "I", "1"):
            array = np.array(picture if mode != "1" else picture.convert("L"))
            if mode == "I" and picture.format == "PNG":
                array = array.astype(np.uint16)  # a 16-bit PNG Pillow opened as 32-bit
            return array
        if mode in ("LA", "PA"):
            return np.array(picture.getchannel(0))
        return np.array(picture.convert("RGB"))


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "LOSSY",
    "TIFF",
    "UnreadableFile",
    "atomic_path",
    "encode_geo_mask",
    "encode_mask_png",
    "encode_mask_tiff",
    "image_size",
    "max_pixels",
    "nodata_mask",
    "pack_rgb",
    "read_geo_profile",
    "read_geo_profile_bytes",
    "read_image",
    "read_image_bytes",
    "read_image_nodata",
    "read_mask_raw",
    "set_max_pixels",
    "to_chw",
    "to_hwc",
    "write_geo_mask",
    "write_image",
    "write_mask",
]
