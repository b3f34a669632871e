"""report.html: self-contained, and it renders in a real headless browser.

The browser is Debian's chromium with chromedriver (the `browser` fixture of tests/conftest.py
installs them with apt-get when they are missing, or skips saying why).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetkit import train
from unetkit.report.html import build_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, disks) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    train(data=str(disks), out=str(out), depth=2, base_channels=4, patch_size=32, batch_size=2, epochs=2,
          progress=False, workers=0)
    build_report(out, samples=3)
    return out


def test_report_is_self_contained(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "src='data:image/png;base64," in page
    assert "src='http" not in page and "src='file" not in page
    for heading in ("Evaluation", "Training curves", "Confusion matrix", "worst first", "Config"):
        assert heading in page


def test_report_says_what_a_run_review_needs(run_dir):
    """What nnU-Net and TensorBoard users look for: the run's name, time, epochs of planned, why it
    stopped, the best epoch, device and parameters, epoch times, a score per image."""
    page = (run_dir / "report.html").read_text()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["device"] == "cpu" and run["precision"] in ("fp32", "bf16")  # the probe measures which pays here
    assert f"<title>unetkit report: {run_dir.name}</title>" in page
    for words in ("wall time", "2 of 2 planned", "stopped</th><td>completed", "best epoch", "parameters",
                  f"cpu {run['precision']}", "Epochs", "seconds", "Scores per image, worst first", "img07"):
        assert words in page, words
    assert "<tr class=best>" in page


def test_the_loss_axis_turns_logarithmic_when_the_first_epoch_dwarfs_the_rest():
    from unetkit.report.plots import loss_scale

    assert loss_scale([{"train_loss": 40.0}] + [{"train_loss": 1.0 + i / 10} for i in range(8)]) == "log"
    assert loss_scale([{"train_loss": 2.0 - i / 10} for i in range(8)]) == "linear"


def test_an_existing_report_is_not_written_over(run_dir):
    from unetkit.errors import UnetkitError

    before = (run_dir / "report.html").read_bytes()
    with pytest.raises(UnetkitError, match="--overwrite"):
        build_report(run_dir)
    assert (run_dir / "report.html").read_bytes() == before


def test_report_renders_in_headless_chromium_without_console_errors(run_dir, browser):
    chromium, driver_path = browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get((run_dir / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert errors == []
    assert len(images) >= 2 + 3 * 4  # curves, confusion, and 4 panels per sample
    broken = [alt for alt, complete, width, height in images if not (complete and width > 0 and height > 0)]
    assert broken == []
