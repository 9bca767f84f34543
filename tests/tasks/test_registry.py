"""Registration, gated promotion, rollback and models:/ pulls against a real MLflow store (SQLite)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from modelcore.errors import ConfigError
from modelcore.integrations import mlflow_models
from modelcore.integrations.mlflow_models import RegistryError
from modelcore.pipelines import pipeline
from tasks import settings
from tasks.data import check_max_length
from tasks.registry import CHAMPION, decide, register, set_champion
from tasks.tracking import start_run

TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "The plot is nothing but boilerplate cliches from start to finish.",
    "It's a sweet, tender film.",
]


@pytest.mark.parametrize(
    ("new", "current", "min_gain", "promoted"),
    [
        (0.80, None, 0.0, True),
        (0.81, 0.80, 0.0, True),
        (0.80, 0.80, 0.0, False),
        (0.805, 0.80, 0.01, False),
        (0.82, 0.80, 0.01, True),
        (0.70, 0.80, 0.0, False),
    ],
)
def test_decide_needs_a_gain_above_the_minimum(new, current, min_gain, promoted):
    assert decide(new, current, min_gain)[0] is promoted


@pytest.mark.parametrize(
    ("new", "current", "baseline", "min_metric", "promoted", "reason"),
    [
        (0.568, None, 0.568, None, False, "below the floor: accuracy 0.5680 is not above the majority-class baseline"),
        (0.50, 0.45, 0.568, None, False, "below the floor"),  # beating a bad champion is not enough
        (0.60, None, 0.568, None, True, "above the majority-class baseline 0.5680); no champion yet"),
        (0.75, None, 0.568, 0.80, False, "accuracy 0.7500 does not reach min_metric 0.8000"),
        (0.80, None, 0.568, 0.80, True, "reaches min_metric 0.8000"),
        (0.85, 0.80, 0.568, 0.80, True, "beats the champion by +0.0500 (0.8000 before"),
        (0.80, 0.80, 0.568, None, False, "gain +0.0000 over the champion's 0.8000 is not above the min gain 0"),
    ],
)
def test_a_champion_must_clear_the_baseline_and_min_metric_first(new, current, baseline, min_metric, promoted, reason):
    decision = decide(new, current, 0.0, baseline=baseline, min_metric=min_metric, metric="accuracy")
    assert decision[0] is promoted and reason in decision[1], decision


def test_the_floor_follows_the_metric_direction():
    assert decide(9.0, None, 0.0, greater_is_better=False, baseline=12.0, metric="perplexity")[0] is True
    assert decide(12.0, None, 0.0, greater_is_better=False, baseline=12.0, metric="perplexity")[0] is False


def _register(uri, checkpoint, accuracy, name="sentiment", min_gain=0.0, baseline=None, min_metric=None, f1=None):
    run_id = start_run.fn(uri, "registry-test", "unit", {"lr": 1e-4}, {"data_fingerprint": "abc"})
    metrics = {"accuracy": accuracy}
    if f1 is not None:
        metrics["f1_macro"] = f1
    if baseline is not None:
        metrics |= {"baseline_accuracy": baseline[0], "baseline_f1_macro": baseline[1]}
    return register.fn(
        uri,
        run_id,
        str(checkpoint),
        name,
        metrics,
        "accuracy",
        min_gain,
        tags={"data_fingerprint": "abc"},
        input_example=TEXTS[:2],
        max_length=32,
        min_metric=min_metric,
    )


def test_a_majority_class_model_is_registered_but_never_champion(pipeline_home, tiny_checkpoint, caplog):
    """The issue's 20-step run: accuracy 0.568 and macro F1 0.36 on a 56.8% majority split, no champion yet."""
    import logging

    uri = settings.tracking_uri()
    caplog.set_level(logging.INFO, logger="tasks.registry")
    useless = _register(uri, tiny_checkpoint, 0.568, f1=0.3622, baseline=(0.568, 0.3622))
    assert (useless.promoted, useless.aliases, useless.champion_version) == (False, ("challenger",), None)
    assert "not above the majority-class baseline 0.5680" in useless.reason
    client = mlflow_models.client(uri)
    assert "champion" not in client.get_registered_model("sentiment").aliases
    tags = client.get_model_version("sentiment", useless.version).tags
    assert tags["promotion"] == "not promoted" and tags["promotion_reason"] == useless.reason
    assert (tags["baseline.accuracy"], tags["baseline.f1_macro"], tags["metric.accuracy"]) == (
        "0.568000",
        "0.362200",
        "0.568000",
    )
    assert "metric.baseline_accuracy" not in tags
    logged = [r.getMessage() for r in caplog.records if r.name == "tasks.registry"]
    assert any("version 1: challenger, not champion: below the floor: accuracy 0.5680" in m for m in logged), logged
    # the normal path: a model above the baseline becomes champion ...
    useful = _register(uri, tiny_checkpoint, 0.83, f1=0.82, baseline=(0.568, 0.3622))
    assert useful.promoted and useful.aliases == ("challenger", "champion")
    assert "accuracy 0.8300 (above the majority-class baseline 0.5680); no champion yet" in useful.reason
    # ... and one that beats it but misses min_metric does not
    short = _register(uri, tiny_checkpoint, 0.86, f1=0.85, baseline=(0.568, 0.3622), min_metric=0.9)
    assert not short.promoted and short.champion_version == useful.version
    assert "does not reach min_metric 0.9000" in short.reason


