"""The fingerprint of small generated sets: sizes, classes, objects, layout, cached."""

from __future__ import annotations

import pytest

from unetkit.data.synth import write_dataset
from unetkit.plan.fingerprint import Fingerprint, fingerprint


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_cells_have_small_round_objects_and_no_up(tmp_path):
    write_dataset("cells", tmp_path / "cells", count=12, size=96, seed=0)
    found = fingerprint(tmp_path / "cells")
    assert found.pairs == 12 and found.median_size == (96, 96) and found.bands == 1 and found.task == "binary"
    assert found.dtype == "uint8" and 0.05 < found.foreground_share < 0.8
    assert 4 < found.object_diameter_median < 40 and found.object_thickness_median <= found.object_diameter_median * 2
    assert found.objects_per_image >= 1 and not found.has_up


def test_road_scenes_have_an_up(tmp_path):
    write_dataset("scenes", tmp_path / "scenes", count=10, size=96, seed=0)
    found = fingerprint(tmp_path / "scenes")
    assert found.task == "multiclass" and found.bands == 3 and len(found.classes) == 5
    assert found.has_up and found.vertical_layout > 3 * found.horizontal_layout


def test_many_bands_and_the_cache(tmp_path):
    write_dataset("multispectral", tmp_path / "ms", count=8, size=64, seed=0)
    first = fingerprint(tmp_path / "ms")
    assert first.bands == 10 and first.dtype == "uint16" and len(first.mean) == 10
    again = fingerprint(tmp_path / "ms")
    assert again == first and list((tmp_path / "cache" / "unetkit" / "fingerprints").iterdir())
    assert Fingerprint.from_dict(first.to_dict()) == first


def test_a_thin_diagonal_structure_is_one_object(tmp_path):
    """Vessels, cracks and membranes run diagonally one pixel thin: 8-connected, one object each."""
    import numpy as np

    from unetkit.data.io import write_image, write_mask

    (tmp_path / "set" / "images").mkdir(parents=True)
    (tmp_path / "set" / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = np.zeros((64, 64), np.uint8)
        mask[np.arange(5, 60), np.arange(5, 60)] = 1  # one diagonal line, 55 px long
        mask[np.arange(40, 5, -1), np.arange(10, 45)] = 1  # and one crossing it: one tree
        write_image(tmp_path / "set" / "images" / f"{i}.png", rng.integers(0, 255, (64, 64, 1), dtype=np.uint8))
        write_mask(tmp_path / "set" / "masks" / f"{i}.png", mask)
    found = fingerprint(tmp_path / "set")
    assert found.objects_per_image == 1
    assert found.object_area_median == pytest.approx(55 + 35 - 1, abs=2)
