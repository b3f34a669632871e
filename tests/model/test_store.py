"""Checkpoints: round trip, atomic swaps, clear errors for corrupt files, no pickled code."""

from __future__ import annotations

import pytest
import torch

from unetkit.errors import UnetkitError
from unetkit.nn import UNet
from unetkit.train.checkpoint import load, load_resume_state, resolve_folder, save_model

META = {"task": "multiclass", "threshold": 0.5, "data": {}, "train": {}}


def _model():
    return UNet(in_channels=2, num_classes=3, depth=2, base_channels=4).eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _model().to(memory_format=torch.channels_last)
    save_model(tmp_path / "best", model, META, resume_state={"epoch": 3, "rng": torch.get_rng_state()})
    loaded, meta = load(tmp_path / "best")
    x = torch.randn(1, 2, 20, 20)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), rtol=1e-4, atol=1e-5)  # layouts differ: conv order differs
        assert torch.equal(model(x), loaded.to(memory_format=torch.channels_last)(x))
    assert meta["model"] == model.config and meta["task"] == "multiclass"
    assert load_resume_state(tmp_path / "best")["epoch"] == 3


def test_a_run_folder_resolves_to_best_and_a_killed_swap_to_old(tmp_path):
    save_model(tmp_path / "run" / "best", _model(), META)
    assert resolve_folder(tmp_path / "run") == tmp_path / "run" / "best"
    (tmp_path / "run" / "best").rename(tmp_path / "run" / "best.old")  # killed between the two renames
    assert resolve_folder(tmp_path / "run" / "best") == tmp_path / "run" / "best.old"


def test_saving_again_replaces_the_folder_whole(tmp_path):
    first, second = _model(), _model()
    save_model(tmp_path / "last", first, META)
    save_model(tmp_path / "last", second, META)
    loaded, _ = load(tmp_path / "last")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), second.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_truncated_weights_and_resume_state_give_one_sentence(tmp_path):
    save_model(tmp_path / "last", _model(), META, resume_state={"epoch": 1})
    weights = tmp_path / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnetkitError, match="corrupt or truncated"):
        load(tmp_path / "last")
    resume = tmp_path / "last" / "resume.pt"
    resume.write_bytes(resume.read_bytes()[:50])
    with pytest.raises(UnetkitError, match="corrupt or truncated"):
        load_resume_state(tmp_path / "last")


def test_resume_state_refuses_pickled_objects(tmp_path):
    save_model(tmp_path / "last", _model(), META)
    torch.save({"epoch": 1, "evil": Exception("code")}, tmp_path / "last" / "resume.pt")
    with pytest.raises(UnetkitError):
        load_resume_state(tmp_path / "last")


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(UnetkitError, match="RUN_DIR/best"):
        load(tmp_path / "nothing")