def test_champion_moves_only_on_a_gain_and_rolls_back(pipeline_home, tiny_checkpoint):
    uri = settings.tracking_uri()
    first = _register(uri, tiny_checkpoint, 0.80)
    assert (first.version, first.promoted, set(first.aliases)) == (1, True, {"challenger", "champion"})
    worse = _register(uri, tiny_checkpoint, 0.79)
    assert (worse.promoted, worse.aliases, worse.champion_version) == (False, ("challenger",), 1)
    equal = _register(uri, tiny_checkpoint, 0.80)
    assert not equal.promoted
    better = _register(uri, tiny_checkpoint, 0.83)
    assert better.promoted and better.version == 4
    client = mlflow_models.client(uri)
    model = client.get_registered_model("sentiment")
    assert model.aliases == {"champion": "4", "challenger": "4"} or model.aliases == {"champion": 4, "challenger": 4}
    version = client.get_model_version("sentiment", "4")
    assert version.tags["metric.accuracy"] == "0.830000" and version.tags["data_fingerprint"] == "abc"
    assert "beats the champion by +0.0300" in version.tags["promotion_reason"]
    # roll back to the previous champion (1), with the reason recorded
    assert set_champion.fn(uri, "sentiment", None, "regression seen in production", rollback=True) == "1"
    assert str(mlflow_models.alias_version("sentiment", CHAMPION, uri).version) == "1"
    assert client.get_model_version("sentiment", "1").tags["promotion_reason"] == "regression seen in production"
    with pytest.raises(ValueError, match="no version 99"):
        set_champion.fn(uri, "sentiment", "99", "typo")
    with pytest.raises(ValueError, match="'nope' does not exist"):
        set_champion.fn(uri, "nope", "1", "x")


def test_a_failed_registration_leaves_no_version(pipeline_home, tiny_checkpoint, monkeypatch):
    uri = settings.tracking_uri()
    from mlflow import MlflowClient

    def refuse(self, name, alias, version):
        raise RuntimeError("registry refused the alias")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="refused the alias"):
        _register(uri, tiny_checkpoint, 0.9, name="half")
    assert mlflow_models.client(uri).search_model_versions("name='half'") == []


