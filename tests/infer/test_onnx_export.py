"""Export: ONNX and TorchScript with dynamic sizes, checked against PyTorch; the ONNX engine."""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings

import numpy as np
import pytest
import torch

from unetkit.cli import main
from unetkit.errors import UnetkitError
from unetkit.infer import Predictor
from unetkit.infer.export import export
from unetkit.model.store import load, save_model

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, make_model, make_meta):
    """A 3-class depth-2 model folder and its ONNX export by the CLI, made once (export takes seconds)."""
    root = tmp_path_factory.mktemp("export")
    folder = save_model(root / "model", make_model(), make_meta(class_ids=[0, 3, 7]))
    onnx_file = root / "model.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "--model", str(folder), "--out", str(onnx_file)])
    return folder, onnx_file, code, printed.getvalue()


def test_export_writes_the_file_and_reports_the_difference(exported):
    _, onnx_file, code, printed = exported
    assert code == 0 and onnx_file.is_file()
    found = re.search(r"max \|onnx - torch\| = (\S+) on new input sizes", printed)
    assert found and float(found.group(1)) < 1e-4


@pytest.mark.parametrize("shape", [(1, 1, 45, 67), (3, 1, 80, 33)])
def test_onnx_matches_pytorch_at_new_sizes(exported, shape):
    folder, onnx_file, _, _ = exported
    model, _ = load(folder)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4


def test_onnx_file_carries_the_model_config(exported):
    _, onnx_file, _, _ = exported
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["unetkit"])
    assert [c["id"] for c in meta["data"]["classes"]] == [0, 3, 7]
    assert meta["data"]["mean"] == [100.0] and meta["task"] == "multiclass" and meta["train"]["patch_size"] == 32
    dims = session.get_inputs()[0].shape
    assert all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))  # dynamic batch, height, width


def test_onnx_engine_predicts_like_the_torch_engine(exported, smooth_image, tmp_path):
    folder, onnx_file, _, _ = exported
    image = smooth_image(80, 70)  # four tiles of 64
    on_onnx = Predictor(onnx_file, tta="flips")
    on_torch = Predictor(folder, precision="fp32", tta="flips")
    assert on_onnx.engine.name == "onnx" and on_onnx.tile == on_torch.tile == 64
    assert np.abs(on_onnx.predict_probabilities(image) - on_torch.predict_probabilities(image)).max() < 1e-4
    from unetkit.data.io import write_image

    write_image(tmp_path / "in" / "a.png", image)
    assert main(["predict", "--engine", "onnx", "--model", str(onnx_file), "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "a.png").is_file()


def test_torchscript_export_matches_and_carries_the_config(model_folder, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", "--model", str(model_folder), "--format", "torchscript", "--out", str(out)]) == 0
    assert re.search(r"max \|torchscript - torch\| = \S+ on new input sizes", capsys.readouterr().out)
    extra = {"unetkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["unetkit.json"])["data"]["mean"] == [100.0]
    model, _ = load(model_folder)
    x = torch.randn(2, 1, 37, 29)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


def test_a_failed_parity_check_writes_nothing(model_folder, tmp_path):
    with pytest.raises(UnetkitError, match="was not written"):
        export(model_folder, tmp_path / "model.pt", format="torchscript", tolerance=0.0)
    assert not list(tmp_path.glob("model.pt*"))


def test_valid_padding_models_and_wrong_names_are_refused(make_model, tmp_path):
    with pytest.raises(UnetkitError, match="padding='same'"):
        export(make_model(padding="valid"), tmp_path / "m.pt", format="torchscript")
    with pytest.raises(UnetkitError, match=r"\*\.onnx"):
        export(make_model(), tmp_path / "m.bin", format="onnx")


def test_export_never_writes_over_a_file(model_folder, tmp_path):
    """The issue's command: exporting over the model's own weights is refused; they stay intact."""
    weights = model_folder / "model.safetensors"
    before = weights.read_bytes()
    args = ["export", "--model", str(model_folder), "--format", "torchscript", "--out", str(weights)]
    assert main(args) == 2
    assert weights.read_bytes() == before
    target = tmp_path / "m.pt"
    assert main(args[:-1] + [str(target)]) == 0
    assert main(args[:-1] + [str(target)]) == 2
    assert main(args[:-1] + [str(target), "--overwrite"]) == 0


def test_export_to_an_unwritable_place_is_one_sentence(model_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["export", "--model", str(model_folder), "--format", "torchscript",
                 "--out", str(tmp_path / "file" / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err
