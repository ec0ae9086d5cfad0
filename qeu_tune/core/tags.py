"""Names of what qeu-tune records in MLflow: run tags, artifact paths, run statuses.

Constants only (no MLflow, no Ray), so the read path (``qeu_tune.analysis.runs``, reports) can use
them without importing the tracking machinery.
"""

# Tags (written by qeu_tune.tracking.tracker, read back by reports and reruns).
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"  # the run's Markdown description in the MLflow UI
# Experiment tag the MLflow 3 UI reads: without it, experiments open in the GenAI layout.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
TAG_KIND = "qeu.kind"  # "study", "sweep" or "trial"
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
TAG_RUN_KEY = "qeu.run_key"  # the journal's key for a run created while the store was unreachable
TAG_COMMAND = "qeu.command"
TAG_VERSION = "qeu.version"
TAG_RESUMED = "qeu.resumed"  # how many times the sweep was resumed
TAG_ORPHANED = "qeu.orphaned"
TAG_CHECKPOINT_LOST = "qeu.checkpoint_lost"
TAG_NODE_IP = "qeu.node_ip"  # the Ray node a trial ran on
TAG_NODE_ID = "qeu.node_id"
TAG_BEST_RUN_ID = "qeu.best_run_id"
TAG_BEST_CONFIG = "qeu.best_config"
TAG_RERUN_OF = "qeu.rerun_of"
TAG_RERUN_CONFIG = "qeu.rerun_config"
TAG_RERUN_HELD = "qeu.rerun_held"
TAG_STUDY = "qeu.study"  # the study's name, on the study run and on each of its sweeps
TAG_STAGE = "qeu.stage"  # a study sweep's stage: "tune" or "test"
TAG_DESIGN = "qeu.design"  # a study sweep's design
STUDY_SUMMARY_ARTIFACT = "study/summary.json"
STUDY_CONFIG_ARTIFACT = "config/study.yaml"
HPARAM_PREFIX = "hparam/"
RESOLVED_CONFIG_ARTIFACT = "config/resolved.yaml"
SWEEP_CONFIG_ARTIFACT = "config/sweep.yaml"
SEARCH_SPEC_ARTIFACT = "config/search.yaml"

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
