"""MLflowCallback against a real MLflow store (sqlite + local artifacts under tmp_path)."""

from __future__ import annotations

import json
import logging
import math
import os
import uuid

import pytest
import torch

from modelcore import BertConfig, BertForSequenceClassification
from modelcore.trainer import Trainer, TrainingArguments
from modelcore.trainer.callbacks import TrainerControl, TrainerState

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402

from modelcore.integrations.mlflow import (  # noqa: E402
    MLflowCallback,
    flatten_params,
    is_secret_key,
    param_value,
    sanitize_key,
)


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds); the global URI is restored after."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    root = tmp_path_factory.mktemp("mlflow")
    previous = tracking_utils._tracking_uri  # None unless someone set it: then MLFLOW_TRACKING_URI rules
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")  # set_tracking_uri writes this variable too
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    yield root
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)
    if previous_env is not None:
        os.environ["MLFLOW_TRACKING_URI"] = previous_env


@pytest.fixture
def experiment(tracking_store, monkeypatch):
    """A fresh experiment per test, with its artifacts under the store's folder, chosen through the environment."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(name, artifact_location=(tracking_store / name).as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    yield experiment_id
    while mlflow.active_run() is not None:
        mlflow.end_run()


def tiny_model(**overrides) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = dict(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    return BertForSequenceClassification(BertConfig(**(config | overrides)))


def make_args(tmp_path, **overrides) -> TrainingArguments:
    return TrainingArguments(**(dict(output_dir=str(tmp_path / "out"), run_name="unit", disable_tqdm=True) | overrides))


def begin(callback, args, model=None, rank0=True, step=0):
    state = TrainerState(global_step=step, is_world_process_zero=rank0)
    callback.on_train_begin(args, state, TrainerControl(), model=model)
    return state


def only_runs(experiment_id):
    return MlflowClient().search_runs([experiment_id])


# ---------------------------------------------------------------------- helpers


def test_flatten_params_dots_nested_dicts_and_lists():
    flat = flatten_params({"a": {"b": 1, "c": [2, {"d": 3}]}, "e": [], "f": None}, prefix="p")
    assert flat == {"p.a.b": 1, "p.a.c.0": 2, "p.a.c.1.d": 3, "p.e": [], "p.f": None}


def test_flatten_params_keeps_a_huge_container_as_one_value():
    flat = flatten_params({"id2label": {i: f"LABEL_{i}" for i in range(10_000)}})
    assert list(flat) == ["id2label"]


def test_param_value_and_keys_fit_mlflow_limits():
    assert len(param_value("x" * 10_000, 6000)) == 6000
    assert param_value("x" * 10_000, 6000).endswith("...")
    assert sanitize_key("eval_loss") == "eval_loss"
    assert sanitize_key("loss@step#1!") == "loss_step_1_"
    assert sanitize_key("/a//./b/../c/") == "a/b/__/c"
    long_a, long_b = sanitize_key("k" * 300 + "a"), sanitize_key("k" * 300 + "b")
    assert len(long_a) == 250 and long_a != long_b


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("hub_token", True),
        ("token", True),
        ("db.Password", True),
        ("OPENAI_API_KEY", True),
        ("apiKey", True),
        ("client_secret", True),
        ("config.pad_token_id", False),
        ("max_new_tokens", False),
        ("config.tokenizer_class", False),
        ("learning_rate", False),
    ],
)
def test_is_secret_key(key, secret):
    assert is_secret_key(key) is secret


# ---------------------------------------------------------------------- against a real store


def test_starts_a_run_logs_flattened_truncated_params_and_ends_it_finished(experiment, tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    labels = {i: f"LABEL_{i}" for i in range(10_000)}
    model = tiny_model(id2label=labels, label2id={v: k for k, v in labels.items()})
    callback = MLflowCallback()
    args = make_args(tmp_path, learning_rate=3e-4, report_to=["mlflow"])
    state = begin(callback, args, model)

    run = mlflow.get_run(callback.run_id)
    assert run.info.run_name == "unit" and run.info.experiment_id == experiment
    assert mlflow.active_run().info.run_id == callback.run_id
    params = run.data.params
    assert params["learning_rate"] == "0.0003"
    assert params["report_to.0"] == "mlflow"
    assert params["config.hidden_size"] == "8"
    assert params["config.model_type"] == "bert"
    assert params["model_num_parameters"] == str(model.num_parameters())
    assert len(params["config.id2label"]) == MAX_PARAM_VAL_LENGTH
    assert all(len(v) <= MAX_PARAM_VAL_LENGTH for v in params.values())

    callback.on_train_end(args, state, TrainerControl())
    assert mlflow.active_run() is None
    assert mlflow.get_run(callback.run_id).info.status == "FINISHED"


def test_params_go_out_in_batches_of_at_most_100(experiment, tmp_path, monkeypatch):
    callback = MLflowCallback()
    begin(callback, make_args(tmp_path))
    sizes = []
    log_params = mlflow.log_params

    def spy(params, **kwargs):
        sizes.append(len(params))
        return log_params(params, **kwargs)

    monkeypatch.setattr(mlflow, "log_params", spy)
    callback.log_params({f"batch.p{i}": i for i in range(250)})
    assert sizes == [100, 100, 50]
    assert len([k for k in mlflow.get_run(callback.run_id).data.params if k.startswith("batch.")]) == 250


def test_metrics_are_logged_per_step(experiment, tmp_path):
    callback = MLflowCallback()
    args = make_args(tmp_path)
    state = begin(callback, args)
    for step, loss in [(1, 2.0), (2, 1.5), (3, float("nan"))]:
        state.global_step = step
        logs = {"loss": loss, "learning_rate": 1e-3, "epoch": step / 3, "note": "text", "flag": True}
        callback.on_log(args, state, TrainerControl(), logs=logs)
    state.global_step = 3
    eval_metrics = {"eval_loss": 1.25, "eval_accuracy": torch.tensor(0.75), "eval_runtime": 0.1}
    callback.on_log(args, state, TrainerControl(), logs=eval_metrics)  # the Trainer logs eval metrics...
    callback.on_evaluate(args, state, TrainerControl(), metrics=eval_metrics)  # ...and passes them here too

    client = MlflowClient()
    history = client.get_metric_history(callback.run_id, "train/loss")
    assert [(m.step, m.value) for m in history[:2]] == [(1, 2.0), (2, 1.5)]
    assert history[2].step == 3 and math.isnan(history[2].value)
    assert [(m.step, m.value) for m in client.get_metric_history(callback.run_id, "eval/loss")] == [(3, 1.25)]
    assert client.get_metric_history(callback.run_id, "eval/accuracy")[0].value == 0.75
    logged = mlflow.get_run(callback.run_id).data.metrics
    # grouped by prefix: MLflow's charts show one section per group
    assert set(logged) == {"train/loss", "train/learning_rate", "train/epoch", "eval/loss", "eval/accuracy",
                           "eval/runtime"}  # fmt: skip


def test_metric_names_are_grouped_by_prefix():
    from modelcore.integrations.mlflow import metric_name

    assert [metric_name(k) for k in ("loss", "grad_norm", "eval_loss", "test_f1", "train_runtime")] == [
        "train/loss",
        "train/grad_norm",
        "eval/loss",
        "test/f1",
        "train/runtime",
    ]
    assert metric_name("train_loss") == "train/mean_loss"  # the run's mean, not a point of the per-step curve
    assert metric_name("export/onnx/speedup") == "export/onnx/speedup"


def test_ungrouped_metrics_keep_the_trainer_names(experiment, tmp_path):
    callback = MLflowCallback(group_metrics=False)
    args = make_args(tmp_path)
    state = begin(callback, args)
    state.global_step = 1
    callback.on_log(args, state, TrainerControl(), logs={"loss": 1.0, "eval_loss": 2.0})
    assert set(mlflow.get_run(callback.run_id).data.metrics) == {"loss", "eval_loss"}


def test_an_active_run_is_reused_and_not_ended(experiment, tmp_path):
    args = make_args(tmp_path)
    with mlflow.start_run(run_name="outer") as outer:
        callback = MLflowCallback()
        state = begin(callback, args, tiny_model())
        assert callback.run_id == outer.info.run_id
        callback.on_log(args, state, TrainerControl(), logs={"loss": 1.0})
        callback.on_train_end(args, state, TrainerControl())
        callback.close()  # a failure path must not end it either
        assert mlflow.active_run().info.run_id == outer.info.run_id
    run = mlflow.get_run(outer.info.run_id)
    assert run.info.run_name == "outer" and run.data.metrics["train/loss"] == 1.0
    assert len(only_runs(experiment)) == 1


def test_close_marks_our_run_failed(experiment, tmp_path):
    callback = MLflowCallback()
    begin(callback, make_args(tmp_path))
    callback.close()
    assert mlflow.active_run() is None
    assert mlflow.get_run(callback.run_id).info.status == "FAILED"
    callback.close()  # idempotent


def test_non_zero_ranks_log_nothing(experiment, tmp_path):
    callback = MLflowCallback()
    args = make_args(tmp_path)
    state = begin(callback, args, tiny_model(), rank0=False)
    callback.on_log(args, state, TrainerControl(), logs={"loss": 1.0})
    callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 1.0})
    callback.on_train_end(args, state, TrainerControl())
    assert callback.run_id is None and mlflow.active_run() is None
    assert only_runs(experiment) == []


def test_secret_looking_keys_are_not_logged(experiment, tmp_path):
    callback = MLflowCallback()
    begin(callback, make_args(tmp_path))
    callback.log_params({"hub_token": "hf_abc", "nested.api_key": "sk-1", "db_password": "x", "pad_token_id": 0})
    params = mlflow.get_run(callback.run_id).data.params
    assert params["pad_token_id"] == "0"
    assert not {"hub_token", "nested.api_key", "db_password"} & set(params)
    assert "hf_abc" not in params.values()


def test_conflicting_params_in_a_reused_run_are_skipped_with_a_warning(experiment, tmp_path, caplog):
    args = make_args(tmp_path, learning_rate=1e-3)
    with mlflow.start_run() as outer:
        mlflow.log_params({"learning_rate": "0.5", "seed": str(args.seed)})
        callback = MLflowCallback()
        with caplog.at_level(logging.WARNING, logger="modelcore.integrations.mlflow"):
            begin(callback, args, tiny_model())
    params = mlflow.get_run(outer.info.run_id).data.params
    assert params["learning_rate"] == "0.5"  # kept: MLflow cannot overwrite it
    assert params["config.hidden_size"] == "8"  # the rest was logged
    assert "learning_rate" in caplog.text and "seed" not in caplog.text


def test_invalid_keys_are_sanitized(experiment, tmp_path):
    callback = MLflowCallback()
    args = make_args(tmp_path)
    state = begin(callback, args)
    callback.log_params({"weird key!": 1, "a/../b": 2})
    callback.on_log(args, state, TrainerControl(), logs={"acc@1": 0.5})
    run = mlflow.get_run(callback.run_id)
    assert run.data.params["weird key_"] == "1" and run.data.params["a/__/b"] == "2"
    assert run.data.metrics["train/acc_1"] == 0.5


def test_experiment_name_argument_picks_the_experiment_without_setting_it_globally(experiment, tmp_path):
    name = f"other-{uuid.uuid4().hex[:8]}"
    callback = MLflowCallback(experiment_name=name)
    begin(callback, make_args(tmp_path))
    other = mlflow.get_experiment_by_name(name)
    assert mlflow.get_run(callback.run_id).info.experiment_id == other.experiment_id
    assert other.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow's model-training pages
    callback.close("FINISHED")
    with mlflow.start_run() as run:  # the environment's experiment is still the default
        assert run.info.experiment_id == experiment


def test_checkpoints_are_logged_as_artifacts_when_asked(experiment, tmp_path):
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    args = make_args(tmp_path)
    for flag, expected in [(False, []), (True, ["checkpoints/checkpoint-2/config.json"])]:
        callback = MLflowCallback(log_checkpoints=flag)
        state = begin(callback, args)
        callback.on_save(args, state, TrainerControl(), checkpoint=str(checkpoint))
        found = MlflowClient().list_artifacts(callback.run_id, "checkpoints/checkpoint-2")
        assert [f.path for f in found] == expected
        callback.close("FINISHED")


def test_trainer_with_report_to_mlflow(experiment, tmp_path):
    torch.manual_seed(0)
    rows = [{"input_ids": torch.randint(1, 64, (6,)).tolist(), "labels": i % 2} for i in range(16)]

    def collate(batch):
        return {
            "input_ids": torch.tensor([r["input_ids"] for r in batch]),
            "labels": torch.tensor([r["labels"] for r in batch]),
        }

    args = make_args(tmp_path, report_to="mlflow", max_steps=4, logging_steps=1, save_strategy="no")
    args.per_device_train_batch_size = 4
    trainer = Trainer(tiny_model(), args, train_dataset=rows, eval_dataset=rows, data_collator=collate)
    trainer.train()
    trainer.evaluate()

    (run,) = only_runs(experiment)
    assert run.info.status == "FINISHED" and run.info.run_name == "unit"
    history = MlflowClient().get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert "eval/loss" in run.data.metrics  # the final evaluate lands in the training run
    assert [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "train/mean_loss")] == [4]
    assert run.data.params["max_steps"] == "4"


# ---------------------------------------------------------------------- a tracking server that fails mid-run
def test_a_failing_server_keeps_metrics_and_they_are_replayed(experiment, tmp_path, monkeypatch):
    """Training goes on while the server is down; what was not sent is saved and replayed afterwards."""
    from modelcore.integrations.mlflow import PENDING_METRICS_FILE, replay_pending

    run_id = MlflowClient().create_run(experiment).info.run_id
    callback = MLflowCallback(run_id=run_id, tolerate_errors=True, retry_after_s=0.0)
    args = make_args(tmp_path)
    state = begin(callback, args, model=tiny_model())
    real_log_metrics = mlflow.log_metrics
    down = {"now": False}

    def flaky(metrics, **kwargs):
        if down["now"]:
            raise mlflow.exceptions.MlflowException("API request to http://127.0.0.1:5000 failed: Connection refused")
        return real_log_metrics(metrics, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", flaky)
    for step, is_down in [(1, False), (2, True), (3, True)]:
        down["now"] = is_down
        state.global_step = step
        callback.on_log(args, state, TrainerControl(), logs={"loss": float(step)})
    assert [s for s, _ in callback.pending] == [2, 3]  # kept in order, nothing raised
    callback.on_train_end(args, state, TrainerControl())  # still down: written to a file, run not ended
    pending = tmp_path / "out" / PENDING_METRICS_FILE
    assert pending.is_file() and MlflowClient().get_run(run_id).info.status == "RUNNING"
    down["now"] = False
    assert replay_pending(pending) == 2 and not pending.exists()
    history = MlflowClient().get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_a_server_that_comes_back_gets_the_pending_metrics(experiment, tmp_path, monkeypatch):
    run_id = MlflowClient().create_run(experiment).info.run_id
    callback = MLflowCallback(run_id=run_id, tolerate_errors=True, retry_after_s=0.0)
    args = make_args(tmp_path)
    state = begin(callback, args)
    real_log_metrics = mlflow.log_metrics
    calls = {"n": 0}

    def down_once(metrics, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("connection refused")
        return real_log_metrics(metrics, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", down_once)
    for step in (1, 2):
        state.global_step = step
        callback.on_log(args, state, TrainerControl(), logs={"loss": float(step)})
    assert callback.pending == []
    assert sorted(m.step for m in MlflowClient().get_metric_history(run_id, "train/loss")) == [1, 2]


def test_errors_other_than_the_connection_still_raise(experiment, tmp_path, monkeypatch):
    run_id = MlflowClient().create_run(experiment).info.run_id
    callback = MLflowCallback(run_id=run_id, tolerate_errors=True)
    args = make_args(tmp_path)
    state = begin(callback, args)
    monkeypatch.setattr(mlflow, "log_metrics", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad metric")))
    with pytest.raises(ValueError, match="bad metric"):
        callback.on_log(args, state, TrainerControl(), logs={"loss": 1.0})


def test_a_given_tracking_uri_is_put_back_after_training(tmp_path, monkeypatch):
    """Inside a flow the callback must not leave its tracking URI as the process's global state."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/own.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("own", artifact_location=(tmp_path / "a").as_uri())).info.run_id
    callback = MLflowCallback(tracking_uri=uri, run_id=run_id)
    args = make_args(tmp_path)
    state = begin(callback, args)
    assert mlflow.get_tracking_uri() == uri  # used while training
    callback.on_train_end(args, state, TrainerControl())
    assert tracking_utils._tracking_uri is None and "MLFLOW_TRACKING_URI" not in os.environ
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.params  # the params went to the given store


