"""What a finished run shows on its Prefect page: a markdown summary artifact, table artifacts, a readable last line.

The summary names the registered version, its aliases, the promotion decision with its reason, the metrics beside
the baseline's, the export checks, the data and the stage timings, with links to the MLflow run and model version
when the tracking store has a web UI (an ``http(s)`` tracking URI); for a local store it gives the ``mlflow ui``
command that opens it. The evaluation's numbers go into table artifacts (metrics; a classifier's per-class
precision, recall and confusion counts), which the run page's Artifacts tab lists.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPORT_FILE = "evaluation.json"  # tasks.evaluation's report inside the evaluation directory
BASELINE_PREFIX = "baseline_"
ML_MODE = "workflowType=machine_learning"  # MLflow UI links open in its model-training mode


def summary_line(summary: dict[str, Any]) -> str:
    """One readable line: the version and whether it became champion (and why), the deciding numbers, the run."""
    metrics = {k: v for k, v in summary.get("metrics", {}).items() if not k.startswith(BASELINE_PREFIX)}
    shown = ", ".join(f"{k} {_number(v)}" for k, v in metrics.items())
    if "version" in summary:
        verdict = "champion" if "champion" in (summary.get("aliases") or ()) else "not champion"
        head = f"{summary['registered_model']} version {summary['version']}: {verdict} ({summary.get('promotion')})"
    else:
        head = f"not registered ({summary.get('registration', 'register_model=False')})"
    total = sum((summary.get("timings_s") or {}).values())
    return f"retrain finished: {head}; {shown}; MLflow run {summary.get('mlflow_run_id')}; {total:.0f} s"


def summary_markdown(summary: dict[str, Any], links: dict[str, str] | None = None) -> str:
    """The run's summary as markdown (see the module docstring); ``links``: ``run`` and ``version`` URLs, if any."""
    links = links or {}
    lines = [f"# Retrain ({summary.get('task', 'text-classification')})", ""]
    if "version" in summary:
        version = f"version {summary['version']}"
        if links.get("version"):
            version = f"[{version}]({links['version']})"
        aliases = ", ".join(f"`{a}`" for a in summary.get("aliases") or []) or "none"
        champion = "**promoted to champion**" if "champion" in (summary.get("aliases") or ()) else "**not promoted**"
        lines += [
            f"**{summary['registered_model']}** {version}, aliases {aliases}: {champion}.",
            "",
            f"Reason: {summary.get('promotion')}. Champion now: version {summary.get('champion_version')}.",
        ]
    else:
        lines.append(f"Not registered: {summary.get('registration')}.")
    run = f"`{summary.get('mlflow_run_id')}`"
    lines += ["", "MLflow run: " + (f"[{run}]({links['run']})" if links.get("run") else run)]
    if not links.get("run") and summary.get("tracking_uri"):
        lines.append(f"(open it with `mlflow ui --backend-store-uri {summary['tracking_uri']} --host 127.0.0.1`)")
    lines += ["", "## Metrics", "", "| metric | this model | baseline |", "|---|---|---|"]
    metrics = summary.get("metrics", {})
    for key, value in metrics.items():
        if not key.startswith(BASELINE_PREFIX):
            baseline = metrics.get(BASELINE_PREFIX + key)
            lines.append(f"| {key} | {_number(value)} | {_number(baseline) if baseline is not None else '-'} |")
    checks = summary.get("export_checks") or {}
    if checks:
        lines += ["", "## Exports", "", "| export | kept | figures |", "|---|---|---|"]
        for name, figures in checks.items():
            shown = ", ".join(f"{k} {_number(v)}" for k, v in figures.items() if k not in ("passed", "shards"))
            lines.append(f"| {name} | {'yes' if figures.get('passed') else 'no'} | {shown or '-'} |")
    data = summary.get("data") or {}
    if data:
        dropped = ", ".join(f"{n} {reason}" for reason, n in (data.get("dropped") or {}).items()) or "none"
        lines += ["", "## Data", "", f"{data.get('rows_read')} rows read, dropped: {dropped}; "
                  f"fingerprint `{summary.get('data_fingerprint')}`."]  # fmt: skip
        if data.get("labels"):
            lines.append(f"Classes: {', '.join(map(str, data['labels']))}.")
    if summary.get("resumed_from"):
        resumed = summary["resumed_from"]
        lines += [
            "",
            f"Resumed from {resumed.get('checkpoint') or 'the start'} (MLflow run {resumed.get('mlflow_run_id')}).",
        ]
    training = summary.get("training") or {}
    if training.get("nodes", 1) > 1 or training.get("restarts"):
        lines += [
            "",
            f"Trained on {training.get('nodes', 1)} node(s); {training.get('restarts', 0)} restart(s), the last "
            f"resuming at step {training.get('resumed_from_step', 0)}; {training.get('time_lost_s', 0.0):.1f} s lost "
            "to restarts.",
        ]
    if summary.get("timings_s"):
        lines += ["", "## Stages (seconds)", "", "| stage | s |", "|---|---|"]
        lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in summary["timings_s"].items()]
    return "\n".join(lines) + "\n"


