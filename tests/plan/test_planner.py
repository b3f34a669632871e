"""The planner's choices on synthetic fingerprints and probes: each rule follows a property."""

from __future__ import annotations

import pytest
import torch

from unetkit.plan import planner
from unetkit.plan.fingerprint import Fingerprint
from unetkit.plan.probe import StepCost


def fingerprint(size=(512, 512), bands=1, classes=("background", "membrane"), shares=(0.78, 0.22), pairs=30,
                area=400.0, vertical=0.0) -> Fingerprint:
    return Fingerprint(
        root="data", pairs=pairs, train_pairs=int(pairs * 0.8), val_pairs=pairs - int(pairs * 0.8),
        median_size=size, min_size=size, max_size=size, bands=bands, dtype="uint8", mean=[0.0] * bands,
        std=[1.0] * bands, task="binary" if len(classes) == 2 else "multiclass", classes=list(classes),
        class_shares=list(shares), foreground_share=1 - shares[0], ignore_share=0.0, object_area_median=area,
        object_area_p90=area * 2, object_diameter_median=(4 * area / 3.14159) ** 0.5,
        object_thickness_median=10.0, objects_per_image=20.0, vertical_layout=vertical, horizontal_layout=0.01)


class _Calls(list):
    nchw_factor: float


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: a step costs (pixels x width^2) times a device factor, in either layout
    alike unless a test sets `nchw_factor`; bf16 measured faster."""
    calls = _Calls()
    calls.nchw_factor = 1.0

    def cost(options, patch, batch, precision, device, steps=3, layout="channels_last"):
        calls.append((options.base_channels, patch, batch, layout))
        factor = 1e-9 if device.type == "cpu" else 2e-11
        seconds = factor * batch * patch**2 * (options.base_channels + 4) ** 2 * options.in_channels ** 0.1
        seconds *= calls.nchw_factor if layout == "nchw" else 1.0
        return StepCost(seconds, batch / seconds, precision, True)

    monkeypatch.setattr(planner, "step_cost", cost)
    monkeypatch.setattr(planner, "training_precision", lambda *a: ("bf16", "measured faster (fake)"))
    return calls


def choice(plan, setting):
    return next(c for c in plan.choices if c.setting == setting)


def test_tiny_images_get_a_small_patch_and_depth(machine):
    plan = planner.make_plan(fingerprint(size=(40, 48), area=30.0), 5, torch.device("cpu"))
    assert plan.settings["patch_size"] <= 40 and plan.settings["depth"] == 2
    assert plan.settings["patch_size"] % 2 ** plan.settings["depth"] == 0


def test_large_images_get_a_patch_toward_their_size_within_the_cpu_cap(machine):
    plan = planner.make_plan(fingerprint(size=(512, 512)), 20, torch.device("cpu"))
    assert plan.settings["patch_size"] == 256 and plan.settings["depth"] == 5
    assert plan.settings["batch_size"] == 2


def test_large_objects_widen_the_patch(machine):
    small = planner.make_plan(fingerprint(size=(1024, 1024), area=400.0), 20, torch.device("cpu"))
    large = planner.make_plan(fingerprint(size=(1024, 1024), area=60000.0), 20, torch.device("cpu"))
    assert large.settings["patch_size"] > small.settings["patch_size"]


def test_width_follows_what_the_budget_can_train(machine):
    short = planner.make_plan(fingerprint(), 2, torch.device("cpu"))
    long = planner.make_plan(fingerprint(), 120, torch.device("cpu"))
    assert short.settings["base_channels"] < long.settings["base_channels"]
    assert long.estimate["steps"] >= planner.MIN_STEPS
    assert f"at least {planner.MIN_STEPS:,} steps" in choice(long, "base_channels").reason


def test_a_wider_network_is_taken_where_it_comes_nearly_free_or_still_gets_many_steps():
    # narrow widths bound by memory traffic (16 costs 1.5x a step of 8), wide ones by the work (3x, 3.5x)
    seconds = {8: 0.1, 16: 0.15, 32: 0.45, 64: 1.575}
    base, why = planner.width_to_train(seconds, 180.0)  # base 16 gets 1,200 steps, nearly free: taken
    assert base == 16 and "base 32: 400 steps" in why
    base, why = planner.width_to_train(seconds, 900.0)  # base 32 would get 2,000 steps at 3x the cost: not taken
    assert base == 16 and "base 32: 3.00x a step, 2,000 steps" in why
    base, why = planner.width_to_train(seconds, 0.45 * planner.MANY_STEPS)  # enough steps to be worth its cost
    assert base == 32 and "base 64: 857 steps" in why
    base, why = planner.width_to_train(seconds, 50.0)
    assert base == 8 and why == "even the narrowest gets only 500 steps"


def test_a_gpu_gets_a_larger_recipe(machine):
    cpu = planner.make_plan(fingerprint(size=(1024, 1024)), 10, torch.device("cpu"))
    gpu = planner.make_plan(fingerprint(size=(1024, 1024)), 10, torch.device("cuda"))
    for setting in ("patch_size", "base_channels"):
        assert gpu.settings[setting] > cpu.settings[setting], setting
    assert gpu.settings["batch_size"] * gpu.settings["patch_size"] ** 2 > \
        cpu.settings["batch_size"] * cpu.settings["patch_size"] ** 2


def test_many_bands_are_planned_like_any_other(machine):
    plan = planner.make_plan(fingerprint(size=(256, 256), bands=13), 10, torch.device("cpu"))
    assert plan.fingerprint["bands"] == 13 and plan.settings["patch_size"] == 256


def test_rare_classes_get_weights_and_images_with_an_up_only_mirrors(machine):
    classes = ("sky", "building", "road", "car", "sign")
    plan = planner.make_plan(fingerprint(size=(256, 512), classes=classes, shares=(0.3, 0.3, 0.35, 0.045, 0.005),
                                         vertical=0.6), 10, torch.device("cpu"))
    weights = plan.settings["class_weights"]
    assert weights[-1] > 1.0 and weights[:4] == [1.0, 1.0, 1.0, 1.0]
    assert plan.settings["flips"] == "horizontal"


def test_the_schedule_fills_the_budget_and_validation_stays_a_tenth(machine):
    plan = planner.make_plan(fingerprint(), 10, torch.device("cpu"))
    e = plan.estimate
    assert e["steps"] * e["step_seconds"] <= 0.9 * 600 and e["steps"] * e["step_seconds"] >= 0.8 * 600
    assert e["validations"] * e["validation_seconds"] <= 0.1 * 600 + 1e-6
    assert plan.settings["epochs"] * plan.settings["steps_per_epoch"] >= e["steps"]


def test_given_settings_win_and_the_plan_says_so(machine):
    plan = planner.make_plan(fingerprint(), 10, torch.device("cpu"), given={"base_channels": 64, "patch_size": 128})
    assert "base_channels" not in plan.settings and "patch_size" not in plan.settings
    assert choice(plan, "base_channels").given and choice(plan, "base_channels").value == 64
    assert {c[0] for c in machine} == {64} and {c[1] for c in machine} == {128}  # measured as given
    assert "(given)" in plan.to_text()


def test_a_patch_is_never_larger_than_the_images(machine):
    plan = planner.make_plan(fingerprint(size=(128, 160), area=60000.0), 20, torch.device("cpu"))
    assert plan.settings["patch_size"] <= 128


def test_the_depth_follows_a_given_patch(machine):
    plan = planner.make_plan(fingerprint(size=(512, 512)), 20, torch.device("cpu"), given={"patch_size": 64})
    assert plan.settings["depth"] == 3  # a 64 px patch pools to 8 px in three steps, not the 256 px plan's five
    assert "64 px patch" in choice(plan, "depth").reason


def test_loading_the_batch_is_part_of_a_step_unless_workers_overlap_it(machine):
    free = planner.make_plan(fingerprint(), 10, torch.device("cpu"), given={"workers": 0})
    seen = []

    def sample_cost(patch, augment, flips):
        seen.append((patch, augment, flips))
        return 0.05

    paid = planner.make_plan(fingerprint(), 10, torch.device("cpu"), given={"workers": 0}, sample_cost=sample_cost)
    batch, base = paid.settings["batch_size"], paid.settings["base_channels"]
    network = paid.estimate["network_seconds"][str(base)]
    assert paid.estimate["step_seconds"] == pytest.approx(network + batch * 0.05)
    assert paid.estimate["steps"] < free.estimate["steps"]
    assert seen == [(paid.settings["patch_size"], "default", paid.settings["flips"])]
    assert "loading the batch" in choice(paid, "base_channels").reason
    overlapped = planner.make_plan(fingerprint(), 10, torch.device("cpu"), given={"workers": 4},
                                   sample_cost=sample_cost)
    e = overlapped.estimate
    assert e["step_seconds"] == pytest.approx(max(e["network_seconds"][str(overlapped.settings["base_channels"])],
                                                  batch * 0.05 / 4))



def test_each_width_is_costed_in_its_faster_layout_and_the_plan_trains_in_it(machine):
    same = planner.make_plan(fingerprint(), 3, torch.device("cpu"))
    assert same.settings["channels_last"] is True  # alike in both: the fused channels-last path stays
    assert {c[3] for c in machine} == {"channels_last", "nchw"}
    machine.nchw_factor = 0.5  # NCHW trains every width twice as fast here
    faster = planner.make_plan(fingerprint(), 3, torch.device("cpu"))
    assert faster.settings["channels_last"] is False
    assert "2.00x as fast in NCHW" in choice(faster, "channels_last").reason
    base, patch, batch = (faster.settings[k] for k in ("base_channels", "patch_size", "batch_size"))
    assert faster.estimate["network_seconds"][str(base)] == pytest.approx(0.5e-9 * batch * patch**2 * (base + 4) ** 2)
    assert base > same.settings["base_channels"]  # the cheaper layout's cost chose the width
    assert faster.estimate["layouts"][str(base)] == "nchw"


def test_a_given_layout_is_the_only_one_measured(machine):
    machine.nchw_factor = 0.5
    plan = planner.make_plan(fingerprint(), 5, torch.device("cpu"), given={"channels_last": True})
    assert {c[3] for c in machine} == {"channels_last"} and "channels_last" not in plan.settings
    assert choice(plan, "channels_last").given
    machine.clear()
    gpu = planner.make_plan(fingerprint(), 5, torch.device("cuda"))
    assert {c[3] for c in machine} == {"channels_last"} and gpu.settings["channels_last"] is True