# ---------------------------------------------------------------------- the pyfunc: what it serves and what it refuses


@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm_dir):
    """A pyfunc model of a seeded tiny BERT (real MiniLM tokenizer), its pipeline, and MLflow's scoring app on it.

    The app is the one ``mlflow models serve`` runs (``scoring_server.init``), called over an in-process client.
    """
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server
    from mlflow.pyfunc.scoring_server import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    from modelcore import AutoTokenizer
    from modelcore.integrations.mlflow_models import save_pyfunc
    from modelcore.pipelines import pipeline

    root = tmp_path_factory.mktemp("pyfunc")
    tiny_model(vocab_size=30522, hidden_size=16, intermediate_size=32).save_pretrained(root / "checkpoint")
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(root / "checkpoint")
    save_pyfunc(root / "checkpoint", root / "model", input_example=["a film", ""], max_length=32)
    model = mlflow.pyfunc.load_model(str(root / "model"))
    with pytest.MonkeyPatch.context() as patch:  # init() marks the process as a serving environment: undo it after
        patch.setenv(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name, "false")
        with TestClient(scoring_server.init(model)) as client:
            yield model, pipeline("text-classification", model=str(root / "checkpoint")), client


TEXTS = ["a gripping, beautifully shot film", "", "dull", "the plot never quite comes together, but the cast is fun"]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_records": [{"text": t} for t in TEXTS]},
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
        {"inputs": TEXTS},
        {"instances": TEXTS},
        {"inputs": {"text": TEXTS}},
        {"inputs": [{"text": t} for t in TEXTS]},
        {"instances": [{"text": t} for t in TEXTS]},
    ],
    ids=["records", "split", "inputs", "instances", "inputs-dict", "inputs-rows", "instances-rows"],
)
def test_every_json_format_of_valid_texts_is_scored_as_the_pipeline_scores_them(served, body):
    model, pipe, client = served
    response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    expected = pipe.predict_proba(TEXTS, max_length=32)
    answer = response.json()["predictions"]
    assert [[row["prob_LABEL_0"], row["prob_LABEL_1"]] for row in answer] == expected.tolist()


