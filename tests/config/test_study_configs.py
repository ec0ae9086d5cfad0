"""Every study experiment file plans (each design's sweep validated); a study's own checks."""

from __future__ import annotations

import pytest

from qeu_tune.config.compose import compose, group_options, to_plain
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine.study_plan import _check_differs_only_in_its_keys, held_out_config, plan_study, searcher_seed

STUDIES = [e for e in group_options("experiment") if e.startswith("study_")]


def _plan(overrides):
    return plan_study(to_plain(compose(overrides)), overrides)


@pytest.mark.parametrize("experiment", STUDIES)
def test_every_study_plans_each_design(experiment):
    plan = _plan([f"experiment={experiment}", "debug=smoke"])
    study = plan.config["study"]
    assert plan.baseline in plan.designs and len(plan.designs) >= 2
    assert not set(plan.tune_seeds) & set(plan.test_seeds)
    budgets = {(d.tune.search.num_samples, d.tune.config["stop"]["env_steps"]) for d in plan.designs.values()}
    assert len(budgets) == 1, f"designs of {experiment} get different budgets: {budgets}"
    assert {d.tune.config["search"]["algorithm"] for d in plan.designs.values()} == {study["tune"]["search"]}
    if "aa_control" in plan.designs:  # the A/A control repeats the baseline's overrides, tuned separately
        assert plan.designs["aa_control"].overrides == plan.designs[plan.baseline].overrides
        seeds = {d: plan.designs[d].tune.config["search"]["searcher_seed"] for d in ("aa_control", plan.baseline)}
        assert seeds["aa_control"] != seeds[plan.baseline]


def test_each_design_is_searched_with_its_own_stable_seed():
    study = {"tune": {"first_seed": 0}}
    assert searcher_seed("none", study) == searcher_seed("none", study) != searcher_seed("aa_control", study)


def test_a_design_may_change_only_the_keys_it_names():
    base = {"reward": {"name": "none"}, "algo": {"params": {"lr": 0.1}}, "sweep_name": "a"}
    design = {"reward": {"name": "rt", "metrics": {}}, "algo": {"params": {"lr": 0.1}}, "sweep_name": "b"}
    _check_differs_only_in_its_keys("rt", ["reward=rt"], base, design)  # passes
    changed = {**design, "algo": {"params": {"lr": 0.2}}}
    with pytest.raises(ConfigError, match=r"study.designs.rt \(reward=rt\) also changes algo.params.lr"):
        _check_differs_only_in_its_keys("rt", ["reward=rt"], base, changed)


def test_the_test_stage_runs_the_tuned_configuration_on_held_out_seeds_greedily():
    plan = _plan(["experiment=study_cartpole", "debug=smoke"])
    best = {**plan.designs["rt"].tune.config, "seed": 3}
    config = held_out_config(best, plan, "rt")
    assert "seed" not in config and config["scheduler"]["name"] == "fifo"
    assert config["search"]["num_seeds"] == len(plan.test_seeds) and config["search"]["seed"] == plan.test_seeds[0]
    assert config["search"]["space"] == {} and config["evaluation"]["interval"] > 0
    assert config["convergence"]["metric"] == "eval/return_env/mean" and config["convergence"]["last_k"] == 1


def test_an_empty_search_space_leaves_nothing_to_tune():
    with pytest.raises(ConfigError, match="search.space is empty"):
        _plan(
            [
                "experiment=single",
                'study.designs.a=["reward=none"]',
                'study.designs.b=["reward=cartpole_rt"]',
                "study.baseline=a",
            ]
        )
