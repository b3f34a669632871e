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


def test_an_overlay_of_a_white_class_on_a_grey_image_is_visible():
    """The issue's case: cells coloured white over a greyscale micrograph vanished in the overlay."""
    from unetkit.infer.outputs import overlay_image
    from unetkit.model.record import SavedModel

    record = SavedModel.from_json({"model": {"num_classes": 1}, "task": "binary", "data": {
        "task": "binary", "in_channels": 1, "mean": [100.0], "std": [50.0], "ignore_index": None,
        "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                    {"id": 1, "name": "cell", "color": [255, 255, 255]}]}}, "m")
    image = np.full((4, 4, 1), 200, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    picture = overlay_image(image, mask, record)
    cell, background = picture[1, 1].astype(int), picture[0, 0].astype(int)
    assert background.tolist() == [200, 200, 200]  # background stays clear
    assert cell.max() - cell.min() > 60  # a visible hue, not a paler grey
