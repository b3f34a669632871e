"""Display helpers: stretch any image, colour masks, mark errors."""

import numpy as np

from unetkit.report.overlays import FALSE_NEGATIVE, FALSE_POSITIVE, colorize, error_map


def test_colorize_uses_the_class_colours():
    mask = np.array([[0, 1], [2, 255]])
    colours = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    rgb = colorize(mask, colours, ignore_index=255)
    assert rgb[0, 1].tolist() == [255, 0, 0] and rgb[1, 0].tolist() == [0, 255, 0]
    assert rgb[1, 1].tolist() == [90, 90, 90]


def test_error_map_marks_false_positives_and_negatives():
    target = np.array([[0, 1, 1, 0]])
    predicted = np.array([[1, 1, 0, 0]])
    errors = error_map(predicted, target)
    assert errors[0, 0].tolist() == list(FALSE_POSITIVE)
    assert errors[0, 2].tolist() == list(FALSE_NEGATIVE)
    assert errors[0, 1].tolist() == [0, 0, 0] and errors[0, 3].tolist() == [0, 0, 0]