def test_models_uri_loads_the_same_model_in_modelcore_and_in_mlflow(pipeline_home, tiny_checkpoint, monkeypatch):
    uri = settings.tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _register(uri, tiny_checkpoint, 0.8, name="pulled")
    # the max_length check reads a registered model's config through its models:/ URI
    check_max_length("models:/pulled@champion", 512)
    with pytest.raises(ConfigError, match="max_length 513 is more than the max_position_embeddings 512 .*pulled"):
        check_max_length("models:/pulled@champion", 513)
    local = pipeline("text-classification", model=str(tiny_checkpoint)).predict_logits(TEXTS)
    for ref in ("models:/pulled@champion", "models:/pulled/1"):
        pulled = pipeline("text-classification", model=ref)
        assert np.array_equal(pulled.predict_logits(TEXTS), local)  # bitwise: same files, same code path
        # the sqlite fast path (no mlflow import) finds what the mlflow client finds
        fast = mlflow_models._fast_resolve(ref, uri)
        assert fast is not None and fast == mlflow_models.resolve_uri(ref.replace("models:/", "models:/", 1), uri)
    monkeypatch.setattr(mlflow_models, "_fast_resolve", lambda *a: None)  # the full mlflow client path
    assert np.array_equal(pipeline("text-classification", model="models:/pulled@champion").predict_logits(TEXTS), local)
    import mlflow
    import pandas as pd

    served = mlflow.pyfunc.load_model("models:/pulled@champion").predict(pd.DataFrame({"text": TEXTS}))
    probs = pipeline("text-classification", model=str(tiny_checkpoint)).predict_proba(TEXTS)
    assert list(served.columns[:2]) == ["label", "score"]
    np.testing.assert_allclose(served["score"].to_numpy(), probs.max(axis=1), rtol=0, atol=1e-6)
    with pytest.raises(RegistryError, match="models:/pulled@nope.*no alias 'nope'"):
        pipeline("text-classification", model="models:/pulled@nope")
    with pytest.raises(RegistryError, match="models:/missing@champion"):
        pipeline("text-classification", model="models:/missing@champion")


def test_run_params_are_flattened_and_secrets_dropped(pipeline_home):
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    params = {"training": {"learning_rate": 1e-4, "hub_token": "hf_abc"}, "db": {"password": "pw"}, "seed": 3}
    run_id = start_run.fn(uri, "params-test", "unit", params, {})
    logged = MlflowClient(tracking_uri=uri).get_run(run_id).data.params
    assert logged == {"training.learning_rate": "0.0001", "seed": "3"}


def test_the_version_comes_from_the_run_logged_model_and_carries_descriptions(pipeline_home, tiny_checkpoint):
    from mlflow.entities import LoggedModelStatus

    uri = settings.tracking_uri()
    run_id = start_run.fn(uri, "registry-test", "unit", {}, {})
    registration = register.fn(
        uri, run_id, str(tiny_checkpoint), "described", {"accuracy": 0.8}, "accuracy", 0.0,
        tags={"data_fingerprint": "abc"}, input_example=TEXTS[:2], max_length=32,
        description="trained on reviews, fingerprint abc", model_description="a sentiment classifier", step=7,
    )  # fmt: skip
    client = mlflow_models.client(uri)
    (output,) = client.get_run(run_id).outputs.model_outputs  # the run page's logged model
    assert output.step == 7
    model = client.get_logged_model(output.model_id)
    assert (model.name, model.source_run_id, model.status) == ("model", run_id, LoggedModelStatus.READY)
    assert model.tags["data_fingerprint"] == "abc" and model.tags["metric.accuracy"] == "0.800000"
    version = client.get_model_version("described", registration.version)
    assert version.source == model.artifact_location and version.run_id == run_id
    assert version.description.startswith("trained on reviews, fingerprint abc\nChampion: accuracy 0.8000")
    registered = client.get_registered_model("described")
    assert registered.description == "a sentiment classifier"
    assert registered.tags == {"task": "text-classification", "promotion_metric": "accuracy"}
    # runs:/<run>/model names the logged model, as in MLflow 3; modelcore and mlflow both resolve it
    checkpoint = mlflow_models.resolve_uri(f"runs:/{run_id}/model", uri)
    assert (checkpoint / "config.json").is_file() and checkpoint.parent.name == "artifacts"
    assert checkpoint == mlflow_models.resolve_uri("models:/described/1", uri)


