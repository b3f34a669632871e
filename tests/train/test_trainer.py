"""The trainer end to end on tiny data: outputs, reproducibility, resume after SIGKILL, refusals."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unetkit import evaluate, load, train
from unetkit.errors import UnetkitError
from unetkit.train import state


def _rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_a_run_leaves_everything_needed_to_use_judge_and_continue_it(disks, tmp_path, tiny):
    run = train(data=str(disks), out=str(tmp_path / "run"), **tiny)
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "timing.csv", "progress.png", "best/config.json",
                 "best/model.safetensors", "last/model.safetensors", "last/resume.pt"):
        assert (out / name).is_file(), name
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["val_dice"]) >= 0 and float(r["train_loss"]) > 0 for r in rows)
    model, meta = load(out / "best")
    assert meta["task"] == "binary" and model.config["num_classes"] == 1
    assert meta["data"]["mean"] and meta["train"]["patch_size"] == 32
    assert run.best_metric == pytest.approx(max(float(r["val_dice"]) for r in rows), abs=1e-5)
    assert state.read(out / "last")["epoch"] == 2


def test_same_seed_gives_identical_metrics_csv(disks, tmp_path, tiny):
    for name in ("a", "b"):
        train(data=str(disks), out=str(tmp_path / name), **tiny)
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_learns_the_disks(disks, tmp_path, tiny):
    """Enough steps on an easy task must give a clearly useful model (guards the whole loop)."""
    options = {**tiny, "epochs": 8, "steps_per_epoch": 8, "base_channels": 8, "lr": 0.003, "batch_size": 4}
    run = train(data=str(disks), out=str(tmp_path / "run"), **options)
    assert run.best_metric > 0.8


def test_multiclass_and_evaluate_agree_with_a_hand_count(disks3, tmp_path, tiny):
    train(data=str(disks3), out=str(tmp_path / "run"), **tiny)
    summary = evaluate(tmp_path / "run" / "best", disks3, out=tmp_path / "run" / "eval")
    assert summary["task"] == "multiclass" and len(summary["per_class"]) == 3
    # recount the confusion matrix by hand from the model's own predictions
    from unetkit.data import DataSpec, SegmentationDataset

    model, meta = load(tmp_path / "run" / "best")
    spec = DataSpec.from_dict(meta["data"])
    dataset = SegmentationDataset(disks3, ["img07", "img08", "img09"], spec)
    counts = torch.zeros(3, 3, dtype=torch.int64)
    from unetkit.infer.engines import TorchEngine

    engine = TorchEngine(model)  # the images fit one tile: the predictor's output is one forward pass
    for item in dataset:
        pred = engine(item["image"][None]).argmax(1)[0]
        keep = item["mask"] != 255
        counts += torch.bincount(item["mask"][keep] * 3 + pred[keep], minlength=9).reshape(3, 3)
    assert summary["confusion"] == counts.tolist()
    for name in ("summary.json", "per_image.csv", "predictions/img07.png"):
        assert (tmp_path / "run" / "eval" / name).is_file()
    assert len(_rows(tmp_path / "run" / "eval" / "per_image.csv")) == 3


def test_an_existing_run_is_refused_unless_resume_or_overwrite(disks, tmp_path, tiny):
    options = {**tiny, "epochs": 1}
    train(data=str(disks), out=str(tmp_path / "run"), **options)
    with pytest.raises(UnetkitError, match="--resume"):
        train(data=str(disks), out=str(tmp_path / "run"), **options)
    train(data=str(disks), out=str(tmp_path / "run"), overwrite=True, **options)
    with pytest.raises(UnetkitError, match="no run to resume"):
        train(out=str(tmp_path / "other"), resume=True, **options)
    started = train(data=str(disks), out=str(tmp_path / "other"), resume=True, **options)  # killed before it began
    assert started.epochs_done == 1


def test_class_weights_must_match_the_classes(disks3, tmp_path, tiny):
    with pytest.raises(UnetkitError, match="one weight each"):
        train(data=str(disks3), out=str(tmp_path / "run"), class_weights=[1.0, 2.0], **tiny)


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unetkit", "train", "--data", str(data), "--out", str(out), "--depth", "2",
            "--base_channels", "8", "--patch_size", "32", "--batch_size", "2", "--epochs", "4",
            "--steps_per_epoch", "12", "--workers", "0", "--no-progress", "--dropout", "0.2", *extra]


def test_resume_after_sigkill_reaches_the_same_weights(disks, tmp_path):
    """Kill mid-epoch with SIGKILL, resume, and land on the uninterrupted run's weights."""
    # precision forced: each process would otherwise time bf16 against fp32 for its validation, and on a
    # loaded machine two processes can choose differently (the resume is what is tested here, not the probe)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNETKIT_CPU_BF16": "0"}
    subprocess.run(_train_cmd(disks, tmp_path / "whole"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_train_cmd(disks, tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.is_file() and len(_rows(metrics)) >= 2):
        time.sleep(0.02)
    time.sleep(0.3)  # into epoch 3
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_rows(metrics)) == 2
    resumed = subprocess.run(_train_cmd(disks, tmp_path / "killed", "--resume"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole, _ = load(tmp_path / "whole" / "last")
    again, _ = load(tmp_path / "killed" / "last")
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "whole" / "metrics.csv").read_text() == metrics.read_text()


def test_cli_refuses_unknown_flags_and_bad_data_in_one_line(disks, tmp_path):
    bad = subprocess.run([sys.executable, "-m", "unetkit", "train", "--data", str(disks), "--out",
                          str(tmp_path / "r"), "--patch_size", "100"], capture_output=True, text=True)
    assert bad.returncode == 2 and "patch_size" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "unetkit", "train", "--data", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert not (tmp_path / "r" / "last").exists()


def test_an_epoch_of_several_passes_draws_each_image_anew():
    """Passes of one epoch give draws index + pass * size: distinct numbers, every image as often."""
    from unetkit.train.trainer import EpochSampler

    sampler = EpochSampler(5, 17, seed=3)
    draws = list(sampler)
    assert len(draws) == 17 and len(set(draws)) == 17
    assert sorted(d % 5 for d in draws[:15]) == sorted(list(range(5)) * 3)
    sampler.set_epoch(1)
    assert list(sampler) != draws


def test_the_layout_the_probe_measures_faster_is_the_one_trained_and_a_flag_wins(disks, tmp_path, tiny, monkeypatch):
    """NCHW trains the network as written, channels-last the fused training network; the
    choice is the probe's unless --channels_last / --no-channels_last says otherwise."""
    from unetkit.nn import fused
    from unetkit.train import trainer

    monkeypatch.setattr(trainer, "training_layout", lambda *a: (False, "a training step measured 1.50x as fast"))
    built = []
    original = fused.training_network
    monkeypatch.setattr(fused, "training_network", lambda model: built.append(model) or original(model))
    train(data=str(disks), out=str(tmp_path / "nchw"), **tiny)
    assert not built
    assert "channels_last: false" in (tmp_path / "nchw" / "config.yaml").read_text()
    train(data=str(disks), out=str(tmp_path / "asked"), **{**tiny, "channels_last": True})
    assert len(built) == 1 and built[0].encoder[0].conv.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_gradients_are_freed_as_soon_as_the_optimizer_has_stepped(disks, tmp_path, tiny, monkeypatch):
    """Kept until the next backward pass, they would sit beside the next forward pass's stored
    activations (and through validation): a whole fp32 copy of the parameters at the step's peak."""
    from unetkit.train.trainer import Trainer

    kept: list[int] = []
    original = Trainer._train_epoch

    def epoch_then_look(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        kept.append(sum(p.grad is not None for p in self.model.parameters()))
        return result

    monkeypatch.setattr(Trainer, "_train_epoch", epoch_then_look)
    train(data=str(disks), out=str(tmp_path / "run"), **tiny)
    assert kept == [0, 0]  # two epochs, each ending with no gradient held
