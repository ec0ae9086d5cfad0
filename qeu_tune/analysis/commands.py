"""The commands ``qeu-tune report``, ``best`` and ``rerun`` (the only part that runs sweeps)."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from qeu_tune import tags as tracking  # constants only
from qeu_tune.analysis.render import log_report, print_report, write_report
from qeu_tune.analysis.tables import (
    BestConfig,
    SweepReport,
    _ci,
    best_configuration,
    build_report,
    experiment_yaml,
)
from qeu_tune.config.errors import ConfigError
from qeu_tune.runs import client_for, find_run, load_config_artifact, load_sweep


def report_command(uri: str, ref: str, *, by: Optional[str] = None, baseline: Optional[str] = None,
                   threshold: Optional[float] = None, metric: Optional[str] = None, out: Optional[str] = None,
                   log: bool = False) -> SweepReport:
    """``qeu-tune report SWEEP``: print the ranked table and write tables and plots.

    With ``log`` the files also replace the ``report/`` artifacts of the parent run (the
    sweep logs its default report there itself).
    """
    client = client_for(uri)
    report = build_report(client, load_sweep(client, ref), by=by, baseline=baseline, threshold=threshold,
                          metric=metric)
    print_report(report)
    out_dir = Path(out or Path.cwd() / f"report-{report.sweep.name}").resolve()
    paths = write_report(report, out_dir)
    if log:
        try:
            log_report(client, report, out_dir)
        except Exception as err:  # noqa: BLE001 - the local files are the deliverable here
            print(f"(could not log the report to the parent run: {err})", file=sys.stderr)
    print(f"Wrote {len(paths)} files to {out_dir}")
    return report


def best_command(uri: str, ref: str, *, by: Optional[str] = None, out: Optional[str] = None) -> BestConfig:
    """``qeu-tune best SWEEP``: print the winner's overrides and write an experiment file."""
    from qeu_tune.paths import CONF_DIR, user_config_dir

    client = client_for(uri)
    report = build_report(client, load_sweep(client, ref), by=by)
    best = best_configuration(client, report)
    name = "best_" + re.sub(r"[^A-Za-z0-9_]+", "_", report.sweep.name).strip("_")
    # Default: the user config directory (--config-dir, $QEU_TUNE_CONFIG_DIR or ./conf),
    # never the installed package's configs.
    path = Path(out) if out else _user_experiment_dir(CONF_DIR, user_config_dir) / f"{name}.yaml"
    if path.suffix != ".yaml":
        path = path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(experiment_yaml(best, report))
    print(f"Best configuration of {report.sweep.name}: {best.label}")
    print(f"  {report.by} IQM over {len(best.seeds)} seeds: {_ci(best.row, report.by)}")
    print(f"  overrides: {' '.join(best.overrides())}")
    print(f"  experiment file: {path}")
    group_dir = path.parent.resolve()
    if group_dir == (CONF_DIR / "experiment").resolve() or group_dir == (Path.cwd() / "conf" / "experiment").resolve():
        print(f"  rerun it: qeu-tune experiment={path.stem}")
    elif group_dir.name == "experiment":
        print(f"  rerun it: qeu-tune --config-dir {group_dir.parent} experiment={path.stem}")
    return best


def _user_experiment_dir(conf_dir: Path, user_config_dir: Any) -> Path:
    """``<user config dir>/experiment``, created; refuses the installed package's ``conf/``."""
    directory = user_config_dir(create=True)
    installed = any(part in ("site-packages", "dist-packages") for part in conf_dir.parts)
    if installed and directory.resolve() == conf_dir.resolve():
        raise ConfigError(
            f"qeu-tune best would write into the installed package ({conf_dir}); run it from "
            "another directory, or pass --config-dir DIR (or set QEU_TUNE_CONFIG_DIR)."
        )
    return directory / "experiment"


def fresh_seeds(used: Sequence[int], count: int) -> List[int]:
    """``count`` seeds after every tuning seed (Eimer et al. 2023: report on fresh seeds)."""
    start = max(used, default=-1) + 1
    return list(range(start, start + count))


def _apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> None:
    from qeu_tune.trial_config import set_dotted

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not set_dotted(config, key.strip(), yaml.safe_load(text)):
            raise ConfigError(f"rerun override {item!r} must be key=value with an existing dotted key.")


def _validated(config: Dict[str, Any]) -> Dict[str, Any]:
    """The config checked against the schema (a tampered or stale artifact fails here)."""
    from omegaconf import OmegaConf

    from qeu_tune.config.schema import ExperimentConfig

    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), config)
    except Exception as err:  # noqa: BLE001 - OmegaConf raises several error types
        raise ConfigError(f"the recorded config does not match the schema: {err}".replace("\n", " ")) from None
    return OmegaConf.to_container(merged, resolve=True)


def rerun_command(uri: str, ref: str, *, seeds: Optional[int] = None, by: Optional[str] = None,
                  overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """``qeu-tune rerun SWEEP_OR_RUN``: rerun on fresh seeds and compare with the original."""
    from qeu_tune.sweep import plan_sweep, run_sweep

    client = client_for(uri)
    run = find_run(client, ref)
    kind = run.data.tags.get(tracking.TAG_KIND)
    if kind == "trial":  # exact reproduction of one trial (same seed unless told otherwise)
        config = load_config_artifact(client, run.info.run_id)
        original_seed = int(config.get("seed") or 0)
        seed_list = [original_seed] if seeds is None else fresh_seeds([original_seed], seeds)
        source, label, original = run.info.run_id, run.data.tags.get(tracking.TAG_CONFIG_KEY, ""), None
    else:
        report = build_report(client, load_sweep(client, ref), by=by)
        best = best_configuration(client, report)
        config = best.config
        count = seeds or max(len(best.seeds), 1)
        seed_list = fresh_seeds(report.trials["seed"].dropna().astype(int).tolist(), count)
        source, label, original = report.sweep.run_id, best.label, (report, best)
    config = copy.deepcopy(config)
    config.pop("seed", None)
    config["search"].update({"space": {}, "when": {}, "algorithm": "grid", "num_samples": 1,
                             "num_seeds": len(seed_list), "seed": seed_list[0]})
    config["tracking"]["uri"] = uri
    config["sweep_name"] = f"rerun-{config.get('sweep_name', 'sweep')}"
    config.setdefault("tags", {}).update({"qeu.rerun_of": source, "qeu.rerun_config": label[:4000]})
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
            new[f"{by_stat}/iqm_lo"] <= old[f"{by_stat}/iqm_hi"] and old[f"{by_stat}/iqm_lo"] <= new[f"{by_stat}/iqm_hi"]
        )
        verdict = "held: the CIs overlap" if held else "did NOT hold: the CIs do not overlap"
        print(f"  The tuning result {verdict}.")
        client.set_tag(result.parent_run_id, "qeu.rerun_held", str(bool(held)))
        comparison.update({"original": dict(old), "held": bool(held)})
    return comparison
