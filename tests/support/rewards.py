"""Reward designs shared by the RLlib integration tests (importable: tests/support is on sys.path)."""

# The QEU Cliff Walking design with absolute route feedback, as conf/reward/cliff_absolute.yaml.
CLIFF_ABSOLUTE = {
    "name": "cliff_absolute",
    "mode": "additive",
    "metrics": {
        "route": {
            "kind": "reference",
            "weight": 0.5,
            "absolute": True,
            "source": {"type": "builtin", "name": "cliff_standard_route"},
            "feature": {"type": "callable", "path": "qeu_tune.envs.cliff_walking:obs_to_xy"},
        }
    },
}