def test_a_dataframe_a_list_and_one_string_are_scored_in_process(served):
    import pandas as pd

    model, pipe, _ = served
    expected = pipe.predict_proba(TEXTS, max_length=32)
    for given in (pd.DataFrame({"text": TEXTS}), TEXTS, {"text": TEXTS}):
        assert model.predict(given)[["prob_LABEL_0", "prob_LABEL_1"]].to_numpy().tolist() == expected.tolist()
    assert model.predict(TEXTS[0])["score"].tolist() == [float(expected[0].max())]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [1, 2, 3]}, "'text' of row 0 must be a string, got int"),
        ({"instances": [1.5]}, "'text' of row 0 must be a string, got float"),
        ({"inputs": None}, "'text' must be a list of strings"),
        ({"inputs": 7}, "'text' must be a list of strings"),
        ({"inputs": ["fine", None]}, "'text' of row 1 must be a string, got null"),
        ({"inputs": [["nested", "list"]]}, "'text' of row 0 must be a string, got list"),
        ({"inputs": {"text": ["fine", None]}}, "'text' of row 1 must be a string, got null"),
        ({"inputs": {"review": ["fine"]}}, "no 'text' field"),
        ({"instances": [{"text": "fine"}, {"text": None}]}, "'text' of row 1 must be a string, got null"),
        ({"inputs": [{"text": "fine"}, {"review": "b"}]}, "row 1 has no 'text' field"),
        ({"dataframe_records": [{"text": "fine"}, {"text": None}]}, "'text' of row 1 must be a string, got null"),
        ({"dataframe_records": [{"text": "fine"}, {"text": 3}]}, "'text' of row 1 must be a string, got int"),
        ({"dataframe_records": [{"text": ["nested"]}]}, "'text' of row 0 must be a string, got list"),
        ({"dataframe_records": [{"text": True}]}, "'text' of row 0 must be a string, got bool"),
        ({"dataframe_records": [{"review": "fine"}]}, "no 'text' column (columns: ['review'])"),
        ({"dataframe_split": {"columns": ["text"], "data": [[1], [2]]}}, "'text' of row 0 must be a string, got int"),
        ([1, 2, 3], "input fields"),  # no format key at all: MLflow's own parser refuses it
        (None, "input fields"),
    ],
)
def test_values_that_are_not_text_are_refused_with_400_naming_the_field(served, body, message):
    _, _, client = served
    response = client.post("/invocations", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert response.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


def test_values_that_are_not_text_are_refused_in_process(served):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    model, _, _ = served
    for given, message in [
        ([1, 2, 3], "'text' of row 0 must be a string, got int"),
        (["fine", None], "'text' of row 1 must be a string, got null"),
        (pd.DataFrame({"text": ["fine", None]}), "'text' of row 1 must be a string, got null"),
        (pd.DataFrame({"review": ["fine"]}), "no 'text' column"),
    ]:
        with pytest.raises(MlflowException, match=message) as info:
            model.predict(given)
        assert info.value.get_http_status_code() == 400
