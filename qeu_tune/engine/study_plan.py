"""Plan a reward-design study: check it, and plan every design's tuning sweep. Never starts Ray.

A study is sweeps composed (Eimer, Lindauer & Raileanu, ICML 2023): per design a tuning sweep
with the same budget on the tuning seeds, then the design's best configuration on test seeds
that no tuning trial used, then a comparison. ``plan_study`` composes each design's config
(the study's overrides, then the design's, then the tuning stage's) and plans its sweep with
``plan_sweep``, so every check of a sweep runs for every design before anything starts.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.config.trial import on_seeds
from qeu_tune.core import names
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine.plan import SweepPlan, plan_sweep

# What every design shares: a design that overrides one of these would get another budget,
# search or record, and its comparison would no longer be fair.
SHARED_KEYS = (
    "stop",
    "search",
    "scheduler",
    "study",
    "seed",
    "experiment",
    "tracking",
    "cluster",
    "evaluation",
    "convergence",
    "debug",
    "sweep_name",
    "tags",
    "checkpoint_every",
    "max_failures",
)


@dataclass
class DesignPlan:
    """One design of a study: its overrides and its planned tuning sweep."""

    name: str
    overrides: List[str]
    tune: SweepPlan


@dataclass
class StudyPlan:
    """Everything a study needs, validated."""

    name: str
    config: Dict[str, Any]  # the study's composed config (without any design's overrides)
    overrides: List[str]  # the study's own overrides (the command line)
    designs: Dict[str, DesignPlan]
    baseline: str
    tune_seeds: List[int]
    test_seeds: List[int]
    min_effect: float
    confidence: float

    @property
    def tracking_uri(self) -> str:
        return next(iter(self.designs.values())).tune.tracking_uri

    @property
    def storage_path(self) -> str:
        return next(iter(self.designs.values())).tune.storage_path


def recorded_designs(plan: StudyPlan) -> Dict[str, Dict[str, Any]]:
    """Each design's planned config and the options of its searched groups, to record with the
    study (``plan_study(..., recorded=...)`` plans from them again)."""
    return {
        name: {"config": d.tune.config, "options": d.tune.template.group_options} for name, d in plan.designs.items()
    }


def tune_overrides(study: Mapping[str, Any]) -> List[str]:
    """The tuning stage's overrides: the same search and budget for every design."""
    tune = study["tune"]
    return [
        f"search={tune['search']}",
        f"scheduler={tune['scheduler']}",
        f"search.num_samples={int(tune['num_samples'])}",
        f"search.num_seeds={int(tune['seeds'])}",
        f"search.seed={int(tune['first_seed'])}",
    ]


def searcher_seed(design: str, study: Mapping[str, Any]) -> int:
    """Each design's search runs on its own sampler seed ("tuned separately": an A/A control
    explores other configurations than its baseline), stable under adding or renaming others."""
    return (int(study["tune"]["first_seed"]) + zlib.crc32(design.encode())) % 2**31


