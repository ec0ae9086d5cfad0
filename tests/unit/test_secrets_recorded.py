"""qeu_tune.core.secrets: the recorded form of a config (env forms back, secrets ***), and
how ``resume`` gets the secrets back; the spool and Hydra's run files record no secret either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from qeu_tune.config.compose import compose
from qeu_tune.config.trial import TRIAL_SECTIONS, TrialTemplate, redacted_template
from qeu_tune.core import redact, secrets
from qeu_tune.core.errors import ConfigError
from qeu_tune.tracking import journal, spool_state
from qeu_tune.tracking import tracker as tracking
from qeu_tune.tracking.sync import sync_spool

PW = "pw-RST246"


@pytest.fixture(autouse=True)
def clean_registries():
    redact.clear_registered()
    secrets.clear_env_forms()
    yield
    redact.clear_registered()
    secrets.clear_env_forms()


def test_an_interpolated_password_is_a_name_not_a_secret():
    uri = "http://alice:${oc.env:QEU_T_PW}@h:5000"
    assert redact.redact_uri(uri) == uri
    assert redact.redact_text(f"x {uri} y http://a:{PW}@h", ()) == f"x {uri} y http://a:***@h"
    assert redact.uri_secrets(uri) == set()


def test_recorded_config_keeps_env_forms_and_masks_the_rest(monkeypatch):
    monkeypatch.setenv("QEU_T_OWNER", "own-ABC987")
    monkeypatch.setenv("QEU_T_PW", PW)
    monkeypatch.setenv("QEU_T_API_KEY", "key-LMN789")  # secret by its name
    cfg = compose(
        [
            "tracking.uri=http://alice:${oc.env:QEU_T_PW}@127.0.0.1:5000",
            "+tags.owner=${oc.env:QEU_T_OWNER}",
            "+tags.team=team-${oc.env:QEU_T_OWNER}",
            "+tags.note=key-LMN789",
            "+tags.mixed=${oc.env:QEU_T_OWNER}-${algo.name}",  # not from the environment alone
        ]
    )
    redact.register_secrets(redact.find_env_interpolations(cfg).values())
    forms = secrets.register_env_forms(cfg)
    assert set(forms) == {"tracking.uri", "tags.owner", "tags.team"}
    config = OmegaConf.to_container(cfg, resolve=True)
    recorded = secrets.recorded_config(config)
    assert recorded["tracking"]["uri"] == "http://alice:${oc.env:QEU_T_PW}@127.0.0.1:5000"
    assert recorded["tags"] == {
        "owner": "${oc.env:QEU_T_OWNER}",
        "team": "team-${oc.env:QEU_T_OWNER}",
        "note": "***",
        "mixed": "***-ppo",
    }
    assert config["tags"]["owner"] == "own-ABC987"  # the live config keeps the real values
    assert secrets.recorded_uri(config["tracking"]["uri"]) == "http://alice:${oc.env:QEU_T_PW}@127.0.0.1:5000"
    # A value changed since it was composed is no longer that interpolation: masked.
    config["tags"]["owner"] = "x own-ABC987"
    assert secrets.recorded_config(config)["tags"]["owner"] == "x ***"
    assert secrets.recorded_uri(f"http://alice:{PW}@other:1") == "http://alice:***@other:1"


def test_restore_env_forms_reads_the_environment_and_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("QEU_T_OWNER", "own-ABC987")
    recorded = {"tags": {"owner": "${oc.env:QEU_T_OWNER}", "d": "${oc.env:QEU_T_UNSET,dflt}"}, "n": [1, "x"]}
    restored = secrets.restore_env_forms(recorded, "sweep 's'")
    assert restored == {"tags": {"owner": "own-ABC987", "d": "dflt"}, "n": [1, "x"]}
    assert redact.redact("owner own-ABC987") == "owner ***"  # read back: a secret again
    assert secrets.recorded_config(restored)["tags"]["owner"] == "${oc.env:QEU_T_OWNER}"
    monkeypatch.delenv("QEU_T_OWNER")
    with pytest.raises(ConfigError) as err:
        secrets.restore_env_forms(recorded, "sweep 's'")
    assert str(err.value) == (
        "sweep 's' takes tags.owner from the environment variable QEU_T_OWNER, which is not set here; "
        "set it and run again."
    )


def test_a_given_uri_never_carries_the_printed_mask(monkeypatch):
    with pytest.raises(ConfigError, match=r"holds \*\*\*, which qeu-tune prints in place of its password"):
        secrets.given_tracking_uri("http://alice:***@127.0.0.1:5000")
    monkeypatch.setenv("QEU_T_PW", PW)
    assert secrets.given_tracking_uri("http://alice:${oc.env:QEU_T_PW}@h:1") == f"http://alice:{PW}@h:1"
    assert redact.redact(PW) == "***"
    with pytest.raises(ConfigError, match="names the environment variable QEU_T_NOPE, which is not set"):
        secrets.given_tracking_uri("http://alice:${oc.env:QEU_T_NOPE}@h:1")


def test_tracking_uri_for_resume(monkeypatch):
    what = "sweep 's'"
    with_pw, without = f"http://alice:{PW}@h:1", "http://alice@h:1"
    # Nothing secret recorded: the URI given, whatever it is.
    assert secrets.tracking_uri_for_resume(without, "http://h:1", what) == without
    assert secrets.tracking_uri_for_resume(without, None, what) == without
    # A password given again wins.
    assert secrets.tracking_uri_for_resume(with_pw, "http://alice:***@h:1", what) == with_pw
    # Recorded masked, not given: one sentence saying what is missing.
    with pytest.raises(ConfigError) as err:
        secrets.tracking_uri_for_resume(without, "http://alice:***@h:1", what)
    assert str(err.value).startswith(
        "sweep 's' was recorded with a password in its tracking URI (http://alice:***@h:1)"
    )
    assert "--tracking-uri URI" in str(err.value)
    # Recorded as an env form: read from the variable it names.
    recorded = "http://alice:${oc.env:QEU_T_PW}@h:1"
    with pytest.raises(ConfigError, match="names the environment variable QEU_T_PW, which is not set here"):
        secrets.tracking_uri_for_resume(without, recorded, what)
    monkeypatch.setenv("QEU_T_PW", PW)
    assert secrets.tracking_uri_for_resume(without, recorded, what) == with_pw
    assert secrets.recorded_uri(with_pw) == recorded  # printed hints show the form again


def test_redacted_template_masks_all_but_the_sections_kept():
    redact.register_secrets(["tok-XYZ123"])
    template = TrialTemplate(
        base={
            "tracking": {"uri": f"http://a:{PW}@h"},
            "tags": {"owner": "tok-XYZ123"},
            "env": {"env_config": {"token": "tok-XYZ123"}},
        },
        group_options={"env": {"a": {"env_config": {"token": "tok-XYZ123"}}}},
    )
    driver = redacted_template(template)
    assert driver.base == {
        "tracking": {"uri": "http://a:***@h"},
        "tags": {"owner": "***"},
        "env": {"env_config": {"token": "***"}},
    }
    assert driver.group_options == {"env": {"a": {"env_config": {"token": "***"}}}}
    trial = redacted_template(template, keep=TRIAL_SECTIONS)
    assert trial.base["env"]["env_config"]["token"] == "tok-XYZ123"  # what the env is built from
    assert trial.base["tracking"]["uri"] == "http://a:***@h" and trial.base["tags"]["owner"] == "***"
    assert template.base["tags"]["owner"] == "tok-XYZ123"


def test_the_spool_records_no_password_and_sync_asks_for_it(tmp_path, monkeypatch):
    uri = f"http://alice:{PW}@127.0.0.1:9"
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="offline")
    run = tracker.create_run(run_name="sweep", tags={"qeu.kind": "sweep"})
    tracker.end_run(run, "FINISHED")
    tracker.close(timeout_s=1)
    spool = tracker.spool_dir
    assert json.loads((spool / journal.META_FILE).read_text())["tracking_uri"] == "http://alice:***@127.0.0.1:9"
    summary = sync_spool(spool, None)["spools"][0]
    assert summary["tracking_uri"] == "http://alice:***@127.0.0.1:9"
    assert "whose password qeu-tune does not store" in summary["error"] and summary["entries"] == 0
    state = spool_state.SpoolState(spool, uri)
    state.ack(1, 10)  # acknowledged under the redacted URI: the same state for the URI given again
    assert spool_state.SpoolState(spool, uri).offset == 10
    for path in spool.rglob("*"):
        assert not path.is_file() or PW.encode() not in path.read_bytes(), path
    from qeu_tune.tracking.sync import _with_password

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert _with_password("http://alice:***@127.0.0.1:9") == uri
    assert _with_password("http://bob:***@127.0.0.1:9") == "http://bob:***@127.0.0.1:9"


def test_an_old_spool_keyed_by_the_real_uri_is_read_and_rewritten_without_it(tmp_path):
    uri = f"http://alice:{PW}@h:1"
    (tmp_path / spool_state.STATE_FILE).write_text(
        json.dumps({"acked": {uri: {"next_seq": 3, "offset": 42}}, "runs": {uri: {"k": "r"}}})
    )
    state = spool_state.SpoolState(tmp_path, uri)
    assert (state.next_seq, state.offset, state.runs) == (3, 42, {"k": "r"})
    state.ack(4, 50)
    assert PW not in (tmp_path / spool_state.STATE_FILE).read_text()


def qeu_tune(args, home, **env):
    return subprocess.run(
        [sys.executable, "-m", "qeu_tune.commands.main", *args],
        env={**os.environ, "QEU_TUNE_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_hydra_run_files_are_written_redacted(tmp_path, multirun):
    """Bad input stops the job before Ray (exit 2); its run files are already written, redacted."""
    home = tmp_path / "home"
    args = [
        f"tracking.uri=http://alice:{PW}@127.0.0.1:1",
        "+tags.owner=${oc.env:QEU_T_OWNER}",
        "+tags.note=key-LMN789",
        "stop.env_steps=0",
    ]
    done = qeu_tune(["-m", *args] if multirun else args, home, QEU_T_OWNER="own-ABC987", QEU_T_API_KEY="key-LMN789")
    assert done.returncode == 2, done.stderr
    files = {p.name: p for p in (home / "hydra").rglob("*") if p.is_file()}
    assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= set(files)
    assert ("multirun.yaml" in files) == multirun
    for path in files.values():
        text = path.read_text()
        for secret in (PW, "own-ABC987", "key-LMN789"):
            assert secret not in text, (path, text)
    overrides = OmegaConf.to_container(OmegaConf.load(files["overrides.yaml"]), resolve=False)
    overrides = [o.replace("\\", "") for o in overrides]  # a multirun job's are escaped
    assert overrides[:3] == [
        "tracking.uri=http://alice:***@127.0.0.1:1",
        "+tags.owner=${oc.env:QEU_T_OWNER}",
        "+tags.note=***",
    ]
    assert OmegaConf.load(files["config.yaml"]).tracking.uri == "http://alice:***@127.0.0.1:1"
    for secret in (PW, "own-ABC987", "key-LMN789"):
        assert secret not in done.stdout + done.stderr


def test_the_printed_resume_command_runs_as_is_when_the_password_came_from_the_environment(monkeypatch):
    from qeu_tune.commands.sweep import resume_command

    monkeypatch.setenv("QEU_T_PW", PW)
    assert resume_command(f"http://alice:{PW}@h:1", "abc") == "qeu-tune --tracking-uri http://alice:***@h:1 resume abc"
    secrets.register_env_forms(compose(["tracking.uri=http://alice:${oc.env:QEU_T_PW}@h:1"]))
    assert resume_command(f"http://alice:{PW}@h:1", "abc") == (
        "qeu-tune resume abc 'tracking.uri=http://alice:${oc.env:QEU_T_PW}@h:1'"
    )
