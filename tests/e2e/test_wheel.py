"""The wheel is a real package: configs inside, runs from anywhere, never reads the checkout.

Builds the wheel (``pip wheel --no-deps``, from a copy of the sources so the checkout gets no
``build/``), installs it without dependencies into a fresh venv and runs a smoke sweep with
the installed ``qeu-tune`` from a directory outside the repository.

Why a ``.pth`` file: the project's dependencies (Ray, torch, MLflow, ...) are gigabytes; the
test does not download them again. The fresh venv gets one ``.pth`` line naming this
environment's site-packages, so those packages import, while qeu_tune itself comes from the
fresh venv (its own site-packages comes first on ``sys.path``; a ``.pth`` line only appends
a directory, it does not run that directory's ``.pth`` files, so the editable install's
finder for /work/main is *not* activated). The test checks ``qeu_tune.__file__``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from qeu_tune.core import tags

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _copy_sources(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "qeu_tune", dest / "qeu_tune", symlinks=False, ignore=ignore)  # conf/ follows the link
    shutil.copytree(REPO / "conf", dest / "conf", ignore=ignore)
    return dest


def test_wheel_installs_and_runs_a_sweep_outside_the_repository(tmp_path):
    src = _copy_sources(tmp_path / "src")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(wheels), "-q"],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("qeu_tune-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "qeu_tune_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=300,
    )

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "QEU_TUNE_CONFIG_DIR")}
    env["QEU_TUNE_HOME"] = str(tmp_path / "home")
    where = subprocess.run(
        [str(python), "-c", "import qeu_tune, qeu_tune.core.paths as p; print(qeu_tune.__file__); print(p.CONF_DIR)"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=run_dir,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(env_dir) and not Path(where[0]).is_relative_to(REPO)
    assert Path(where[1]) == site / "qeu_tune" / "conf" and (Path(where[1]) / "config.yaml").is_file()

    proc = subprocess.run(
        [str(env_dir / "bin" / "qeu-tune"), "debug=smoke", "experiment=single", "stop.env_steps=500"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=run_dir,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "qeu-tune"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "sweep"]
    children = [r for r in runs if r.data.tags.get(tags.TAG_PARENT) == parent.info.run_id]
    assert parent.info.status == "FINISHED" and children and all(c.info.status == "FINISHED" for c in children)
    assert not list(run_dir.iterdir())  # nothing written to the working directory

    # A user's file named like a packaged one wins over it (the user dir comes first on Hydra's search path).
    user_conf = tmp_path / "user-conf"
    (user_conf / "algo").mkdir(parents=True)
    (user_conf / "algo" / "ppo.yaml").write_text("defaults: [base_algo]\nname: ppo\nparams: {lr: 0.0123}\n")
    shown = subprocess.run(
        [str(env_dir / "bin" / "qeu-tune"), "--config-dir", str(user_conf), "--cfg", "job"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=run_dir,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert yaml.safe_load(shown.stdout)["algo"]["params"] == {"lr": 0.0123}
