"""`unetkit demo` end to end with a tiny recipe (the real one is timed in BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from unetkit import demo
from unetkit.errors import UnetkitError


def test_tiny_demo_runs_every_stage(tmp_path, monkeypatch):
    tiny = dict(count=12, size=64, epochs=1, steps_per_epoch=3, batch_size=2, patch_size=64, base_channels=4,
                depth=2, lr=3e-3, max_minutes=1.0, precision="fp32")
    monkeypatch.setitem(demo.__dict__, "CELLS", tiny)
    lines = []
    result = demo.run_demo(tmp_path / "demo", say=lines.append)
    cells = tmp_path / "demo" / "cells"
    assert (cells / "run" / "report.html").is_file()
    assert (cells / "model.onnx").is_file()
    assert sorted(p.name for p in (cells / "predicted").glob("*.png") if "overlay" not in p.name) == [
        "heldout_0.png", "heldout_1.png", "heldout_2.png", "large.png"]
    assert list(result.stages) == [f"cells: {s}" for s in ("generate data", "train", "evaluate",
                                                              "predict (tiled for large)", "export ONNX", "report")]
    assert 0.0 <= result.scores["cells"]["dice"] <= 1.0
    assert any("overlapping tiles" in line for line in lines)  # the large image went through tiling
    text = result.to_text()
    assert "total" in text and "report.html" in text
    assert "cells: trained 1 of 1 epochs; stopped: completed" in text  # why the run stopped, always said
    # a second run replaces the demo's own folder
    demo.run_demo(tmp_path / "demo", say=lambda _: None)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(UnetkitError, match="not a demo folder"):
        demo.run_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"


def test_a_demo_cut_by_its_time_cap_says_so(tmp_path, monkeypatch):
    """`make demo` hit its cap silently (announced 24 epochs, trained 3): now the summary and the report say why."""
    tiny = dict(count=12, size=64, epochs=50, steps_per_epoch=3, batch_size=2, patch_size=64, base_channels=4,
                depth=2, lr=3e-3, max_minutes=0.02, precision="fp32")
    monkeypatch.setitem(demo.__dict__, "CELLS", tiny)
    text = demo.run_demo(tmp_path / "demo", say=lambda _: None).to_text()
    assert "of 50 epochs; stopped: time limit: --max_minutes 0.02 reached" in text
    page = (tmp_path / "demo" / "cells" / "run" / "report.html").read_text()
    assert "time limit: --max_minutes 0.02 reached" in page
