"""Names of the config groups (``conf/<group>/``); importable without Hydra or the schemas."""

GROUP_NAMES = ("algo", "env", "reward", "search", "scheduler", "tracking", "cluster")
