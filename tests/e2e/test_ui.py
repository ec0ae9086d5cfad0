"""`qeu-tune ui` in a real headless browser: sweeps as parents, nested trials, report artifacts.

Needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`);
skipped with that reason where they are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fake_sweep import record_sweep

from qeu_tune.analysis import report_sweep_end
from qeu_tune.core.processes import free_port, wait_http
from qeu_tune.core.processes import port_open as _port_open

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver",
    ),
]


@pytest.fixture
def ui(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = record_sweep(
        uri,
        {"w0": {"algo.params.lr": 0.001}, "w1": {"algo.params.lr": 0.003}},
        lambda v, seed, steps: steps / 100 * v["algo.params.lr"] * 1000 + seed,
        seeds=(0, 1),
    )
    report_sweep_end(uri, rec.parent_run_id)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "qeu_tune.commands.main", "--tracking-uri", uri, "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}", rec, process
    finally:
        process.terminate()  # qeu-tune ui must take its MLflow server down with it
        process.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _port_open(port):
            time.sleep(0.5)
        assert not _port_open(port), "the MLflow UI outlived `qeu-tune ui`"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for_text(driver, text: str, timeout: float = 60.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element("tag name", "body").text)


def test_ui_lists_the_sweep_with_nested_trials_and_report_artifacts(ui, tmp_path):
    from selenium.webdriver.common.by import By

    url, rec, process = ui
    experiment_id = rec.tracker.experiment_id
    trial_names = sorted(f"{t.trial_id}-ppo-s{t.config['seed']}" for t in rec.trials)
    driver = browser()
    try:
        driver.get(f"{url}/#/experiments/{experiment_id}/runs")
        wait_for_text(driver, "fake-sweep")  # the sweep's parent run
        body = driver.find_element(By.TAG_NAME, "body").text
        assert not any(name in body for name in trial_names)  # trials are nested, not top level
        row = driver.find_element(By.XPATH, "//*[text()='fake-sweep']/ancestor::*[@role='row'][1]")
        row.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
        for name in trial_names:
            wait_for_text(driver, name)  # expanding the parent lists every trial
        driver.save_screenshot(str(tmp_path / "experiment.png"))
        driver.get(f"{url}/#/experiments/{experiment_id}/runs/{rec.parent_run_id}/artifacts")
        wait_for_text(driver, "report")
        driver.find_element(By.XPATH, "//*[text()='report']").click()
        wait_for_text(driver, "ranking.html")
        driver.save_screenshot(str(tmp_path / "parent_artifacts.png"))
    finally:
        driver.quit()
    assert (tmp_path / "experiment.png").stat().st_size > 10_000
    with urllib.request.urlopen(
        f"{url}/ajax-api/2.0/mlflow/artifacts/list?run_id={rec.parent_run_id}&path=report"
    ) as response:
        files = {f["path"] for f in json.load(response)["files"]}
    assert {"report/ranking.html", "report/learning_curves.png"} <= files


def test_ui_binds_to_loopback_by_default():
    from qeu_tune.commands.ui import ui_command

    command = ui_command(tracking_uri="sqlite:////x.db")
    assert command[command.index("--host") + 1] == "127.0.0.1"
