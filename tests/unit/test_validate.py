"""The checks before a sweep starts: rules, reachability, preflight, overrides (loopback-only networking)."""

from __future__ import annotations

import socket
import time

import pytest

from qeu_tune.commands.argv import check_hydra_overrides
from qeu_tune.config import reachability
from qeu_tune.config.reachability import check_ray_address, check_storage_path, check_tracking_uri
from qeu_tune.config.rules import NUMERIC_RULES, Rule, check_numeric
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.redact import redact_uri
from qeu_tune.engine import preflight
from qeu_tune.engine.preflight import check_search_metric


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listening_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield s.getsockname()[1]


# ------------------------------------------------------------------ numeric rules


@pytest.mark.parametrize(
    "key, value",
    [
        ("algo.params.lr", -1),
        ("algo.params.lr", 0),
        ("algo.params.lr", "abc"),
        ("algo.params.lr", True),
        ("algo.params.lr", float("nan")),
        ("algo.params.lr", [[0, 0.001], [1000, -0.1]]),
        ("algo.params.gamma", 0),
        ("algo.params.gamma", 1.5),
        ("algo.params.lambda_", -0.1),
        ("algo.params.num_epochs", 0),
        ("algo.params.num_epochs", 2.5),
        ("algo.params.n_step", 0),
        ("algo.params.train_batch_size_per_learner", 0),
        ("stop.env_steps", -5),
        ("stop.time_s", 0),
        ("search.num_samples", 0),
        ("search.num_seeds", 0),
        ("algo.num_envs_per_env_runner", 0),
    ],
)
def test_out_of_range_values_name_the_key_range_and_an_example(key, value):
    with pytest.raises(ConfigError) as info:
        check_numeric(key, value)
    message = str(info.value)
    assert message.startswith(f"{key}={value!r}: {key} must be ")
    assert f"e.g. {NUMERIC_RULES[key].example}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "key, value",
    [
        ("algo.params.lr", 0.0003),
        ("algo.params.lr", None),
        ("algo.params.lr", [[0, 1e-3], [1000, 1e-4]]),
        ("algo.params.gamma", 1),
        ("algo.params.gamma", 0.99),
        ("algo.params.lambda_", 0),
        ("algo.params.num_epochs", 1),
        ("stop.env_steps", 1),
        ("stop.time_s", None),
        ("max_failures", -1),
        ("algo.params.not_in_the_table", -123),
    ],
)
def test_valid_values_pass(key, value):
    check_numeric(key, value)


def test_rule_describes_its_range():
    assert Rule(low=0, low_open=True).describe() == "a number > 0"
    assert Rule(low=0, high=1, low_open=True).describe() == "a number in (0, 1]"
    assert Rule(low=1, integer=True, nullable=True).describe() == "an integer >= 1 (or null)"


def test_origin_is_named_in_the_message():
    with pytest.raises(ConfigError, match=r"algo.params.lr=-1 \(sampled by x\): "):
        check_numeric("algo.params.lr", -1, origin="sampled by x")


def test_candidates_keep_first_and_last_and_thin_long_choices():
    from qeu_tune.engine.search_space import parse_space

    (dim,) = parse_space({"a": "range(0, 100)"})
    values = preflight._candidates(dim)
    assert len(values) == 8 and values[0] == 0 and values[-1] == 99
    (dim,) = parse_space({"a": "interval(0.1, 0.5)"})
    assert preflight._candidates(dim) == [0.1, 0.5]


# ------------------------------------------------------------------ tracking URI


def test_redact_uri_hides_the_password_only():
    assert redact_uri("postgresql://u:p@127.0.0.1:1/db") == "postgresql://u:***@127.0.0.1:1/db"
    assert redact_uri("mysql+pymysql://user:s3cr:et@h/db") == "mysql+pymysql://user:***@h/db"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_uri("http://user@host:1/x") == "http://user@host:1/x"


def test_unreachable_http_server_fails_fast_and_suggests_offline():
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_tracking_uri(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 3
    assert f"127.0.0.1:{port}" in str(info.value) and "tracking.mode=offline" in str(info.value)


def test_silent_server_times_out(monkeypatch, listening_port):
    """A port that accepts nothing within the timeout counts as unreachable."""

    def silent(*args, **kwargs):
        time.sleep(1)
        raise OSError("too late")

    monkeypatch.setattr(reachability.socket, "create_connection", silent)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="no answer within 0.2 s"):
        check_tracking_uri(f"http://127.0.0.1:{listening_port}", timeout=0.2)
    assert time.monotonic() - start < 2


def test_reachable_http_server_passes(listening_port):
    check_tracking_uri(f"http://127.0.0.1:{listening_port}")


def test_database_uri_without_its_driver_names_driver_and_extra_and_redacts(monkeypatch):
    real = reachability.importlib.util.find_spec
    monkeypatch.setattr(
        reachability.importlib.util, "find_spec", lambda name: None if name in ("psycopg2", "psycopg") else real(name)
    )
    with pytest.raises(ConfigError) as info:
        check_tracking_uri("postgresql://u:p@127.0.0.1:1/db")
    message = str(info.value)
    assert "u:***@127.0.0.1:1/db" in message and "u:p@" not in message
    assert "'psycopg2'" in message and "pip install 'qeu-tune[server]'" in message


def test_database_uri_with_driver_checks_the_port(monkeypatch):
    monkeypatch.setattr(reachability.importlib.util, "find_spec", lambda name: object())
    port = closed_port()
    with pytest.raises(ConfigError, match=f"cannot reach the postgresql database at 127.0.0.1:{port}"):
        check_tracking_uri(f"postgresql+psycopg://u:p@127.0.0.1:{port}/db")


