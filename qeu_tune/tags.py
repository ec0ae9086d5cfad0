"""Names of what qeu-tune records in MLflow: run tags, artifact paths, run statuses.

Constants only (no MLflow, no Ray), so the read path (``qeu_tune.runs``, reports) can use
them without importing the tracking machinery; ``qeu_tune.tracking`` re-exports them.
"""

# Tags (written by qeu_tune.tracking, read back by reports and reruns).
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_KIND = "qeu.kind"  # "sweep" or "trial"
TAG_SWEEP = "qeu.sweep"
TAG_TRIAL_ID = "qeu.trial_id"
TAG_ALGO = "qeu.algo"
TAG_ENV = "qeu.env"
TAG_REWARD = "qeu.reward"
TAG_SEED = "qeu.seed"
TAG_CONFIG_KEY = "qeu.config_key"  # identifies a configuration across its seeds
TAG_ERROR = "qeu.error"
TAG_SKIPPED = "qeu.skipped_keys"
TAG_RETRIES = "qeu.retries"  # times Tune restarted the trial from its checkpoint
TAG_PERTURBATIONS = "qeu.pbt.perturbations"
TAG_INTERRUPTED = "qeu.interrupted"  # SIGINT/SIGTERM: the sweep can be resumed
TAG_TUNE_PATH = "qeu.tune_path"  # Tune's experiment directory (what resume restores)
HPARAM_PREFIX = "hparam/"
RESOLVED_CONFIG_ARTIFACT = "config/resolved.yaml"
SWEEP_CONFIG_ARTIFACT = "config/sweep.yaml"
SEARCH_SPEC_ARTIFACT = "config/search.yaml"

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
