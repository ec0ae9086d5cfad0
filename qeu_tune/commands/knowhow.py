"""``qeu-tune knowhow``: a reward design's know-how, fitted and described, without training.

``qeu-tune knowhow reward=cartpole_rt [metric=NAME] [--save PATH] [--episodes N]`` composes
the config like a sweep would (so ``env=...``, ``--config-dir`` and any override apply) and
prints what ``qeu_tune.reward.diagnostics.summarize`` found for each metric.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from qeu_tune.config.compose import compose, hydra_message, to_plain
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.redact import redact
from qeu_tune.reward.diagnostics import QUANTILES, MetricSummary, save_models, summarize


def _fmt(values: Sequence[float]) -> str:
    return "  ".join(f"{v + 0.0:8.4g}" for v in values) if len(values) else "(no data)"


def print_summaries(summaries: Sequence[MetricSummary], config: Dict[str, Any], episodes: int, out: Any = None) -> None:
    out = out or sys.stdout
    header = "  ".join(f"{'q' + format(q * 100, 'g'):>8}" for q in QUANTILES)
    env = config["env"]
    for s in summaries:
        model = "unit space" if s.kind == "unit_space" else "reference set"
        print(
            f"reward={config['reward']['name']} metric {s.name} ({s.kind}): {model} of n={s.n} "
            f"samples, k={s.k} features",
            file=out,
        )
        if s.mean_d2 is not None:
            expected = 1.0 if s.ddof == 0 else (s.n - 1) / s.n
            print(
                f"  mean D^2 over the unit space: {s.mean_d2:.6f} (ddof={s.ddof}: {expected:.6f} by construction)",
                file=out,
            )
        print(f"  {'D quantiles':<34}{header}", file=out)
        print(f"  {'know-how samples':<34}{_fmt(s.quantiles(s.know_how_d))}", file=out)
        label = f"random policy, {episodes} ep. ({s.random_d.size} st.)"
        print(f"  {label:<34}{_fmt(s.quantiles(s.random_d))}   on {env['id']}", file=out)
        if s.know_how_d.size and s.random_d.size:
            a, b = float(np.median(np.abs(s.know_how_d))), float(np.median(np.abs(s.random_d)))
            ratio = f"{b / a:.3g}x" if a > 0 else "inf x"
            print(f"  median |D|: know-how {a:.4g}, random policy {b:.4g} ({ratio})", file=out)
        for warning in s.warnings:
            print(f"  warning: {warning}", file=out)
        if s.saved is not None:
            print(f"  saved: {s.saved}", file=out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qeu-tune knowhow",
        description="Fit a reward design's unit spaces / reference sets from their know-how "
        "sources and describe them, without training.",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides (reward=..., env=..., reward.metrics.M.source.path=...) and metric=NAME",
    )
    parser.add_argument("--metric", default=None, help="only this metric (also metric=NAME)")
    parser.add_argument("--save", default=None, help="write the fitted unit space (JSON)")
    parser.add_argument("--episodes", type=int, default=10, help="random-policy episodes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first random-policy episode")
    return parser


def main(argv: Sequence[str]) -> int:
    """``qeu-tune knowhow ...``; returns the exit code (2 for a config error)."""
    args = _parser().parse_args(list(argv))
    metric = args.metric
    overrides = []
    for item in args.overrides:
        if item.startswith("metric="):
            metric = item.split("=", 1)[1]
        else:
            overrides.append(item)
    try:
        if args.episodes < 1:
            raise ConfigError("--episodes must be >= 1.")
        try:
            config = to_plain(compose(overrides))
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(hydra_message(err)) from None
        summaries = summarize(config, metric=metric, episodes=args.episodes, seed=args.seed)
        if args.save:
            save_models(summaries, Path(args.save).expanduser())
    except ConfigError as err:  # as qeu-tune reports config errors: one paragraph, exit 2
        print(f"qeu-tune: error: {redact(str(err))}", file=sys.stderr)
        return 2
    print_summaries(summaries, config, args.episodes)
    return 0
