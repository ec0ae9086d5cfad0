"""``qeu-tune rerun SWEEP_OR_RUN``: the best configuration (or one trial) again, on fresh seeds."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf

from qeu_tune.analysis.runs import client_for, find_run, load_config_artifact, load_sweep
from qeu_tune.analysis.tables import _ci, best_configuration, build_report
from qeu_tune.config.schema import ExperimentConfig
from qeu_tune.config.trial import on_seeds, set_dotted
from qeu_tune.core import tags
from qeu_tune.core.errors import ConfigError


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rerun", parents=[common], help="rerun a sweep's best configuration (or one trial) on fresh seeds"
    )
    p.add_argument("ref", help="parent run id / sweep name, or a trial's run id")
    p.add_argument("--seeds", type=int, default=None, help="number of fresh seeds (default: the sweep's num_seeds)")
    p.add_argument("--by", default=None, help="statistic that picks the best configuration")
    p.add_argument("overrides", nargs="*", help="extra Hydra-style overrides, e.g. cluster.address=auto")


def run(args: argparse.Namespace, uri: str) -> int:
    rerun_command(uri, args.ref, seeds=args.seeds, by=args.by, overrides=args.overrides)
    return 0


def fresh_seeds(used: Sequence[int], count: int) -> List[int]:
    """``count`` seeds after every tuning seed (Eimer et al. 2023: report on fresh seeds)."""
    start = max(used, default=-1) + 1
    return list(range(start, start + count))


def _apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not set_dotted(config, key.strip(), yaml.safe_load(text)):
            raise ConfigError(f"rerun override {item!r} must be key=value with an existing dotted key.")


def _validated(config: Dict[str, Any]) -> Dict[str, Any]:
    """The config checked against the schema (a tampered or stale artifact fails here)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), config)
    except Exception as err:  # noqa: BLE001 - OmegaConf raises several error types
        raise ConfigError(f"the recorded config does not match the schema: {err}".replace("\n", " ")) from None
    return OmegaConf.to_container(merged, resolve=True)


def rerun_command(
    uri: str, ref: str, *, seeds: Optional[int] = None, by: Optional[str] = None, overrides: Sequence[str] = ()
) -> Dict[str, Any]:
    """``qeu-tune rerun SWEEP_OR_RUN``: rerun on fresh seeds and compare with the original."""
    # The engine (Ray, RLlib) loads only when a rerun runs: the CLI imports every command's parser.
    from qeu_tune.engine.plan import plan_sweep
    from qeu_tune.engine.run import run_sweep

    client = client_for(uri)
    run = find_run(client, ref)
    kind = run.data.tags.get(tags.TAG_KIND)
    if kind == "trial":  # exact reproduction of one trial (same seed unless told otherwise)
        config = load_config_artifact(client, run.info.run_id)
        original_seed = int(config.get("seed") or 0)
        seed_list = [original_seed] if seeds is None else fresh_seeds([original_seed], seeds)
        source, label, original = run.info.run_id, run.data.tags.get(tags.TAG_CONFIG_KEY, ""), None
    else:
        report = build_report(client, load_sweep(client, ref), by=by)
        best = best_configuration(client, report)
        config = best.config
        count = seeds or max(len(best.seeds), 1)
        seed_list = fresh_seeds(report.trials["seed"].dropna().astype(int).tolist(), count)
        source, label, original = report.sweep.run_id, best.label, (report, best)
    config = on_seeds(config, seed_list)
    config["tracking"]["uri"] = uri
    config["sweep_name"] = f"rerun-{config.get('sweep_name', 'sweep')}"
    config.setdefault("tags", {}).update({tags.TAG_RERUN_OF: source, tags.TAG_RERUN_CONFIG: label[:4000]})
    _apply_overrides(config, overrides)
    config = _validated(config)
    result = run_sweep(plan_sweep(config), command=f"qeu-tune rerun {ref}")
    if result.parent_run_id is None:
        raise ConfigError("the rerun could not be recorded in MLflow; see the warnings above.")
    rerun_report = build_report(client, load_sweep(client, result.parent_run_id), by=by)
    by_stat = rerun_report.by
    new = rerun_report.ranked.iloc[0]
    print(f"\nRerun of {label or source} on seeds {seed_list} (parent run {result.parent_run_id}):")
    print(f"  rerun    {by_stat} IQM [95% CI]: {_ci(new, by_stat)}  (n={int(new['n_seeds'])})")
    comparison = {"rerun_parent": result.parent_run_id, "seeds": seed_list, "rerun": new.to_dict()}
    if original is not None:
        old = original[1].row
        print(f"  original {by_stat} IQM [95% CI]: {_ci(old, by_stat)}  (n={len(original[1].seeds)}, tuning seeds)")
        held = old[f"{by_stat}/iqm_lo"] <= new[f"{by_stat}/iqm"] <= old[f"{by_stat}/iqm_hi"] or (
            new[f"{by_stat}/iqm_lo"] <= old[f"{by_stat}/iqm_hi"]
            and old[f"{by_stat}/iqm_lo"] <= new[f"{by_stat}/iqm_hi"]
        )
        verdict = "held: the CIs overlap" if held else "did NOT hold: the CIs do not overlap"
        print(f"  The tuning result {verdict}.")
        client.set_tag(result.parent_run_id, tags.TAG_RERUN_HELD, str(bool(held)))
        comparison.update({"original": dict(old), "held": bool(held)})
    return comparison
