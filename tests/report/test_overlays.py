"""Display helpers: stretch any image, colour masks, mark errors."""

import numpy as np

from unetkit.report.overlays import FALSE_NEGATIVE, FALSE_POSITIVE, blend, colorize, display_image, error_map


def test_display_image_stretches_16_bit_and_many_bands():
    image = np.random.default_rng(0).integers(1000, 3000, (20, 30, 10)).astype(np.uint16)
    shown = display_image(image)
    assert shown.shape == (20, 30, 3) and shown.dtype == np.uint8
    assert shown.min() == 0 and shown.max() == 255
    grey = display_image(np.full((5, 5, 1), 7.0, np.float32))
    assert grey.shape == (5, 5, 3)


def test_colorize_and_blend_use_the_class_colours():
    mask = np.array([[0, 1], [2, 255]])
    colours = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    rgb = colorize(mask, colours, ignore_index=255)
    assert rgb[0, 1].tolist() == [255, 0, 0] and rgb[1, 0].tolist() == [0, 255, 0]
    assert rgb[1, 1].tolist() == [90, 90, 90]
    image = np.full((1, 2, 3), 100, np.uint8)
    blended = blend(image, mask[:1], colours)
    assert blended[0, 0].tolist() == [100, 100, 100]  # background left clear
    assert blended[0, 1, 0] > 100


def test_error_map_marks_false_positives_and_negatives():
    target = np.array([[0, 1, 1, 0]])
    predicted = np.array([[1, 1, 0, 0]])
    errors = error_map(predicted, target)
    assert errors[0, 0].tolist() == list(FALSE_POSITIVE)
    assert errors[0, 2].tolist() == list(FALSE_NEGATIVE)
    assert errors[0, 1].tolist() == [0, 0, 0] and errors[0, 3].tolist() == [0, 0, 0]
