"""Typed experiment configuration: schemas (``schema``), composition (``compose``), errors."""

from qeu_tune.core.errors import ConfigError

__all__ = ["ConfigError"]
