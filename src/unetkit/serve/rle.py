"""Label Studio's brush masks: the run-length code its `brushlabels` results carry.

Label Studio stores a brush mask as the RGBA pixels of the image, row by row, packed by the
bit-level run-length code of thi.ng/rle-pack (what `label_studio_converter.brush` writes and
its front end reads). The stream, most significant bit first:

    32 bits   the number of values N (= height x width x 4)
     5 bits   word size - 1 (8: one byte per value)
    4 x 4 bits  the four run-length field sizes - 1 (Label Studio uses 3, 4, 8 and 16)
    then chunks until N values are out:
      1 bit   1: a run of one repeated value, 0: that many values written out one by one
      2 bits  which of the four field sizes holds the length
      k bits  the length - 1
      then one value (a run), or `length` values (literal), each `word size` bits

and zero bits up to a whole byte. A mask pixel is 255 in all four channels where the class
is and 0 elsewhere; Label Studio draws the alpha channel. Runs longer than 2**16 are split.
The encoder writes runs only (every pixel is repeated 4 times, so no run is shorter than 4);
the decoder reads both kinds, as Label Studio's own export may contain literals.
"""

from __future__ import annotations

import numpy as np

from unetkit.errors import UnetkitError

RLE_SIZES = (3, 4, 8, 16)
WORD_SIZE = 8
CHANNELS = 4  # RGBA


def encode_mask(mask: np.ndarray) -> list[int]:
    """(H, W) bool or 0/1 mask -> Label Studio's `rle` list of bytes (the `value.rle` field)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UnetkitError(f"a brush mask is (H, W), got shape {mask.shape}")
    values = np.where(mask.astype(bool).ravel(), 255, 0).astype(np.uint8)
    return encode_values(np.repeat(values, CHANNELS))


def decode_mask(rle: list[int] | bytes | np.ndarray, height: int, width: int) -> np.ndarray:
    """Label Studio's `rle` of an (H, W) image -> (H, W) bool: where the alpha channel is set."""
    values = decode_values(rle)
    if values.size != height * width * CHANNELS:
        raise UnetkitError(f"the brush mask holds {values.size} values, but {height}x{width} RGBA needs "
                           f"{height * width * CHANNELS}; check original_width and original_height")
    return values.reshape(height, width, CHANNELS)[:, :, 3] > 0


def encode_values(values: np.ndarray) -> list[int]:
    """A 1-D array of bytes -> the rle-pack stream (runs only), as a list of ints 0..255."""
    values = np.asarray(values).ravel()
    if values.size and (values.min() < 0 or values.max() > 255):
        raise UnetkitError("brush values are bytes (0..255)")
    fields = [(values.size, 32), (WORD_SIZE - 1, 5)] + [(size - 1, 4) for size in RLE_SIZES]
    head_codes = np.array([code for code, _ in fields], np.uint64)
    head_widths = np.array([width for _, width in fields], np.int64)
    if values.size >= 1 << 32:
        raise UnetkitError(f"a brush mask holds at most 2**32 - 1 values, got {values.size}")
    if values.size:
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        run_lengths = np.diff(np.r_[starts, values.size])
        longest = 1 << RLE_SIZES[-1]  # longer runs are written as pieces of 2**16 and the rest
        pieces = -(-run_lengths // longest)
        piece = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        lengths = np.minimum(longest, np.repeat(run_lengths, pieces) - piece * longest)
        run_values = np.repeat(values[starts], pieces).astype(np.uint64)
        index = np.searchsorted(np.array([1 << s for s in RLE_SIZES]), lengths)  # the smallest field that fits
        size = np.array(RLE_SIZES, np.int64)[index]
        codes = ((np.uint64(4) | index.astype(np.uint64)) << size.astype(np.uint64)) | (lengths - 1).astype(np.uint64)
        codes = (codes << np.uint64(WORD_SIZE)) | run_values  # 1, field index, length - 1, value
        head_codes = np.r_[head_codes, codes]
        head_widths = np.r_[head_widths, 1 + 2 + size + WORD_SIZE]
    return _pack(head_codes, head_widths)


def decode_values(rle: list[int] | bytes | np.ndarray) -> np.ndarray:
    """The rle-pack stream (runs and literals, any word size up to 8 bits) -> the 1-D values."""
    data = np.asarray(bytearray(rle) if isinstance(rle, (bytes, bytearray)) else rle)
    if data.ndim != 1 or (data.size and (data.min() < 0 or data.max() > 255)):
        raise UnetkitError("a brush `rle` is a list of bytes (0..255)")
    bits = np.unpackbits(data.astype(np.uint8))
    reader = _Bits(bits)
    count = reader.read(32)
    word = reader.read(5) + 1
    if word > 8:
        raise UnetkitError(f"the brush mask uses {word}-bit values; brush masks hold bytes (8 bits)")
    sizes = [reader.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, np.uint8)
    i = 0
    while i < count:
        repeated = reader.read(1)
        j = min(count, i + 1 + reader.read(sizes[reader.read(2)]))
        if repeated:
            out[i:j] = reader.read(word)
        else:
            out[i:j] = reader.read_many(word, j - i)
        i = j
    return out


class _Bits:
    """Reads unsigned fields, most significant bit first, from an array of 0/1."""

    def __init__(self, bits: np.ndarray) -> None:
        self.bits = bits
        self.at = 0

    def read(self, width: int) -> int:
        end = self.at + width
        if end > self.bits.size:
            raise UnetkitError("the brush `rle` is cut short; export the annotation again")
        value = 0
        for bit in self.bits[self.at : end]:
            value = (value << 1) | int(bit)
        self.at = end
        return value

    def read_many(self, width: int, count: int) -> np.ndarray:
        end = self.at + width * count
        if end > self.bits.size:
            raise UnetkitError("the brush `rle` is cut short; export the annotation again")
        chunk = self.bits[self.at : end].reshape(count, width).astype(np.int64)
        self.at = end
        return (chunk << np.arange(width - 1, -1, -1)).sum(axis=1)


def _pack(codes: np.ndarray, widths: np.ndarray) -> list[int]:
    """Fields (value, bit width), most significant bit first, padded with zeros to whole bytes."""
    total = int(widths.sum())
    field = np.repeat(np.arange(widths.size), widths)
    position = np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
    shift = (widths[field] - 1 - position).astype(np.uint64)
    bits = ((codes[field] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tolist()


__all__ = ["RLE_SIZES", "decode_mask", "decode_values", "encode_mask", "encode_values"]
