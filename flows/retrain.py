"""The retraining flow: data -> tokens -> fine-tune -> evaluate -> export -> register (gated champion).

    python -m flows.retrain                              # the embedded demo (MiniLM-L6 on Rotten Tomatoes)
    python -m flows.retrain --task causal-lm             # SmolLM2-135M continued on Wikipedia summaries
    python -m flows.retrain --task image-classification  # a small ViT trained from scratch on MNIST-5k digits
    python -m flows.retrain --learning-rate 3e-5 --max-steps 100
    python -m flows.retrain --params-file params.yaml    # any RetrainParams fields, YAML or JSON

Embedded by default: Prefect runs without a server (a temporary local one, its home kept under
``.pipeline/prefect``); MLflow uses ``.pipeline/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

from tasks import embedded, settings, warmup

settings.configure_environment()  # before Prefect is imported: PREFECT_HOME and MLflow timeouts
embedded.guard_temporary_server()  # Prefect's temporary server dies with this process, however it ends

from prefect import flow, get_run_logger  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Failed  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from flows.params import RetrainParams  # noqa: E402
from modelcore.errors import is_disk_full  # noqa: E402
from modelcore.task_registry import get_task  # noqa: E402
from tasks.data import check_max_length, load_dataset, resolve_base_model, tokenize_cached  # noqa: E402
from tasks.evaluation import PREDICTIONS_FILE, evaluate  # noqa: E402
from tasks.export import export_onnx, export_safetensors, quantize  # noqa: E402
from tasks.image_data import load_image_dataset  # noqa: E402
from tasks.lm_evaluation import HELDOUT_FILE, SAMPLE_PROMPTS, evaluate_lm  # noqa: E402
from tasks.registry import register  # noqa: E402
from tasks.reporting import publish  # noqa: E402
from tasks.results import ExportCheck  # noqa: E402
from tasks.runs import FAILED, RUNNING, RunWorkspace, mark_flow_run_crashed, prune, run_key  # noqa: E402
from tasks.text_data import load_text_dataset, tokenize_for_task  # noqa: E402
from tasks.tracking import (  # noqa: E402
    check_tracking_server,
    close_crashed_run,
    discard_artifacts,
    end_run,
    log_dataset,
    log_to_run,
    replay_metrics,
    start_run,
)
from tasks.training import fine_tune, is_architecture  # noqa: E402

# The default of the flow's parameter, and so of the deployment form: every task-dependent field empty, filled in
# by the chosen task's defaults when the run validates it (a validated instance would put text-classification's
# values into every field of the form, and a run that picks another task would keep them).
EMPTY_PARAMS = RetrainParams.model_construct()
MODEL_ARTIFACT = "model"  # the name of the run's logged model (register() uploads the pyfunc model to it)
INPUT_EXAMPLES = 5  # held-out texts stored as the model's input example and used for export checks


@flow(name="retrain", retries=0, validate_parameters=False)  # validated in the body: one line naming the field
def retrain(params: RetrainParams = EMPTY_PARAMS) -> dict[str, Any]:
    """Fine-tune, evaluate, export and register one model version; move ``champion`` only on a gain.

    A run of the same parameters on the same data as an earlier run that did not finish (its process
    was killed, or an error stopped it) resumes from that run's newest training checkpoint; a killed
    run's MLflow run is marked FAILED and its Prefect flow run crashed (``tasks.runs``).

    The parameters are validated first, whatever their form (a dict from a deployment run, the UI or the API; an
    instance): a bad value fails the run at once with one line naming the field, before any work, and the fields
    left empty take the task's defaults.

    Returns:
        A summary: MLflow run id, data fingerprint, metrics, exports, registered version, aliases,
        whether the tokenization cache was hit, what the run resumed from, and the stage timings.
    """
    log = get_run_logger()
    # a dict from a deployment, or an instance with empty fields (the default): the task fills them in
    try:
        params = RetrainParams.model_validate(params.model_dump() if isinstance(params, RetrainParams) else params)
    except ValidationError as error:
        message = "bad parameters: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in error.errors()
        )
        log.error(message)
        return Failed(message=message)
    warmup.wait()  # the imports and store creation begun while Prefect's server started (python -m flows.retrain)
    tracking_uri = settings.tracking_uri()
    check_tracking_server(tracking_uri)  # a server that is down fails the run before any work
    flow_run_id = str(flow_run.get_id() or time.strftime("local-%Y%m%d-%H%M%S"))
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 2)
        clock = now

    spec = get_task(params.task)
    labelled = spec.label_column is not None  # a classifier; else a causal LM on text or chats
    data = _load_data(params, labelled, spec.modality)
    lap("load_dataset")
    prune()
    workspace = RunWorkspace.claim(run_key(params.model_dump(), data.fingerprint))
    work, previous = workspace.directory, workspace.previous
    tags = {
        "data_fingerprint": data.fingerprint,
        "dataset": params.dataset,
        "prefect_flow_run_id": flow_run_id,
        "run_key": workspace.key,
    }
    if previous is not None:
        log.info(
            "an earlier run of these parameters on this data did not finish (%s: MLflow run %s, Prefect flow run %s); "
            "resuming from %s",
            "its process died" if previous.crashed else "it failed",
            previous.mlflow_run_id,
            previous.flow_run_id,
            previous.checkpoint or "the start (it left no checkpoint)",
        )
        tags["resumed_from_run"] = str(previous.mlflow_run_id)
    try:
        run_id = start_run(
            tracking_uri,
            params.experiment_name,
            run_name=f"retrain-{flow_run.get_name() or flow_run_id}",
            # the training settings arrive as the Trainer's own arguments (learning_rate, ...), logged by its
            # MLflow callback with the values it ran with: logged here too, each would appear twice; a run on several
            # nodes logs its distributed.* settings with the job (tasks.distributed), a run in process has none
            params=params.model_dump(exclude={"training", "distributed"}),
            tags=tags,
        )
    except BaseException:
        workspace.release()
        raise
    if previous is not None and previous.crashed:
        if previous.mlflow_run_id:
            close_crashed_run(tracking_uri, previous.mlflow_run_id, resumed_by=run_id)
        if previous.flow_run_id:
            mark_flow_run_crashed(previous.flow_run_id)
    workspace.record(status=RUNNING, mlflow_run_id=run_id, flow_run_id=flow_run_id)
    lap("start_run")
    try:
        log_dataset(tracking_uri, run_id, params.dataset, data.fingerprint, data.source, profile=_data_profile(data))
        # resolved once: a models:/NAME@champion base read again later could pair one version's tokenizer with
        # the next version's weights if the alias moved during the run
        if spec.modality == "image" and is_architecture(params.base_model):
            base_model = params.base_model
            log.info("base model %s: a create_model size, trained from scratch", base_model)
        else:
            base_model = resolve_base_model(params.base_model)
        if spec.modality == "text":
            check_max_length(base_model, params.max_length)  # before any tokenizing or training
        tokenized, cache_hit = _tokenize(params, data, base_model, labelled, spec.modality)
        cache_state = "not used (images)" if spec.modality == "image" else "hit" if cache_hit else "miss"
        lap("tokenize_dataset")
        trained = fine_tune(
            base_model,
            tokenized,
            list(data.labels),
            params.training.to_training_arguments(),
            str(work / "train"),
            tracking_uri=tracking_uri,
            run_id=run_id,
            task_name=params.task,
            lora=params.lora.model_dump(),
            distributed=params.distributed.model_dump(),
            job_id=flow_run_id,
        )
        lap("fine_tune")
        evaluation, examples = _evaluate(
            params, data, base_model, trained, work / "evaluation", labelled, spec.modality
        )
        lap("evaluate")
        exports = _export(params, trained, evaluation, examples, work / "export", work / "quantized", labelled)
        lap("export")
        artifacts = {"evaluation": evaluation.report_dir}
        if trained.adapter:
            artifacts["adapter"] = trained.adapter
        for name, exported in exports.items():
            if exported.passed:  # the whole directory: model.onnx and its .onnx.data travel together
                artifacts[f"export/{name}"] = exported.path
        if trained.pending_metrics:
            replay_metrics(tracking_uri, trained.pending_metrics)
        # grouped by prefix, each group one section of MLflow's charts; train/ comes from the Trainer's callback
        export_metrics = {
            f"export/{name}/{key}": value
            for name, exported in exports.items()
            for key, value in exported.figures().items()
            if key in ("max_abs_logit_diff", "metric_after", "speedup", "size_ratio")
        }
        log_to_run(
            tracking_uri,
            run_id,
            metrics={f"eval/{k.removeprefix('eval_')}": v for k, v in evaluation.metrics.items()} | export_metrics,
            tags={"tokenization_cache": cache_state},
            artifacts=artifacts,
            step=trained.global_step,
            artifact_names={trained.checkpoint: MODEL_ARTIFACT} if params.register_model else None,
        )
        registration = None
        if params.register_model:
            registration = register(
                tracking_uri,
                run_id,
                trained.checkpoint,
                params.registered_model_name,
                evaluation.metrics,
                params.promotion_metric,
                params.min_gain,
                tags={"data_fingerprint": data.fingerprint, "mlflow_run_id": run_id, "task": params.task},
                input_example=examples,
                max_length=params.max_length,
                greater_is_better=_greater_is_better(params.task, params.promotion_metric),
                min_metric=params.min_metric,
                task_name=params.task,
                description=_version_description(params, data, evaluation.metrics, exports, trained.global_step),
                model_description=_model_description(params),
                step=trained.global_step,
            )
            lap("register")
        else:
            log.info("register_model=False: the model is not registered (checkpoint %s)", trained.checkpoint)
    except BaseException as error:
        workspace.record(status=FAILED, error=repr(error)[:500])
        workspace.release()
        if is_disk_full(error):  # what a model upload wrote before the disk filled up is of no use
            discard_artifacts(tracking_uri, run_id, MODEL_ARTIFACT)
        try:
            end_run.fn(tracking_uri, run_id, status="FAILED")
        except Exception as end_error:  # the server is down: report the original failure, not this one
            log.error(
                "could not mark MLflow run %s FAILED (%s); the next run of these parameters will", run_id, end_error
            )
        raise
    end_run(tracking_uri, run_id)
    workspace.finish()
    workspace.release()
    summary = {
        "task": params.task,
        "mlflow_run_id": run_id,
        "tracking_uri": tracking_uri,
        "data_fingerprint": data.fingerprint,
        "tokenization_cache": cache_state,
        "metrics": evaluation.metrics,
        "checkpoint": trained.checkpoint,
        "evaluation_dir": evaluation.report_dir,
        "exports": {k: v.path for k, v in exports.items() if v.passed},
        "export_checks": {k: v.figures() for k, v in exports.items()},
        "data": {"rows_read": data.rows_read, "dropped": dict(data.dropped), "labels": list(data.labels)},
        "registered_model": params.registered_model_name,
        **(
            {
                "version": registration.version,
                "aliases": list(registration.aliases),
                "champion_version": registration.champion_version,
                "promotion": registration.reason,
            }
            if registration is not None
            else {"registration": "skipped (register_model=False)"}
        ),
        "train_runtime_s": trained.train_runtime,
        "training": {
            "nodes": trained.nodes,
            "restarts": trained.restarts,
            "resumed_from_step": _step_of(trained.resumed_from),
            "time_lost_s": trained.time_lost_s,
        },
        "resumed_from": {"mlflow_run_id": previous.mlflow_run_id, "checkpoint": trained.resumed_from}
        if previous is not None
        else None,
        "timings_s": timings,
    }
    publish(summary)  # the run page: a markdown summary and evaluation tables as artifacts, and one readable line
    return summary


def _step_of(checkpoint: str | None) -> int:
    """The step of a ``checkpoint-N`` directory; 0 for none (training began at the start)."""
    return int(Path(checkpoint).name.rsplit("-", 1)[-1]) if checkpoint else 0


def _load_data(params: RetrainParams, labelled: bool, modality: str) -> Any:
    """The split dataset: labelled rows (texts or images) for a classifier, documents or conversations for a causal
    LM."""
    if modality == "image":
        return load_image_dataset(
            params.dataset,
            params.image_column,
            params.label_column,
            params.test_size,
            params.split_seed,
            label_map=params.label_map,
            allow_similar_labels=params.allow_similar_labels,
            max_examples=params.max_examples,
        )
    if labelled:
        return load_dataset(
            params.dataset,
            params.text_column,
            params.label_column,
            params.test_size,
            params.split_seed,
            label_map=params.label_map,
            allow_similar_labels=params.allow_similar_labels,
            max_examples=params.max_examples,
        )
    return load_text_dataset(
        params.dataset, params.text_column, params.test_size, params.split_seed, params.max_examples
    )


def _tokenize(params: RetrainParams, data: Any, base_model: str, labelled: bool, modality: str) -> tuple[str, bool]:
    """(tokenized directory, whether Prefect's cache was hit); images stay encoded, decoded per batch in training."""
    if modality == "image":
        return data.path, False
    if labelled:
        return tokenize_cached(data, base_model, params.max_length)
    return tokenize_for_task(data, base_model, params.max_length, params.task), False


def _evaluate(
    params: RetrainParams, data: Any, base_model: str, trained: Any, output_dir: Path, labelled: bool, modality: str
) -> tuple[Any, list[str]]:
    """The held-out evaluation, and the inputs that serve as the model's examples (export checks, input example):
    texts, or images as base64 files."""
    if labelled:
        evaluation = evaluate(
            trained.checkpoint, data.path, list(data.labels), params.max_length, str(output_dir),
            train_log=trained.train_log, task_name=params.task,
        )  # fmt: skip
        return evaluation, _input_examples(data.path, modality)
    evaluation = evaluate_lm(
        trained.checkpoint, base_model, data.path, params.max_length, str(output_dir), train_log=trained.train_log
    )
    return evaluation, list(SAMPLE_PROMPTS)


def _export(
    params: RetrainParams,
    trained: Any,
    evaluation: Any,
    examples: list[str],
    export_dir: Path,
    quantized_dir: Path,
    labelled: bool,
) -> dict[str, ExportCheck]:
    """The exports asked for, each checked against the eager model: {name: its ``ExportCheck``}."""
    exports: dict[str, ExportCheck] = {}
    if "safetensors" in params.export_formats:
        exports["safetensors"] = export_safetensors(
            trained.checkpoint, str(export_dir / "safetensors"), params.max_shard_size, examples, task_name=params.task
        )
    heldout = str(Path(evaluation.report_dir) / (PREDICTIONS_FILE if labelled else HELDOUT_FILE))
    if {"onnx", "onnx_int8"} & set(params.export_formats):
        exports |= export_onnx(
            trained.checkpoint,
            str(export_dir),
            int8="onnx_int8" in params.export_formats,
            eval_data=heldout,
            max_length=params.max_length,
            task_name=params.task,
            check_prompts=list(SAMPLE_PROMPTS),
        )
    if params.quantization:
        quantized = quantize(
            trained.checkpoint, str(quantized_dir), list(params.quantization), eval_data=heldout,
            max_length=params.max_length, task_name=params.task,
        )  # fmt: skip
        exports |= {f"quantized_{method}": result for method, result in quantized.items()}
    return exports


def _data_profile(data: Any) -> dict[str, Any]:
    """The figures shown beside the run's dataset in MLflow: rows per split, and the classes of a classifier."""
    profile = {"train_rows": data.num_train, "test_rows": data.num_test, "rows_read": data.rows_read}
    if getattr(data, "labels", None):
        profile["labels"] = list(data.labels)
    return profile


def _model_description(params: RetrainParams) -> str:
    """The registered model's description: what it is and how its champion is chosen."""
    spec = get_task(params.task)
    direction = "higher" if _greater_is_better(params.task, params.promotion_metric) else "lower"
    return (
        f"{params.task} model ({spec.modality}) trained by the retrain flow from {params.base_model} on "
        f"{params.dataset}. Every version gets the alias `challenger`; `champion` moves to a version only when its "
        f"held-out {params.promotion_metric} ({direction} is better) clears the baseline"
        + (f" and min_metric {params.min_metric}" if params.min_metric is not None else "")
        + f" and beats the champion's by more than {params.min_gain}. "
        "Version tags: metric.<name>, baseline.<name>, data_fingerprint, promotion, promotion_reason."
    )


def _version_description(
    params: RetrainParams, data: Any, metrics: dict[str, float], exports: dict[str, ExportCheck], steps: int
) -> str:
    """A version's description: what was trained, on which data, its held-out metrics and its export checks."""
    lines = [
        f"{params.task} model trained from {params.base_model} for {steps} steps "
        f"(learning rate {params.training.learning_rate:g}, batch {params.training.per_device_train_batch_size}).",
        f"Data: {params.dataset}, fingerprint {data.fingerprint}: {data.num_train} training and {data.num_test} "
        "held-out rows.",
        "Held-out metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + ".",
    ]
    deciding = get_task(params.task).decides.name
    checks = []
    for name, check in exports.items():
        figures = []
        if check.max_abs_logit_diff is not None:
            figures.append(f"max abs logit diff {check.max_abs_logit_diff:.2g}")
        if check.metric_before is not None and check.metric_after is not None:
            figures.append(f"{deciding} {check.metric_before:.4f} -> {check.metric_after:.4f}")
        checks.append(
            f"{name} {'kept' if check.passed else 'not kept'}" + (f" ({', '.join(figures)})" if figures else "")
        )
    if checks:
        lines.append("Exports checked against the eager model: " + "; ".join(checks) + ".")
    return "\n".join(lines)


def _greater_is_better(task_name: str, metric: str) -> bool:
    """The direction of ``metric`` in the task's declaration (perplexity: lower is better)."""
    return next(m.greater_is_better for m in get_task(task_name).metrics if m.name == metric)


def _input_examples(dataset_path: str, modality: str = "text") -> list[str]:
    import datasets

    test = datasets.load_from_disk(os.path.join(dataset_path, "test"))
    first = test.select(range(min(INPUT_EXAMPLES, len(test))))
    if modality == "image":
        return [base64.b64encode(image).decode("ascii") for image in first["image"]]
    return list(first["text"])


if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main(retrain, RetrainParams, prog="python -m flows.retrain", warm_up=True))
