"""`qeu-tune ui` in a real headless browser: sweeps as parents, nested trials, report artifacts,
runs in the Model training layout with the sweep's summary as their description.

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


def layout(driver) -> str:
    """Which of MLflow 3's layouts the page shows, told by its navigation."""
    body = driver.find_element("tag name", "body").text
    genai, training = "Judges" in body, "Model registry" in body
    assert genai != training, "neither or both layouts' navigation on the page"
    return "genai" if genai else "training"


def test_runs_open_in_the_training_layout_with_the_sweep_summary_as_description(ui, tmp_path):
    from selenium.webdriver.common.by import By

    from qeu_tune.commands.ui import TRAINING_LAYOUT, experiment_url

    url, rec, _ = ui
    experiment_id = rec.tracker.experiment_id
    with urllib.request.urlopen(f"{url}/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment_id}") as response:
        experiment = json.load(response)["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    run_page = f"{url}/#/experiments/{experiment_id}/runs/{rec.parent_run_id}"
    driver = browser()
    try:
        driver.get(experiment_url(url, rec.tracker.tracking_uri))  # the link `qeu-tune ui` prints
        wait_for_text(driver, "fake-sweep")
        assert layout(driver) == "training"
        driver.get(f"{run_page}?{TRAINING_LAYOUT}")
        wait_for_text(driver, "Best configuration:")  # the note, rendered as Markdown
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Description" in body and "Sweep fake-sweep" in body and "Overrides:" in body
        assert layout(driver) == "training"
        driver.save_screenshot(str(tmp_path / "run_training_layout.png"))
        # MLflow 3.17 takes the layout from the browser, not from mlflow.experimentKind: a run opened
        # without the link's parameter is GenAI until 'Model training' is clicked once (README).
        driver.get(run_page)
        wait_for_text(driver, "Best configuration:")
        if layout(driver) == "genai":
            driver.find_element(By.XPATH, "//*[text()='Model training']").click()
            wait_for_text(driver, "Model registry")
            driver.get(run_page)
            wait_for_text(driver, "Best configuration:")
        assert layout(driver) == "training"
    finally:
        driver.quit()


def test_ui_binds_to_loopback_by_default():
    from qeu_tune.commands.ui import ui_command

    command = ui_command(tracking_uri="sqlite:////x.db")
    assert command[command.index("--host") + 1] == "127.0.0.1"