def evaluation_tables(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Table artifacts of the evaluation: ``metrics`` always; ``per-class`` for a classifier (precision, recall, F1,
    support and the confusion row of each class, from the evaluation report)."""
    metrics = summary.get("metrics", {})
    tables = {
        "metrics": [
            {"metric": k, "model": v, "baseline": metrics.get(BASELINE_PREFIX + k)}
            for k, v in metrics.items()
            if not k.startswith(BASELINE_PREFIX)
        ]
    }
    report = Path(summary.get("evaluation_dir") or "") / REPORT_FILE
    if report.is_file():
        data = json.loads(report.read_text(encoding="utf-8"))
        confusion, labels = data.get("confusion_matrix"), data.get("labels")
        if confusion and labels:
            tables["per-class"] = _per_class(confusion, labels)
    return tables


def _per_class(confusion: list[list[int]], labels: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, label in enumerate(labels):
        true_positive = confusion[i][i]
        predicted = sum(row[i] for row in confusion)
        support = sum(confusion[i])
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        row = {"class": label, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}
        row["support"] = support
        row |= {f"predicted {other}": confusion[i][j] for j, other in enumerate(labels)}
        rows.append(row)
    return rows


def mlflow_links(tracking_uri: str, run_id: str, name: str | None, version: Any) -> dict[str, str]:
    """URLs of the run's and the version's MLflow pages when the store is an MLflow server; else empty."""
    if not tracking_uri.startswith(("http://", "https://")):
        return {}
    from mlflow import MlflowClient

    base = tracking_uri.rstrip("/")
    experiment = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    # MLflow's UI keeps a per-browser mode, GenAI by default (traces dashboards, evaluation runs); the experiment's
    # kind tag does not switch it, the link's workflowType does
    links = {"run": f"{base}/#/experiments/{experiment}/runs/{run_id}?{ML_MODE}"}
    if name and version is not None:
        links["version"] = f"{base}/#/models/{name}/versions/{version}?{ML_MODE}"
    return links


def publish(summary: dict[str, Any]) -> None:
    """The summary markdown and the evaluation tables as artifacts of the current Prefect flow run; the readable
    line to the log. A failure to publish (the Prefect API down) is logged, never fails a finished run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    try:
        links = mlflow_links(
            summary.get("tracking_uri", ""), summary.get("mlflow_run_id", ""), summary.get("registered_model"),
            summary.get("version"),
        )  # fmt: skip
    except Exception as error:  # the links are a convenience: the summary goes out without them
        logger.warning("no MLflow links in the run summary: %s", error)
        links = {}
    try:
        create_markdown_artifact(
            summary_markdown(summary, links), key="retrain-summary", description=summary_line(summary)[:250]
        )
        for name, table in evaluation_tables(summary).items():
            create_table_artifact(table, key=f"evaluation-{name}", description=f"held-out evaluation: {name}")
    except Exception as error:
        logger.warning("could not publish the run's artifacts to Prefect: %s", error)
    logger.info("%s", summary_line(summary))


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
