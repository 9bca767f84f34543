"""The evaluation task's majority-class baseline: the floor a new champion must clear."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks.data import load_dataset
from tasks.evaluation import evaluate, majority_baseline


def test_the_baseline_predicts_the_majority_training_label_on_the_held_out_rows():
    """The issue's split: 56.8% majority gives accuracy 0.568 and macro F1 0.36."""
    train = np.array([1] * 568 + [0] * 432)
    test = np.array([1] * 142 + [0] * 108)  # 56.8% of 250
    baseline = majority_baseline(train, test, 2)
    assert baseline["label"] == 1 and baseline["accuracy"] == pytest.approx(0.568)
    assert baseline["f1_macro"] == pytest.approx((2 * 0.568 / 1.568) / 2) and round(baseline["f1_macro"], 2) == 0.36
    # the majority of the training split, not the test split's: what a model trained there would learn
    flipped = majority_baseline(train, np.array([0] * 3 + [1]), 2)
    assert (flipped["label"], flipped["accuracy"]) == (1, 0.25)
    tie = majority_baseline(np.array([2, 0, 2, 0]), np.array([0, 1, 2]), 3)
    assert tie["label"] == 0 and tie["f1_macro"] == pytest.approx((2 * (1 / 3) / (4 / 3)) / 3)


def test_evaluate_reports_the_baseline_in_its_metrics_and_report(pipeline_home, real_csv, tiny_checkpoint, tmp_path):
    data = load_dataset.fn(str(real_csv), "review", "sentiment")
    result = evaluate.fn(str(tiny_checkpoint), data.path, list(data.labels), 32, str(tmp_path / "evaluation"))
    majority = int(np.argmax(data.train_label_counts))
    expected_accuracy = data.test_label_counts[majority] / data.num_test
    metrics = result.metrics
    assert set(metrics) == {"accuracy", "f1_macro", "baseline_accuracy", "baseline_f1_macro"}
    assert metrics["baseline_accuracy"] == pytest.approx(expected_accuracy)
    report = json.loads((Path(result.report_dir) / "evaluation.json").read_text())
    assert report["baseline"] == {
        "kind": "majority class",
        "label": majority,
        "label_name": data.labels[majority],
        "accuracy": metrics["baseline_accuracy"],
        "f1_macro": metrics["baseline_f1_macro"],
    }


def test_the_loss_curve_is_drawn_from_the_logged_losses_or_not_at_all(tmp_path):
    from tasks.evaluation import plot_loss_curve

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (2, 4, 6)))
    curve = tmp_path / "loss_curve.png"
    assert plot_loss_curve(log, curve) and curve.stat().st_size > 0
    log.write_text(json.dumps({"step": 6, "train_runtime": 1.0}) + "\n")  # a run shorter than logging_steps
    assert not plot_loss_curve(log, curve) and not curve.exists()  # no empty axes, and no stale plot
