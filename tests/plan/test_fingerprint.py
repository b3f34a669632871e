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
