"""qeu-tune: reward-design and hyperparameter experiments in RL with RT-method metrics."""

from importlib.metadata import PackageNotFoundError, version

from qeu_tune.core.telemetry import keep_usage_telemetry_off

# Before MLflow or Ray is imported anywhere: both read the opt-out when they load.
keep_usage_telemetry_off()

try:
    __version__ = version("qeu-tune")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
