"""Two CPU processes (torchrun, gloo) against one process with the same global batch.

Exact up to float summation order when every loss term and norm is per sample (BCE, group
norm): DDP averages the gradients of two half-batches, which is the gradient of the whole
batch. With the defaults, batch Dice and batch norm are computed per process (torch has no
SyncBatchNorm on the CPU), so the runs differ slightly: the tolerance below says how much.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from unetkit import load
from unetkit.train.run_folder import read_run_info


def free_port() -> int:
    """A loopback port nobody holds now (a fixed one can still be in TIME_WAIT from the last test)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(data, out, processes: int, *extra: str) -> list[dict]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())] if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "unetkit", "train", "--data", str(data), "--out", str(out), "--depth", "2",
           "--base_channels", "4", "--patch_size", "32", "--batch_size", "4", "--epochs", "2",
           "--steps_per_epoch", "3", "--workers", "0", "--no-progress", "--precision", "fp32", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    # the head holds a rank's own last words (e.g. "terminate called ..."), the tail the launcher's
    assert done.returncode == 0, done.stderr[:1500] + "\n...\n" + done.stderr[-1000:]
    assert done.stdout.count("done (") == 1  # only rank 0 reports
    with open(out / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_two_processes_match_one_with_per_sample_losses(disks, tmp_path):
    extra = ("--norm", "group", "--loss", "bce")
    one = _run(disks, tmp_path / "one", 1, *extra)
    two = _run(disks, tmp_path / "two", 2, *extra)
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss", "val_dice"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4), key
    m1, _ = load(tmp_path / "one" / "last")
    m2, _ = load(tmp_path / "two" / "last")
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.allclose(p1, p2, rtol=1e-4, atol=1e-6), name


def test_two_processes_with_the_defaults_stay_close(disks, tmp_path):
    one = _run(disks, tmp_path / "one", 1)
    two = _run(disks, tmp_path / "two", 2)
    for a, b in zip(one, two):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), abs=0.05)
        assert float(a["val_dice"]) == pytest.approx(float(b["val_dice"]), abs=0.05)


def test_ranks_whose_clocks_disagree_still_validate_and_stop_together(disks, tmp_path):
    """With --minutes a validation, and the deadline, are due by each process's own clock; the ranks
    must agree on both (a validation's all_reduce on one rank against a training step's on the
    other, or a step on one rank that has left the loop on the other, hangs or mixes tensors).
    Here rank 1 always finds a validation due and finds the deadline past after step 10, in the
    middle of an epoch; rank 0 never does either."""
    script = tmp_path / "disagree.py"
    script.write_text(
        "import sys\n"
        "from unetkit.cli import main\n"
        "from unetkit.train.trainer import Trainer\n"
        "Trainer._check_due = lambda self, epoch, now: self.rank == 1\n"
        "Trainer._out_of_time = lambda self, now, started, step: self.rank == 1 and step >= 10\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), "train", "--data", str(disks), "--out", str(out),
           "--minutes", "0.3", "--depth", "2", "--base_channels", "4", "--patch_size", "32", "--batch_size", "4",
           "--steps_per_epoch", "3", "--workers", "0", "--no-progress", "--precision", "fp32"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=240)
    assert done.returncode == 0, done.stderr[:1500] + "\n...\n" + done.stderr[-1000:]
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) > 2 and all(row["val_dice"] for row in rows)  # rank 1's clock wins: every epoch scored
    assert rows[-1]["step"] == "10" and "time budget" in read_run_info(out)["stopped"]  # and both stopped there
