"""The evaluation task: a checkpoint scored on the held-out split, with a report and plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.serialization.atomic import atomic_path, atomic_write_text
from modelcore.task_registry.text_classification import classification_metrics, majority_baseline
from tasks.results import Evaluation

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 64
REPORT_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.jsonl"


def score_checkpoint(
    checkpoint: str, inputs: list, max_length: int, task_name: str = "text-classification"
) -> np.ndarray:
    """Class probabilities of ``inputs`` (texts, or encoded images for an image task) through ``modelcore.pipeline``
    (the code path consumers use)."""
    from modelcore.pipelines import pipeline
    from modelcore.task_registry import get_task

    spec = get_task(task_name)
    pipe = pipeline(spec.pipeline_task, model=checkpoint)
    if spec.modality == "image":
        return pipe.predict_proba(inputs, batch_size=EVAL_BATCH_SIZE)
    return pipe.predict_proba(inputs, batch_size=EVAL_BATCH_SIZE, max_length=max_length)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(
    checkpoint: str,
    dataset_path: str,
    labels: list[str],
    max_length: int,
    output_dir: str,
    train_log: str | None = None,
    task_name: str = "text-classification",
) -> Evaluation:
    """Score ``checkpoint`` on ``dataset_path/test`` and write the evaluation report.

    Writes to ``output_dir``: ``evaluation.json`` (metrics, confusion matrix, the majority-class
    baseline, settings), ``predictions.jsonl`` (one line per held-out row: its text, or an image's source file or
    row, label, predicted, probabilities), ``confusion_matrix.png`` and, when ``train_log`` holds logged losses,
    ``loss_curve.png``.

    Returns:
        An ``Evaluation``: metrics ``accuracy``, ``f1_macro``, ``baseline_accuracy``, ``baseline_f1_macro``, and the report dir;
        the ``baseline_*`` metrics are the majority-class baseline's (:func:`majority_baseline`) on the
        same held-out rows, the floor ``tasks.registry.register`` holds a new champion to.
    """
    import datasets

    test = datasets.load_from_disk(str(Path(dataset_path) / "test"))
    train_labels = np.asarray(datasets.load_from_disk(str(Path(dataset_path) / "train"))["label"])
    from modelcore.task_registry import get_task

    image = get_task(task_name).modality == "image"
    gold = np.asarray(list(test["label"]))
    inputs = list(test["image"] if image else test["text"])
    probs = score_checkpoint(checkpoint, inputs, max_length, task_name)
    shown = list(test["source"]) if image else inputs  # what a predictions line names its input by
    predicted = probs.argmax(axis=1)
    result = classification_metrics(gold, predicted, len(labels))
    baseline = majority_baseline(train_labels, gold, len(labels))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": checkpoint,
        "examples": len(inputs),
        "labels": list(labels),
        "max_length": max_length,
        "batch_size": EVAL_BATCH_SIZE,
        **result,
        "baseline": {"kind": "majority class", **baseline, "label_name": labels[baseline["label"]]},
    }
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    key = "source" if image else "text"
    lines = (
        json.dumps({key: t, "label": int(g), "predicted": int(p), "probs": [float(x) for x in row]})
        for t, g, p, row in zip(shown, gold, predicted, probs, strict=True)
    )
    atomic_write_text(out / PREDICTIONS_FILE, "".join(line + "\n" for line in lines))
    plot_confusion(np.asarray(result["confusion_matrix"]), labels, out / "confusion_matrix.png")
    if train_log and Path(train_log).is_file():
        plot_loss_curve(Path(train_log), out / "loss_curve.png")
    metrics = {
        "accuracy": result["accuracy"],
        "f1_macro": result["f1_macro"],
        "baseline_accuracy": baseline["accuracy"],
        "baseline_f1_macro": baseline["f1_macro"],
    }
    logger.info(
        "evaluation on %d held-out rows: accuracy %.4f, macro F1 %.4f; always predicting %r (the majority "
        "training label): accuracy %.4f, macro F1 %.4f",
        len(inputs),
        metrics["accuracy"],
        metrics["f1_macro"],
        labels[baseline["label"]],
        baseline["accuracy"],
        baseline["f1_macro"],
    )
    return Evaluation(metrics, str(out))


def plot_confusion(confusion: np.ndarray, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3 + 0.5 * len(labels), 3 + 0.5 * len(labels)))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", color="black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_loss_curve(train_log: Path, path: Path) -> bool:
    """Plot the training loss of ``train_log`` (JSON lines with ``step`` and ``loss``) to ``path``.

    Returns:
        Whether a plot was written: a log without a loss (a run shorter than ``logging_steps``) writes none,
        rather than empty axes, and removes an older plot at ``path``.
    """
    points = []
    for line in train_log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        if "loss" in record and "step" in record:
            points.append((record["step"], record["loss"]))
    if not points:
        logger.info("%s holds no training loss (fewer steps than logging_steps): no loss curve", train_log)
        path.unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(*zip(*points, strict=True), marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
