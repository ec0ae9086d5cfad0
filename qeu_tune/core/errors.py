"""The error every bad-input path raises, so the CLI can print one paragraph and exit 2."""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the value and the fix."""
