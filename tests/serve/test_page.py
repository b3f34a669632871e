"""The page in a real headless Chromium: upload, overlay, opacity, a class toggled, the download.

A screenshot of the page with a result is left at /tmp/serve-page.png for a person to look at.
"""

from __future__ import annotations

import time
from pathlib import Path

from unetkit.data.io import write_image

SCREENSHOT = Path("/tmp/serve-page.png")
CHECKSUM = """const c = document.getElementById('view');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let s = 0; for (let i = 0; i < d.length; i += 3) s = (s * 31 + d[i]) % 1000000007; return s;"""


def _driver(browser, downloads: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1440,900"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def _wait(condition, timeout: float = 60.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def test_the_page_segments_an_upload_and_downloads_predicts_mask(served, browser, model_dir, tmp_path,
                                                                 expected_mask, picture):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    server, _ = served
    image = tmp_path / "cells.png"
    write_image(image, picture(256, 320, seed=0))
    expected = expected_mask(model_dir, image, tmp_path / "out")[".png"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _driver(browser, downloads)
    try:
        driver.get(server.url)
        _wait(lambda: driver.execute_script("return document.getElementById('model').options.length"),
              what="the model list")
        assert "class3" in driver.find_element(By.ID, "legend").text  # the classes before any image
        driver.find_element(By.ID, "files").send_keys(str(image))
        stage = driver.find_element(By.ID, "stage")
        _wait(lambda: stage.get_attribute("data-state") == "ready", what="the overlay")
        queue = driver.find_element(By.ID, "queue").text
        assert "cells.png" in queue and "256 px" in queue
        legend = driver.find_element(By.ID, "legend").text
        assert "class3" in legend and "%" in legend and " px" in legend
        first = driver.execute_script(CHECKSUM)

        slider = driver.find_element(By.ID, "opacity")
        ActionChains(driver).click_and_hold(slider).move_by_offset(45, 0).release().perform()
        shown = driver.find_element(By.ID, "opacity-value").text
        assert shown != "50%" and int(shown.rstrip("%")) > 50
        moved = driver.execute_script(CHECKSUM)
        assert moved != first

        toggle = driver.find_element(By.CSS_SELECTOR, 'input[data-class="1"]')
        toggle.click()
        assert not driver.find_element(By.CSS_SELECTOR, 'input[data-class="1"]').is_selected()
        assert driver.execute_script(CHECKSUM) != moved
        driver.find_element(By.CSS_SELECTOR, 'input[data-class="1"]').click()  # back on for the picture
        assert driver.execute_script(CHECKSUM) == moved

        canvas = driver.find_element(By.ID, "view")
        ActionChains(driver).move_to_element_with_offset(canvas, 10, 10).perform()
        readout = driver.find_element(By.ID, "readout").text
        assert readout.startswith("x ") and "class" in readout and "p(" in readout, readout

        driver.find_element(By.CSS_SELECTOR, '#views button[data-view="prob"]').click()
        assert driver.find_element(By.ID, "colorbar").is_displayed()
        driver.find_element(By.CSS_SELECTOR, '#views button[data-view="overlay"]').click()

        driver.find_element(By.ID, "download-mask").click()
        saved = downloads / "cells.png"
        _wait(lambda: saved.exists() and not list(downloads.glob("*.crdownload")), what="the download")
        assert saved.read_bytes() == expected

        driver.save_screenshot(str(SCREENSHOT))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert errors == []


def test_a_bad_file_on_the_page_says_why(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    server, _ = served
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    driver = _driver(browser, tmp_path)
    try:
        driver.get(server.url)
        driver.find_element(By.ID, "files").send_keys(str(bad))
        stage = driver.find_element(By.ID, "stage")
        _wait(lambda: stage.get_attribute("data-state") == "error", what="the error")
        text = driver.find_element(By.ID, "placeholder").text
        assert "notes.png" in text and "not a valid PNG file" in text
        assert "not a valid PNG file" in driver.find_element(By.ID, "queue").text
    finally:
        driver.quit()