def test_sqlite_paths(tmp_path):
    check_tracking_uri(f"sqlite:///{tmp_path / 'new' / 'dir' / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []  # nothing created
    with pytest.raises(ConfigError, match="SQLite"):
        check_tracking_uri("sqlite:////proc/forbidden/mlflow.db")
    (tmp_path / "adir.db").mkdir()
    with pytest.raises(ConfigError, match="is not a file"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'adir.db'}")
    check_tracking_uri("sqlite:///:memory:")


def test_unknown_scheme_and_unchecked_schemes():
    with pytest.raises(ConfigError, match="no tracking store for the scheme 'foo'"):
        check_tracking_uri("foo://bar")
    check_tracking_uri("databricks")  # MLflow's Databricks store: not checked here
    check_tracking_uri("databricks://profile")


# ------------------------------------------------------------------ storage path


def test_storage_path_is_checked_without_creating_it(tmp_path):
    target = tmp_path / "a" / "b"
    check_storage_path(str(target))
    assert not (tmp_path / "a").exists()
    check_storage_path("s3://bucket/results")  # remote: not contacted


def test_unwritable_or_non_directory_storage_path(tmp_path):
    with pytest.raises(ConfigError, match="/proc/forbidden"):
        check_storage_path("/proc/forbidden")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        check_storage_path(str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="not a directory"):
        check_storage_path(str(tmp_path / "file" / "sub"))


def test_default_storage_path_under_home(isolated_home):
    check_storage_path(None)


# ------------------------------------------------------------------ Ray address


def test_ray_address_checks(monkeypatch, listening_port):
    check_ray_address(None)
    check_ray_address("local")
    check_ray_address(f"127.0.0.1:{listening_port}")
    check_ray_address(f"ray://127.0.0.1:{listening_port}")
    port = closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        start = time.monotonic()
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            check_ray_address(address)
        assert time.monotonic() - start < 3
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        check_ray_address("127.0.0.1:notaport")
    with pytest.raises(ConfigError, match="unknown address scheme"):
        check_ray_address("http://127.0.0.1:1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_ray_address("auto")  # left to Ray's own lookup
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="from \\$RAY_ADDRESS"):
        check_ray_address("auto")


# ------------------------------------------------------------------ search.metric


def _config(metric):
    return {"search": {"metric": metric}}


CLIFF = {"name": "cliff_signed", "mode": "additive", "metrics": {"route": {}}}
NONE = {"name": "none", "mode": "none", "metrics": {}}


@pytest.mark.parametrize(
    "metric",
    [
        "return_env/mean",
        "return/mean",
        "progress/env_steps",
        "learner/total_loss",
        "rllib/env_runners/episode_return_mean",
        "rt/route/mean",
        "reward/route/sum",
        "training_iteration",
    ],
)
def test_reported_metrics_pass(metric):
    check_search_metric(_config(metric), [NONE, CLIFF])


@pytest.mark.parametrize(
    "metric, rewards, fragment",
    [
        ("nonexistent/metric", [NONE], "is not a metric the trials report"),
        ("rt/route/mean", [NONE], "Reward designs of this sweep: none"),
        ("conv/auc", [NONE], "--by auc"),
        ("learner/", [NONE], "is not a metric"),
    ],
)
def test_unreported_metrics_fail(metric, rewards, fragment):
    with pytest.raises(ConfigError) as info:
        check_search_metric(_config(metric), rewards)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------ Hydra overrides


def test_good_overrides_and_multirun_pass():
    check_hydra_overrides(["algo=dqn", "stop.env_steps=1000"])
    check_hydra_overrides(["-m", "algo=ppo,dqn"])
    check_hydra_overrides(["--cfg", "job"])
    check_hydra_overrides(["--help"])  # left to Hydra


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["algo=foo"], "Available options in 'algo': appo, dqn, impala, ppo, sac, synthetic."),
        (["-m", "algo=ppo,foo"], "Could not find 'algo/foo'"),
        (["stop.env_steps=abc"], "could not be converted to Integer. (key stop.env_steps)"),
        (["algo.params.nonsense=3"], "To append to your config use +algo.params.nonsense=3"),
        (["'unbalanced"], "'unbalanced"),
    ],
)
def test_hydra_errors_become_one_paragraph(argv, fragment):
    with pytest.raises(ConfigError) as info:
        check_hydra_overrides(argv)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and "base_algo" not in message and "HYDRA_FULL_ERROR" not in message
    assert "Config search path" not in message


def test_eval_metrics_need_evaluation_on():
    with pytest.raises(ConfigError) as info:
        check_search_metric(_config("eval/return_env/mean"), [NONE])
    assert "evaluation.interval=5" in str(info.value) and "\n" not in str(info.value)
    on = {**_config("eval/return_env/mean"), "evaluation": {"interval": 5}}
    check_search_metric(on, [NONE])
    check_search_metric({**on, "search": {"metric": "eval/task/route_adherence"}}, [NONE])
    check_search_metric({**on, "search": {"metric": "eval/rt/route/mean"}}, [CLIFF])
    with pytest.raises(ConfigError, match="Reward designs of this sweep: none"):
        check_search_metric({**on, "search": {"metric": "eval/rt/route/mean"}}, [NONE])


def test_convergence_metric_is_checked_like_the_search_metric():
    config = {**_config("return_env/mean"), "convergence": {"metric": "eval/return_env/mean"}}
    with pytest.raises(ConfigError, match="convergence.metric='eval/return_env/mean'"):
        check_search_metric(config, [NONE])
    check_search_metric({**config, "evaluation": {"interval": 1}}, [NONE])