def test_a_failed_model_upload_leaves_a_failed_logged_model_without_files(pipeline_home, tiny_checkpoint, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    uri = settings.tracking_uri()
    run_id = start_run.fn(uri, "registry-test", "unit", {}, {})

    def disk_full(self, model_id, local_dir, artifact_path=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", disk_full)
    with pytest.raises(OSError, match="No space left"):
        mlflow_models.log_pyfunc(run_id, tiny_checkpoint, tracking_uri=uri, input_example=TEXTS[:1], max_length=32)
    client = MlflowClient(tracking_uri=uri)
    (output,) = client.get_run(run_id).outputs.model_outputs
    assert client.get_logged_model(output.model_id).status == LoggedModelStatus.FAILED


def _champion_chain(client, name: str) -> list[str]:
    """The champion, then the champion it beat (version tag ``previous_champion``), and so on back."""
    chain = [str(client.get_model_version_by_alias(name, CHAMPION).version)]
    while (previous := client.get_model_version(name, chain[-1]).tags.get("previous_champion")) is not None:
        chain.append(previous)
    return chain


def test_concurrent_registrations_leave_one_champion_and_a_monotone_chain(pipeline_home, tiny_checkpoint, monkeypatch):
    """Six threads register at once; reading the champion is slowed down so that, without the promotion lock,
    several would read the same champion and each move the alias believing it won."""
    import threading

    from tasks import registry

    uri = settings.tracking_uri()
    real_champion_metric = registry.champion_metric

    def slow_champion_metric(*args):
        found = real_champion_metric(*args)
        time.sleep(0.3)  # the window between reading the champion and moving the alias
        return found

    monkeypatch.setattr(registry, "champion_metric", slow_champion_metric)
    accuracies = [0.70, 0.80, 0.75, 0.90, 0.85, 0.60]  # 0.60 is below the baseline 0.65: never champion
    barrier = threading.Barrier(len(accuracies))
    results, errors = {}, []

    def one(accuracy: float) -> None:
        try:
            barrier.wait(timeout=60)
            results[accuracy] = _register(uri, tiny_checkpoint, accuracy, name="raced", baseline=(0.65, 0.4))
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=one, args=(a,)) for a in accuracies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == len(accuracies)

    client = mlflow_models.client(uri)
    versions = {str(v.version): v for v in client.search_model_versions("name='raced'")}
    assert len(versions) == len(accuracies)
    accuracy_of = {version: float(v.tags["metric.accuracy"]) for version, v in versions.items()}
    champion = str(client.get_model_version_by_alias("raced", CHAMPION).version)
    assert accuracy_of[champion] == 0.90
    assert str(results[0.90].version) == champion and results[0.90].promoted
    assert not results[0.60].promoted and "below the floor" in results[0.60].reason
    # every promotion beat the champion of its moment: the chain of champions only goes up, and each
    # version that believes it was promoted is on it (two winners of one moment would share a predecessor)
    chain = _champion_chain(client, "raced")
    scores = [accuracy_of[version] for version in reversed(chain)]
    assert scores == sorted(scores) and len(set(scores)) == len(scores), list(zip(chain, scores, strict=True))
    promoted = {version for version, v in versions.items() if v.tags["promotion"] == "promoted"}
    assert promoted == set(chain)
    assert {str(r.version) for r in results.values() if r.promoted} == promoted


def test_with_a_tracking_server_the_lock_is_a_prefect_concurrency_limit():
    """The lock for an MLflow server: Prefect's global concurrency limit, taken from plain Python outside a flow,
    one holder at a time, created on first use with limit 1 and free again afterwards."""
    import contextvars
    import threading

    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from tasks import registry

    with prefect_test_harness(server_startup_timeout=120):
        inside: list[int] = []
        seen: list[tuple[str, int]] = []

        def hold() -> None:
            with registry.promotion_lock("shared", "http://127.0.0.1:9", timeout=120) as kind:
                inside.append(1)
                seen.append((kind, len(inside)))
                time.sleep(0.3)
                inside.pop()

        # each thread runs in a copy of this context: that is where the harness's settings live
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(hold,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert seen == [("prefect", 1)] * 3
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(registry.prefect_limit_name("shared"))
        assert (limit.limit, limit.active_slots) == (1, 0)
