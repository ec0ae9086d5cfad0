"""Metric names: the one place they are defined.

Names are namespaced with ``/`` so the MLflow UI groups them into chart sections.
The step of every logged metric is the number of environment steps sampled so far.
"""

# Episode statistics: over the last 100 episodes, not only those that ended in the
# iteration (RLlib's metrics_num_episodes_for_smoothing = 100, and our callback logs with
# window=100); min/max likewise over that window. EPISODES is a lifetime count.
RETURN_MEAN = "return/mean"  # shaped return: what the learner optimised
RETURN_MIN = "return/min"
RETURN_MAX = "return/max"
RETURN_ENV_MEAN = "return_env/mean"  # the environment's own reward, no shaping
EPISODE_LEN_MEAN = "episode/len_mean"
EPISODES = "episode/count_lifetime"

# Progress and throughput.
ENV_STEPS = "progress/env_steps"
ITERATION = "progress/iteration"
TIME_TOTAL_S = "progress/time_total_s"
ENV_STEPS_PER_S = "perf/env_steps_per_s"

# Learner statistics (losses, entropy, KL, learning rates): "learner/<rllib key>".
LEARNER_PREFIX = "learner/"
# Reward design: per-episode sums of each reward component and metric statistics.
REWARD_PREFIX = "reward/"  # reward/<component>/sum
RT_PREFIX = "rt/"  # rt/<metric>/{mean,min,max}
# Convergence statistics (computed from the trajectory of ``convergence.metric``, by
# default return_env/mean).
CONV_PREFIX = "conv/"
# Task statistics an environment reports per episode (``episode_statistics()`` of the
# base env, e.g. Cliff Walking's route adherence): task/<name>, means over episodes.
TASK_PREFIX = "task/"
ROUTE_ADHERENCE = "task/route_adherence"  # fraction of steps on the standard route
GOAL_REACHED = "task/goal_reached"  # 1 if the episode reached the goal, else 0
# Greedy evaluation (``evaluation.interval`` > 0): exploration off, its own env seeds,
# logged only at evaluation iterations. eval/<name> for each episode statistic above.
EVAL_PREFIX = "eval/"
EVAL_RETURN_ENV_MEAN = "eval/return_env/mean"  # unshaped return of the greedy policy
EVAL_EPISODE_LEN_MEAN = "eval/episode/len_mean"
EVAL_EPISODES = "eval/episodes"  # episodes in this evaluation
# The training iteration of the latest evaluation. Trials report the latest evaluation with
# every result (Tune's searchers and schedulers need the metric in each); the tracker logs
# eval/* to MLflow only for the result of the evaluation's own iteration.
EVAL_ITERATION = "eval/iteration"
# RLlib's own keys, kept verbatim under this prefix for anything not mapped above.
RLLIB_PREFIX = "rllib/"

# The driver's own cost, on the sweep's parent run at its end: the trial callback's time per
# Tune result (journal, convergence statistics, hyperparameters), its percentiles in ms.
DRIVER_RESULTS = "driver/results"  # Tune results the callback handled
DRIVER_CALLBACK_MS_P50 = "driver/callback_ms_p50"
DRIVER_CALLBACK_MS_P99 = "driver/callback_ms_p99"
DRIVER_CALLBACK_MS_MAX = "driver/callback_ms_max"

# Key the reward wrapper uses in the final step's ``info`` of every episode: a flat
# {name: float} dict already in the scheme above, e.g. {"return_env": -12.0,
# "reward/route/sum": -3.1, "rt/route/mean": 0.4}; RLlib averages them over the last 100
# episodes (window=100).
EPISODE_INFO_KEY = "qeu_episode"
