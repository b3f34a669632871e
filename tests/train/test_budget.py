"""`train --minutes N`: the planned schedule ends with the budget, flags win over the plan, resume keeps it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import yaml

from unetkit.train.run_folder import read_csv, read_run_info


def _train(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "unetkit", "train", "--no-progress", *args], capture_output=True,
                          text=True, timeout=600)
    return done, time.monotonic() - started


def test_a_one_minute_budget_ends_inside_it_with_the_schedule_at_its_end(disks, tmp_path):
    done, wall = _train("--data", str(disks), "--out", str(tmp_path / "run"), "--minutes", "1")
    assert done.returncode == 0, done.stderr
    info = read_run_info(tmp_path / "run")
    assert 0.85 * 60 <= info["budget_seconds_spent"] <= 1.05 * 60  # filled, and not over by more than 5 %
    assert wall <= 1.05 * 60 + 45  # plus the start-up: imports, data check, fingerprint, probe
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert rows[-1]["lr"] <= 0.01 * plan["settings"]["lr"]  # the poly schedule reached its end
    assert rows[-1]["step"] == info["steps_done"] and rows[-1]["val_dice"] is not None
    # the plan's steps done, or the deadline met a few steps before them on a slower last epoch (the
    # schedule's end is checked above either way)
    ended = ("stopped: completed: the 1-minute plan", "stopped: time budget: --minutes 1 spent")
    assert "plan:" in done.stdout and any(e in done.stdout for e in ended), done.stdout[-1500:]
    # the layout the planner costed the width in is the one trained, and the run says why
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["channels_last"] is plan["settings"]["channels_last"] is info["channels_last"]
    layout = "channels-last" if config["channels_last"] else "NCHW"
    assert f"{layout} (planned: " in done.stdout, done.stdout[:1500]
    page = subprocess.run([sys.executable, "-m", "unetkit", "report", str(tmp_path / "run")], capture_output=True,
                          text=True)
    assert page.returncode == 0 and "Plan" in (tmp_path / "run" / "report.html").read_text()


def test_flags_win_over_the_plan_and_resume_keeps_it(disks, tmp_path):
    run = tmp_path / "run"
    done, _ = _train("--data", str(disks), "--out", str(run), "--minutes", "0.3", "--base_channels", "8",
                     "--patch_size", "32", "--no-channels_last")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    plan = json.loads((run / "plan.json").read_text())
    assert config["base_channels"] == 8 and config["patch_size"] == 32 and config["channels_last"] is False
    given = {c["setting"] for c in plan["choices"] if c["given"]}
    assert {"base_channels", "patch_size", "channels_last"} <= given and "batch_size" not in given
    assert "NCHW (asked)" in done.stdout
    steps = read_run_info(run)["steps_done"]
    before = (run / "plan.json").read_bytes()
    more, _ = _train("--resume", str(run), "--minutes", "0.6")
    assert more.returncode == 0, more.stderr
    assert (run / "plan.json").read_bytes() == before  # the same plan goes on
    info = read_run_info(run)
    assert info["steps_done"] > steps and info["budget_seconds_spent"] <= 1.05 * 36
    bad, _ = _train("--resume", str(run), "--base_channels", "16")
    assert bad.returncode == 2 and "base_channels" in bad.stderr


def test_an_epoch_after_which_nothing_fits_is_scored_as_the_last(disks, tmp_path, monkeypatch):
    """When the replan finds no step left after an epoch, that epoch ends the run and must be
    validated and saved (it once ended the loop with an unscored last row)."""
    from unetkit import train
    from unetkit.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "_check_cost", lambda self: self.budget)  # a check eats the whole budget
    run = train(data=str(disks), out=str(tmp_path / "run"), minutes=0.2, progress=False)
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 1 and rows[0]["val_dice"] is not None
    assert run.stopped.startswith("completed: the 0.2-minute plan")
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_the_deadline_lets_only_the_schedules_last_steps_finish():
    from unetkit.train.trainer import past_deadline

    budget, deadline = 600.0, 1000.0
    assert not past_deadline(999.0, deadline, budget, step=10, total=1000)  # before it: go on
    assert past_deadline(1001.0, deadline, budget, step=900, total=1000)  # 10 % of the steps left: stop
    assert not past_deadline(1001.0, deadline, budget, step=990, total=1000)  # 1 % left: finish them
    assert past_deadline(deadline + 0.03 * budget, deadline, budget, step=990, total=1000)  # but not 3 % late
