"""MLflow's and Ray's usage telemetry are off in qeu-tune's processes unless the user opts in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os
import qeu_tune  # noqa: F401
from mlflow.telemetry.utils import is_telemetry_disabled
from ray._common.usage.usage_lib import usage_stats_enabled
print(json.dumps({"mlflow_off": is_telemetry_disabled(), "ray_on": usage_stats_enabled(),
                  "env": {k: os.environ.get(k) for k in ("MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")}}))
"""

# MLflow turns telemetry off by itself under a CI or pytest (mlflow.telemetry.utils): the probe
# runs without those markers, and without a choice of the user's.
CI_MARKERS = (
    "PYTEST_CURRENT_TEST",
    "CI",
    "GITHUB_ACTIONS",
    "DO_NOT_TRACK",
    "MLFLOW_DISABLE_TELEMETRY",
    "RAY_USAGE_STATS_ENABLED",
)


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in CI_MARKERS}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_qeu_tune_turns_mlflow_and_ray_telemetry_off():
    seen = probe()
    assert seen["mlflow_off"] is True and seen["ray_on"] is False
    assert seen["env"] == {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}


def test_a_user_who_opts_in_keeps_telemetry_on():
    seen = probe(MLFLOW_DISABLE_TELEMETRY="false", RAY_USAGE_STATS_ENABLED="1")
    assert seen["mlflow_off"] is False and seen["ray_on"] is True
