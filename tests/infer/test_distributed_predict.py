"""`torchrun --nproc_per_node 2 -m unetkit predict`: every image once, the files of one process,
each failure reported once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np

from unetkit.data.io import write_image


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_write_what_one_writes(tmp_path, model_folder, smooth_image):
    for i in range(5):
        write_image(tmp_path / "in" / f"im{i}.png", smooth_image(40 + 30 * i, 50, seed=i))  # some tiled
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    args = ["-m", "unetkit", "predict", "--model", str(model_folder), "--input", str(tmp_path / "in"),
            "--precision", "fp32", "--overlay"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=300)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(_free_port()), *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 1 and two.returncode != 0, two.stderr[-2000:]  # one image failed in both
    first = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert first == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(first) == 10
    for name in first:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert two.stderr.count("unetkit: skipped:") == 1 and "broken.png" in two.stderr
    assert two.stdout.count("segmented 5 image(s)") == 1
    assert not np.any([p.name.startswith(".") for p in (tmp_path / "two").iterdir()])
