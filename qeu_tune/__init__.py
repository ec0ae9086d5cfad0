"""qeu-tune: reward-design and hyperparameter experiments in RL with RT-method metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qeu-tune")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