def plan_study(
    config: Dict[str, Any],
    overrides: Sequence[str] = (),
    *,
    recorded: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> StudyPlan:
    """Checks a composed study config and plans the tuning sweep of each design.

    Args:
        config: The composed, resolved config (plain dict) with its ``study`` section.
        overrides: The overrides it was composed with; each design's config is composed
            from them plus the design's overrides.
        recorded: ``{design: {"config", "options"}}`` as the study recorded them at its start
            (``recorded_designs``): a resumed study plans from these, never from the config
            directories as they are now.

    Raises:
        ConfigError: One paragraph naming the bad value and the fix.
    """
    study = config["study"]
    designs = _checked_designs(study)
    tune_seeds, test_seeds = _checked_seeds(study)
    if not (config["search"].get("space") or {}):
        raise ConfigError(
            "study: search.space is empty, so the tuning stage has nothing to tune. Give each design "
            "the same space to search, e.g. 'algo.params.lr=tag(log,interval(1e-4,3e-3))' or an "
            "experiment file's search.space."
        )
    stage = tune_overrides(study)
    base = to_plain(compose([*overrides, *stage])) if recorded is None else None
    plans = {}
    for name, design_overrides in designs.items():
        composed = [*overrides, *design_overrides, *stage, f"search.searcher_seed={searcher_seed(name, study)}"]
        if recorded is not None:
            design_config, options = copy.deepcopy(dict(recorded[name]["config"])), recorded[name].get("options")
        else:
            try:
                design_config, options = to_plain(compose(composed)), None
            except Exception as err:  # noqa: BLE001 - Hydra's errors: one paragraph naming the design
                raise ConfigError(f"study.designs.{name}={design_overrides}: {err}".replace("\n", " ")) from None
            _check_differs_only_in_its_keys(name, design_overrides, base, design_config)
            design_config["sweep_name"] = f"{_study_name(config)}-{name}-tune"
        try:
            tune = plan_sweep(design_config, composed, recorded_options=options)
        except ConfigError as err:
            raise ConfigError(f"study.designs.{name}: {err}") from None
        plans[name] = DesignPlan(name=name, overrides=design_overrides, tune=tune)
    return StudyPlan(
        name=_study_name(config),
        config=config,
        overrides=list(overrides),
        designs=plans,
        baseline=str(study["baseline"]),
        tune_seeds=tune_seeds,
        test_seeds=test_seeds,
        min_effect=_min_effect(study, config),
        confidence=float(study["confidence"]),
    )


def held_out_config(best_config: Mapping[str, Any], plan: StudyPlan, design: str) -> Dict[str, Any]:
    """The test stage's sweep config: the tuned configuration on the test seeds, greedy evaluation.

    The final greedy return is the last evaluation (``convergence.last_k`` 1) and steps to
    threshold are read off the greedy curve, censored at the budget.
    """
    test = plan.config["study"]["test"]
    config = on_seeds(best_config, plan.test_seeds)
    config["scheduler"] = {"name": "fifo", "params": {}}
    config["evaluation"] = {"interval": int(test["eval_interval"]), "episodes": int(test["eval_episodes"])}
    config["convergence"] = {**config["convergence"], "metric": names.EVAL_RETURN_ENV_MEAN, "last_k": 1}
    config["sweep_name"] = f"{plan.name}-{design}-test"
    return config


def _checked_designs(study: Mapping[str, Any]) -> Dict[str, List[str]]:
    designs = {str(k): [str(o) for o in (v or [])] for k, v in (study.get("designs") or {}).items()}
    if len(designs) < 2:
        raise ConfigError(
            f"study.designs has {len(designs)} design{'s' if len(designs) != 1 else ''} "
            f"({', '.join(designs) or 'none'}); a study compares at least two, e.g. "
            "experiment=study_cartpole or study.designs='{none: [reward=none], rt: [reward=cartpole_rt]}'."
        )
    baseline = study.get("baseline")
    if baseline not in designs:
        raise ConfigError(
            f"study.baseline={baseline!r} is not one of the designs ({', '.join(designs)}); "
            f"name the design the others are compared with, e.g. study.baseline={next(iter(designs))}."
        )
    for name, design_overrides in designs.items():
        for override in design_overrides:
            key = _override_key(override)
            if "=" not in override or not key:
                raise ConfigError(
                    f"study.designs.{name}: {override!r} is not an override; a design is a list of "
                    "key=value overrides, e.g. [reward=cartpole_rt, reward.metrics.balance.weight=0.3]."
                )
            if key.split(".")[0] in SHARED_KEYS:
                raise ConfigError(
                    f"study.designs.{name} overrides {key}, which every design shares (budget, search, "
                    "seeds, tracking, evaluation). Set it for the whole study instead, e.g. on the "
                    "command line before the designs apply."
                )
    return designs


def _checked_seeds(study: Mapping[str, Any]) -> Tuple[List[int], List[int]]:
    tune, test = study["tune"], study["test"]
    if int(tune["seeds"]) < 1 or int(tune["num_samples"]) < 1:
        raise ConfigError(
            f"study.tune.seeds={tune['seeds']} and study.tune.num_samples={tune['num_samples']} must be >= 1."
        )
    if int(test["seeds"]) < 2:
        raise ConfigError(
            f"study.test.seeds={test['seeds']}: a comparison needs at least 2 test seeds per design "
            "(10 is the default; fewer than 5 give crude intervals)."
        )
    tune_seeds = list(range(int(tune["first_seed"]), int(tune["first_seed"]) + int(tune["seeds"])))
    test_seeds = list(range(int(test["first_seed"]), int(test["first_seed"]) + int(test["seeds"])))
    shared = sorted(set(tune_seeds) & set(test_seeds))
    if shared:
        raise ConfigError(
            f"study: tuning seeds {_span(tune_seeds)} and test seeds {_span(test_seeds)} "
            f"overlap ({', '.join(map(str, shared[:5]))}); test on seeds no tuning trial used, e.g. "
            f"study.test.first_seed={tune_seeds[-1] + 1000}."
        )
    return tune_seeds, test_seeds


def _check_differs_only_in_its_keys(
    name: str, design_overrides: Sequence[str], base: Mapping[str, Any], design: Mapping[str, Any]
) -> None:
    """A design's config differs from the study's only under the keys its overrides name."""
    keys = [_override_key(o) for o in design_overrides]
    ignored = ("sweep_name", "search.searcher_seed")  # derived from the design's name
    for key in _differing_keys(base, design):
        if key.startswith(ignored):
            continue
        if not any(key == k or key.startswith(k + ".") for k in keys):
            raise ConfigError(
                f"study.designs.{name} ({', '.join(design_overrides)}) also changes {key}, which its "
                "overrides do not name, so the designs would differ in more than the design. Name "
                f"the key in the design's overrides, or set it for every design."
            )


def _differing_keys(a: Any, b: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            yield from _differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def _override_key(override: str) -> str:
    key = override.split("=", 1)[0].strip().lstrip("+~")
    return key.split("@", 1)[0] if key.split("@", 1)[0] in GROUP_NAMES else key


def _study_name(config: Mapping[str, Any]) -> str:
    return str(config["study"].get("name") or f"{config['algo']['name']}-{config['env']['name']}")


def _min_effect(study: Mapping[str, Any], config: Mapping[str, Any]) -> float:
    if study.get("min_effect") is not None:
        value = float(study["min_effect"])
        if value <= 0:
            raise ConfigError(f"study.min_effect={value} must be > 0 (a difference in final greedy return).")
        return value
    low, high = (config["env"].get("return_range") or [0.0, 1.0])[:2]
    return 0.1 * (float(high) - float(low))


def _span(seeds: Sequence[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
