"""Run descriptions for the MLflow UI: a sweep's or a study's summary as Markdown.

MLflow shows the tag ``mlflow.note.content`` as the run's description, rendered as Markdown,
on the run page. A sweep's parent run gets its best configuration, the ranking table and
where the report files are (``sweep_note``); a study run gets its verdict table
(``study_note``). No Ray.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from qeu_tune.analysis import stats
from qeu_tune.analysis.study_report import format_summary
from qeu_tune.analysis.tables import SweepReport, best_configuration_row, summary_table
from qeu_tune.core import tags

# MLflow truncates run tag values beyond 8,000 characters (mlflow.utils.validation.MAX_TAG_VAL_LENGTH);
# a note is kept below it by leaving out ranking rows, never cut mid-table.
NOTE_LIMIT = 8000


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of equal keys as a GitHub-flavoured Markdown table (``|`` in cells escaped).

    Example:
        >>> print(markdown_table([{"config": "lr=0.001", "seeds": 3}]))
        | config | seeds |
        |---|---|
        | lr=0.001 | 3 |
    """
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def sweep_note(report: SweepReport, *, report_dir: str, artifact_uri: str = "", files: Sequence[str] = ()) -> str:
    """A sweep's parent-run description: best configuration, ranking table, the report's files.

    Args:
        report: The end-of-sweep report (``build_report``).
        report_dir: The artifact folder of the report files (``render.REPORT_DIR``).
        artifact_uri: The parent run's artifact root.
        files: Names of the report files logged under ``report_dir``.
    """
    sweep = report.sweep
    head = [f"## Sweep {sweep.name}", ""]
    if len(report.ranked):
        best = best_configuration_row(report)
        values = report.values.get(best["label"]) or {}
        overrides = " ".join(f"`{k}={v}`" for k, v in values.items()) or "the base config (no sampled values)"
        head += [
            f"**Best configuration:** `{best['label']}`: {best['by']} of {report.metric} = {best['ci']} "
            f"(IQM over {best['seeds']} seed{'s' if best['seeds'] != 1 else ''}); its best seed: run "
            f"`{best['run_id']}`.",
            "",
            f"Overrides: {overrides}",
            "",
        ]
    else:
        head += ["No trial reported results: nothing to rank.", ""]
    direction = "higher" if stats.STAT_DIRECTIONS.get(report.by, True) else "lower"
    caption = (
        f"Ranked by IQM over seeds of each trial's {report.by} of {report.metric} ({direction} is better), "
        f"95% stratified-bootstrap CIs; {report.failed} failed trials."
    )
    listed = ", ".join(f"`{name}`" for name in files) or "the ranking, trials table and plots"
    where = f" at `{artifact_uri.rstrip('/')}/{report_dir}`" if artifact_uri else ""
    tail = [
        "",
        "### Report",
        "",
        f"Artifacts of this run under `{report_dir}/`{where}: {listed}. Again, or ranked by another statistic: "
        f"`qeu-tune report {sweep.run_id}`; the best configuration as an experiment file: `qeu-tune best "
        f"{sweep.run_id}`.",
    ]
    rows = summary_table(report).to_dict("records")
    for shown in range(len(rows), -1, -1):  # as many ranking rows as fit
        more = len(rows) - shown
        table = markdown_table(rows[:shown]) if shown else ""
        if more:
            table += f"\n\n{more} more configuration{'s' if more != 1 else ''}: see `{report_dir}/ranking.html`."
        note = "\n".join([*head, "### Ranking", "", caption, "", table.strip(), *tail])
        if len(note) <= NOTE_LIMIT:
            return note
    return "\n".join([*head, *tail])[:NOTE_LIMIT]


def study_note(summary: Mapping[str, Any], *, run_id: str = "") -> str:
    """A study run's description: the verdict table (``format_summary``) as a code block."""
    again = f" Again: `qeu-tune report {run_id}`." if run_id else ""
    tail = (
        f"\n\nArtifacts of this run under `study/`: `summary.json`, `verdicts.csv`, `verdicts.html`, "
        f"`learning_curves.png`, `profile.png`.{again}"
    )
    head = f"## Study {summary['study']}\n\n```text\n"
    body = format_summary(summary)
    room = NOTE_LIMIT - len(head) - len("\n```") - len(tail)
    if len(body) > room:
        body = body[: max(0, room - 2)] + "\n…"
    return f"{head}{body}\n```{tail}"


def log_note(client: Any, run_id: str, note: str) -> None:
    """Sets ``note`` as the run's description in the MLflow UI."""
    client.set_tag(run_id, tags.TAG_NOTE, note)
