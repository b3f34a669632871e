"""Label Studio's brush RLE: our encoder writes what label_studio_converter.brush writes, and
our decoder reads both that and the literal runs Label Studio's own export may hold."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.errors import UnetkitError
from unetkit.serve.rle import decode_mask, decode_values, encode_mask, encode_values


def converter_encode(values: np.ndarray) -> list[int]:
    """The label-studio-converter algorithm, bit string by bit string (the reference)."""
    bits = f"{len(values):032b}" + f"{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    change = np.append(np.flatnonzero(values[1:] != values[:-1]), len(values) - 1)
    lengths = np.diff(np.append(-1, change))
    for length, value in zip(lengths, values[change]):
        if length == 1:
            bits += "0" + "00" + "000" + f"{value:08b}"
        elif length <= 8:
            bits += "1" + "00" + f"{length - 1:03b}" + f"{value:08b}"
        elif length <= 16:
            bits += "1" + "01" + f"{length - 1:04b}" + f"{value:08b}"
        elif length <= 256:
            bits += "1" + "10" + f"{length - 1:08b}" + f"{value:08b}"
        else:
            rest = length
            while rest > 2**16:
                bits += "1" + "11" + f"{2**16 - 1:016b}" + f"{value:08b}"
                rest -= 2**16
            bits += "1" + "11" + f"{rest - 1:016b}" + f"{value:08b}"
    bits += "0" * (8 - len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (37, 41), (300, 300)])
@pytest.mark.parametrize("fill", [0.0, 0.02, 0.5, 1.0])
def test_decode_of_encode_is_the_mask(shape, fill):
    mask = np.random.default_rng(shape[0]).random(shape) < fill
    rle = encode_mask(mask)
    assert all(isinstance(b, int) and 0 <= b <= 255 for b in rle)
    assert np.array_equal(decode_mask(rle, *shape), mask)


@pytest.mark.parametrize("fill", [0.0, 0.3, 1.0])
def test_the_code_is_label_studio_converters(fill):
    """Byte for byte (the converter pads a whole zero byte when the bits end on a byte)."""
    mask = np.random.default_rng(1).random((120, 90)) < fill
    mask[:60] = fill > 0.5  # runs over 2**16 values: split as the converter splits them
    values = np.repeat(np.where(mask.ravel(), 255, 0), 4)
    ours, reference = encode_mask(mask), converter_encode(values)
    assert reference[: len(ours)] == ours and not any(reference[len(ours):])


def test_literal_runs_and_other_sizes_are_read():
    values = np.random.default_rng(2).integers(0, 256, 500)
    assert np.array_equal(decode_values(converter_encode(values)), values)
    assert np.array_equal(decode_values(encode_values(values)), values)
    assert np.array_equal(decode_values(bytes(encode_values(values))), values)


def test_a_wrong_size_or_a_cut_stream_is_one_sentence():
    rle = encode_mask(np.ones((4, 4), bool))
    with pytest.raises(UnetkitError, match="original_width"):
        decode_mask(rle, 5, 4)
    with pytest.raises(UnetkitError, match="cut short"):
        decode_values(rle[:5])
