"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

YAML files in ``conf/`` extend these schemas (``defaults: [base_<group>]``), so a typo or a
wrong type fails when the config is composed, not an hour into a sweep. Open-ended
mappings (RLlib hyperparameters, ``env_config``) stay ``Dict[str, Any]`` because their
keys belong to RLlib or to the environment; those are checked by building the objects
once on the driver (``qeu_tune.config.rules``, ``qeu_tune.engine.preflight``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.reward.config import MetricConfig, RewardConfig

__all__ = [
    "AlgoConfig",
    "ClusterConfig",
    "EnvConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "MetricConfig",
    "RewardConfig",
    "SchedulerConfig",
    "SearchConfig",
    "StopConfig",
    "TrackingConfig",
    "register_schemas",
]


@dataclass
class AlgoConfig:
    """An RLlib algorithm (new API stack) and its hyperparameters."""

    name: str = "ppo"  # ppo | dqn | appo | impala | sac | synthetic (a learning-curve model, no RLlib)
    params: Dict[str, Any] = field(default_factory=dict)  # AlgorithmConfig.training(**params)
    model: Dict[str, Any] = field(default_factory=dict)  # rl_module(model_config=...)
    num_env_runners: int = 0  # 0: sample in the trial's own process (one CPU per trial)
    num_envs_per_env_runner: int = 1
    rollout_fragment_length: Any = "auto"
    reporting: Dict[str, Any] = field(default_factory=dict)  # AlgorithmConfig.reporting(**)
    # Applied on top of ``params`` by the smoke option: the smallest settings that still train.
    smoke_params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultConfig:
    """Fault injection for testing retries (``qeu_tune.envs.faults``); off by default."""

    at_step: Optional[int] = None  # every env instance raises at this step
    probability: float = 0.0  # or raises on each step with this probability
    retries_too: bool = False  # False: only a trial's first attempt faults


@dataclass
class EnvConfig:
    """A Gymnasium id or ``module:Class`` entry point, with kwargs passed through."""

    name: str = "cartpole"
    id: str = "CartPole-v1"
    env_config: Dict[str, Any] = field(default_factory=dict)
    # Unshaped return that counts as "solved": drives convergence statistics.
    return_threshold: Optional[float] = None
    # [worst, best] unshaped return, to normalise the area under the learning curve.
    return_range: Optional[List[float]] = None
    fault: FaultConfig = field(default_factory=FaultConfig)


@dataclass
class SearchConfig:
    """The search space (Hydra sweep grammar) and the search algorithm."""

    name: str = "random"
    algorithm: str = "random"  # grid | random | optuna
    # Dotted config key -> expression, e.g. {"algo.params.lr": "tag(log, interval(1e-4, 1e-3))"}.
    space: Dict[str, Any] = field(default_factory=dict)
    # Conditional dimensions: "key=value" -> {dotted key: expression}, sampled only for
    # trials where the condition holds, e.g. {"algo=ppo": {"algo.params.clip_param": ...}}.
    when: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    num_samples: int = 2  # configurations to sample (ignored by grid: it enumerates)
    num_seeds: int = 1  # every configuration runs with this many distinct seeds
    seed: int = 0  # first trial seed; also seeds the search algorithm unless searcher_seed is set
    searcher_seed: Optional[int] = None  # the search algorithm's own seed (a study's designs: one each)
    metric: str = "return_env/mean"  # unshaped return: fair across reward designs
    mode: str = "max"
    max_concurrent_trials: Optional[int] = None  # None: as many as the CPUs allow


@dataclass
class SchedulerConfig:
    """A Tune trial scheduler; ``params`` go to its constructor."""

    name: str = "fifo"  # fifo | asha | pbt
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class StopConfig:
    """When a trial stops: whichever comes first."""

    env_steps: int = 20_000
    time_s: Optional[float] = None
    target_return: Optional[float] = None  # on the unshaped return


@dataclass
class ConvergenceConfig:
    """The curve and windows of the convergence statistics (``docs/statistics.md``).

    Windows count the curve's points (iterations, or evaluations for an ``eval/`` curve).
    """

    # The curve the statistics (final return, steps to threshold, AUC) and so the
    # rankings of ``report``/``best`` use: the training return (exploring, mean of the
    # last 100 episodes) or, with evaluation on, eval/return_env/mean (greedy).
    metric: str = "return_env/mean"
    window: int = 5  # moving average of the curve
    sustain: int = 3  # moving-average points that must stay >= threshold
    last_k: int = 5  # points that make up "final" performance


@dataclass
class EvaluationConfig:
    """Greedy evaluation: exploration off, on the env runner seeds RLlib keeps for it
    (the trial seed + 1,000,000), every ``interval`` training iterations and at the end.
    """

    interval: int = 0  # training iterations between evaluations; 0: no evaluation
    episodes: int = 5  # episodes per evaluation (a deterministic env and policy: 1 suffices)


@dataclass
class TrackingConfig:
    """Where MLflow records runs. Precedence: ``uri`` > $MLFLOW_TRACKING_URI > local SQLite."""

    name: str = "local"
    uri: Optional[str] = None
    experiment: str = "qeu-tune"
    # Seconds the driver holds a trial's points before journaling them. 0: at once (the
    # journal's writer batches MLflow calls, and a killed driver loses nothing journaled).
    flush_every_s: float = 0.0
    # Seconds between a trial's live conv/* points (and always with its last result): a trial
    # of fast iterations otherwise writes 12+ statistics per result, most of its points.
    conv_every_s: float = 2.0
    log_rllib_metrics: bool = False  # also log RLlib's raw keys under rllib/
    # online: write to MLflow while the sweep runs (through the on-disk journal);
    # offline: journal only, no MLflow contact; upload later with `qeu-tune sync`.
    mode: str = "online"
    # process: the journal's MLflow writer runs in a process of its own, beside Tune's driver
    # loop (a third of a large sweep's driver CPU otherwise); thread: in the driver.
    writer: str = "process"


@dataclass
class ClusterConfig:
    """Where Ray runs. ``address`` None starts a local Ray sized to the machine."""

    name: str = "local"
    address: Optional[str] = None  # "auto", "HOST:PORT", "ray://host:10001", or None for local
    num_cpus: Optional[int] = None  # local Ray only; None: all cores
    storage_path: Optional[str] = None  # Ray results; None: <QEU_TUNE_HOME>/ray_results
    # Passed to ray.init(runtime_env=...): working_dir / py_modules / pip / env_vars that every
    # worker needs (know-how files, user envs given by import path). Empty: the job's own.
    runtime_env: Dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyTuneConfig:
    """The tuning stage: every design gets the same search budget, on the tuning seeds."""

    num_samples: int = 4  # configurations searched per design (each x ``seeds`` trials)
    seeds: int = 1  # tuning seeds per configuration: first_seed, first_seed + 1, ...
    first_seed: int = 0
    search: str = "optuna"  # a search option: TPE (Eimer et al. 2023: an established HPO method)
    scheduler: str = "asha"  # a scheduler option: ASHA stops poor configurations early


@dataclass
class StudyTestConfig:
    """The test stage: each design's best configuration on seeds no tuning trial used."""

    seeds: int = 10
    first_seed: int = 1000  # must not overlap the tuning seeds
    eval_interval: int = 5  # greedy evaluation every this many iterations (and at the end)
    eval_episodes: int = 5


@dataclass
class StudyConfig:
    """``qeu-tune study``: do these reward designs make the algorithm learn better or faster?

    ``designs`` maps a name to the overrides that make that design (they may change only the
    keys they name); ``baseline`` names the design the others are compared with. ``qeu-tune
    study`` without ``experiment=`` runs ``conf/experiment/study_cartpole.yaml``.
    """

    name: Optional[str] = None  # default: <algo>-<env>
    designs: Dict[str, List[str]] = field(default_factory=dict)
    baseline: Optional[str] = None
    tune: StudyTuneConfig = field(default_factory=StudyTuneConfig)
    test: StudyTestConfig = field(default_factory=StudyTestConfig)
    # The smallest difference in final greedy return worth detecting; where no difference
    # is detected, the report says how many test seeds would detect it at 80% power.
    # None: 10% of env.return_range.
    min_effect: Optional[float] = None
    confidence: float = 0.95


@dataclass
class ExperimentConfig:
    """The root config: one option from each group plus run-level settings."""

    algo: AlgoConfig = field(default_factory=AlgoConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sweep_name: str = "default"
    seed: Optional[int] = None  # set per trial from search.seed/num_seeds; fixed in reruns
    # Training iterations between checkpoints (0: only at the end). A retried, resumed or
    # PBT-exploited trial restarts from its latest checkpoint: at most this many
    # iterations are repeated (their steps are not logged twice).
    checkpoint_every: int = 5
    max_failures: int = 3  # retries of a crashed trial, each from its last checkpoint
    verbose: int = 1  # 0 silent, 1 progress table, 2 + Ray logs
    tags: Dict[str, str] = field(default_factory=dict)  # extra MLflow tags on the sweep
    smoke: bool = False  # set by the smoke option; recorded so reports can flag it
    study: StudyConfig = field(default_factory=StudyConfig)  # used by `qeu-tune study` only


GROUPS: Dict[str, type] = {
    "algo": AlgoConfig,
    "env": EnvConfig,
    "reward": RewardConfig,
    "search": SearchConfig,
    "scheduler": SchedulerConfig,
    "tracking": TrackingConfig,
    "cluster": ClusterConfig,
}


def register_schemas() -> None:
    """Register ``base_config`` and ``base_<group>`` schemas with Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=ExperimentConfig)
    for group, schema in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=schema)


assert tuple(GROUPS) == GROUP_NAMES, "qeu_tune.config.groups and the schemas disagree"
