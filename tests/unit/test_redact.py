"""qeu_tune.core.redact: what counts as a secret and how it is masked."""

from __future__ import annotations

import logging

import pytest

from qeu_tune.config.compose import compose
from qeu_tune.core import redact
from qeu_tune.core.tags import TAG_NODE_ID, TAG_NODE_IP
from qeu_tune.engine.node import node_tags


@pytest.fixture(autouse=True)
def clean_registry():
    redact.clear_registered()
    yield
    redact.clear_registered()


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("http://alice:pw123@mlflow:5000", "http://alice:***@mlflow:5000"),
        ("postgresql+psycopg://u:p%40ss@db:5432/mlflow", "postgresql+psycopg://u:***@db:5432/mlflow"),
        ("https://token@host/x", "https://token@host/x"),  # no password: nothing to hide
        ("sqlite:////home/me/mlflow.db", "sqlite:////home/me/mlflow.db"),
        ("s3://bucket/path?access_key=AKIA123&region=eu", "s3://bucket/path?access_key=***&region=eu"),
        (None, None),
    ],
)
def test_redact_uri(uri, expected):
    assert redact.redact_uri(uri) == expected


def test_uri_secrets_include_the_decoded_password():
    assert redact.uri_secrets("postgresql://u:p%40ss@db/x") == {"p%40ss", "p@ss"}


def test_redact_text_masks_uri_passwords_query_secrets_and_listed_values():
    text = "qeu-tune tracking.uri=http://bob:hunter22@h:5000 'x=s3://b?token=abc' owner=tok-1234"
    assert redact.redact_text(text, {"tok-1234"}) == (
        "qeu-tune tracking.uri=http://bob:***@h:5000 'x=s3://b?token=***' owner=***"
    )


def test_secrets_from_environment_by_name_and_uri_passwords():
    env = {
        "HF_TOKEN": "hf_abcdef",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "DB_PASSWORD": "1",
        "HOME": "/root",
        "MLFLOW_TRACKING_URI": "http://u:pw-in-uri@h",
        "SOME_FLAG": "true",
    }
    assert redact.secrets_from_environment(env) == {"hf_abcdef", "wJalrXUtnFEMI", "pw-in-uri"}


def test_find_env_interpolations_reads_the_unresolved_config(monkeypatch):
    monkeypatch.setenv("QEU_T_OWNER", "own-ABC987")
    monkeypatch.setenv("QEU_T_PLAIN", "plain-DEF654")
    cfg = compose(
        [
            "+tags.owner=${oc.env:QEU_T_OWNER}",
            "+tags.team=team-${oc.env:QEU_T_PLAIN}",
            "+tags.fallback=${oc.env:QEU_T_UNSET,dflt-GHI321}",
            "+tags.constant=abc",
        ]
    )
    found = redact.find_env_interpolations(cfg)
    assert found == {"tags.owner": "own-ABC987", "tags.team": "plain-DEF654", "tags.fallback": "dflt-GHI321"}


def test_redact_masks_registered_and_environment_secrets_without_touching_the_input(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "key-LMN789")
    redact.register_secrets(["reg-OPQ000"])
    redact.register_config({"tracking": {"uri": "http://a:cfg-pw-1@h"}})
    config = {
        "tags": {"a": "key-LMN789", "b": "x reg-OPQ000 y"},
        "tracking": {"uri": "http://a:cfg-pw-1@h"},
        "list": ["cfg-pw-1", 3],
    }
    masked = redact.redact(config)
    assert masked == {"tags": {"a": "***", "b": "x *** y"}, "tracking": {"uri": "http://a:***@h"}, "list": ["***", 3]}
    assert config["tracking"]["uri"] == "http://a:cfg-pw-1@h"  # the trial still gets the real value


def test_log_filter_masks_known_secrets(monkeypatch, caplog):
    monkeypatch.setenv("QEU_TEST_TOKEN", "tok-LOGGED1")
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "failed for %s at %s", ("tok-LOGGED1", "http://u:pw9999@h"), None
    )
    assert redact.RedactingFilter().filter(record)
    assert record.getMessage() == "failed for *** at http://u:***@h"


def test_node_tags_only_from_results_that_carry_node_info():
    assert node_tags({"progress/env_steps": 1000}) == {}
    assert node_tags({"qeu_node_ip": "10.0.0.5", "qeu_node_id": "abc"}) == {TAG_NODE_IP: "10.0.0.5", TAG_NODE_ID: "abc"}


def test_secrets_from_an_environment_another_thread_changes_meanwhile():
    """os.environ raises KeyError when a variable goes while it is copied: copy again."""
    from collections.abc import Mapping

    from qeu_tune.core.redact import secrets_from_environment

    class Shifting(Mapping):
        tries = 0

        def __init__(self):
            self.data = {"API_TOKEN": "tok_123456", "GONE": "x"}

        def __getitem__(self, key):
            Shifting.tries += 1
            if key == "GONE" and Shifting.tries < 3:
                raise KeyError(key)  # removed between listing the keys and reading them
            return self.data[key]

        def __iter__(self):
            return iter(list(self.data))

        def __len__(self):
            return len(self.data)

    assert secrets_from_environment(Shifting()) == {"tok_123456"}
