"""Model folders: round trip, atomic swaps, clear errors for corrupt files, no pickled code."""

from __future__ import annotations

import json

import pytest
import torch

from unetkit.atomic import aside_name
from unetkit.errors import UnetkitError
from unetkit.model.store import load, resolve_folder, save_model
from unetkit.nn import UNet
from unetkit.train import state

META = {"task": "multiclass", "threshold": 0.5, "data": {}, "train": {}}


def _model():
    return UNet(in_channels=2, num_classes=3, depth=2, base_channels=4).eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _model().to(memory_format=torch.channels_last)
    save_model(tmp_path / "best", model, META, extra=state.writer({"epoch": 3, "rng": torch.get_rng_state()}))
    loaded, meta = load(tmp_path / "best")
    x = torch.randn(1, 2, 20, 20)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), rtol=1e-4, atol=1e-5)  # layouts differ: conv order differs
        assert torch.equal(model(x), loaded.to(memory_format=torch.channels_last)(x))
    assert meta["model"] == model.config and meta["task"] == "multiclass"
    assert meta.options == model.options
    assert (tmp_path / "best" / "resume.pt").is_file()


def test_a_run_folder_resolves_to_best_and_a_killed_swap_to_the_aside_folder(tmp_path):
    save_model(tmp_path / "run" / "best", _model(), META)
    assert resolve_folder(tmp_path / "run") == tmp_path / "run" / "best"
    (tmp_path / "run" / "best").rename(aside_name(tmp_path / "run" / "best"))  # killed between the two renames
    assert resolve_folder(tmp_path / "run" / "best") == aside_name(tmp_path / "run" / "best")


def test_saving_again_replaces_the_folder_whole(tmp_path):
    first, second = _model(), _model()
    save_model(tmp_path / "last", first, META)
    save_model(tmp_path / "last", second, META)
    loaded, _ = load(tmp_path / "last")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), second.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_truncated_weights_and_resume_state_give_one_sentence(tmp_path):
    save_model(tmp_path / "last", _model(), META, extra=state.writer({"epoch": 1}))
    weights = tmp_path / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnetkitError, match="corrupt or truncated"):
        load(tmp_path / "last")
    resume = tmp_path / "last" / "resume.pt"
    resume.write_bytes(resume.read_bytes()[:50])
    with pytest.raises(UnetkitError, match="resume state is unusable"):
        state.read(tmp_path / "last")


def test_resume_state_refuses_pickled_objects(tmp_path):
    save_model(tmp_path / "last", _model(), META)
    torch.save({"epoch": 1, "evil": Exception("code")}, tmp_path / "last" / "resume.pt")
    with pytest.raises(UnetkitError, match="unusable"):
        state.read(tmp_path / "last")


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(UnetkitError, match="RUN_DIR/best"):
        load(tmp_path / "nothing")


@pytest.mark.parametrize("field, value, words", [
    (("data", "in_channels"), "two", "data.in_channels is 'two'"),
    (("data", "mean"), [1.0, "x"], "data.mean"),
    (("data", "std"), [1.0, 0.0], "data.std"),
    (("threshold",), 7, "threshold is 7"),
    (("threshold",), "high", "threshold is 'high'"),
    (("model", "depth"), -1, "model options are invalid"),
    (("train", "patch_size"), "big", "train.patch_size"),
])
def test_a_malformed_config_json_field_is_one_sentence(tmp_path, field, value, words):
    """The issue's cases: malformed data.in_channels, mean or threshold in config.json."""
    meta = {"task": "multiclass", "threshold": 0.5, "train": {"patch_size": 32},
            "data": {"task": "multiclass", "in_channels": 2, "mean": [1.0, 2.0], "std": [1.0, 1.0],
                     "ignore_index": None, "classes": [{"id": i, "name": str(i), "color": [i, i, i]} for i in range(3)]}}
    folder = save_model(tmp_path / "m", _model(), meta)
    config = json.loads((folder / "config.json").read_text())
    target = config
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnetkitError) as error:
        load(folder)
    message = str(error.value)
    assert words in message and str(folder) in message and "\n" not in message


def test_a_folder_written_by_version_0_1_still_loads(tmp_path):
    """config.json as 0.1 wrote it: no input, plan or train.seed keys; a `.old` folder after a kill."""
    model = _model()
    folder = tmp_path / "best.old"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "unetkit-model/1"})
    old = {"format": "unetkit-model/1", "model": model.config, "task": "multiclass", "threshold": 0.5,
           "data": {"task": "multiclass", "classes": [{"id": 0, "name": "a", "color": [0, 0, 0]},
                                                      {"id": 1, "name": "b", "color": [9, 9, 9]},
                                                      {"id": 2, "name": "c", "color": [5, 5, 5]}],
                    "ignore_index": None, "in_channels": 2, "mean": [0.0, 0.0], "std": [1.0, 1.0],
                    "binary_255": False, "color_coded": False, "include_alpha": False},
           "train": {"patch_size": 32, "seed": 0, "val_fraction": 0.2, "epoch": 4}, "metrics": None}
    (folder / "config.json").write_text(json.dumps(old))
    loaded, record = load(tmp_path / "best")
    assert record.epoch == 4 and record.patch_size == 32 and record.input.dtype is None
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
