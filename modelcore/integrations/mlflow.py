"""MLflow tracking for the Trainer: training arguments and model config as params, logs as metrics.

mlflow is imported inside the functions that need it, so ``import modelcore`` works without it.

Where the run lives is MLflow's usual business: ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``
(or ``MLFLOW_EXPERIMENT_ID``) from the environment, or a run the caller already started. The
callback sets no global tracking state unless asked to through its constructor (see
:class:`MLflowCallback`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import numbers
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelcore.trainer.callbacks import TrainerCallback

logger = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation in 2.x/3.x); read from mlflow when it has them, see _limits().
DEFAULT_MAX_PARAM_VALUE_LENGTH = 6000
DEFAULT_MAX_KEY_LENGTH = 250
DEFAULT_MAX_PARAMS_PER_BATCH = 100
DEFAULT_MAX_METRICS_PER_BATCH = 1000

TRUNCATION_MARKER = "..."
CONFIG_PREFIX = "config"
# MLflow's UI chooses an experiment's pages by this tag: model training (runs, charts), not GenAI (traces).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
METRIC_GROUPS = ("train", "eval", "test")  # MLflow's UI draws one chart section per prefix before the first "/"
# The Trainer's end-of-training summary names its mean loss ``train_loss``; ``train/loss`` is the per-step curve.
SUMMARY_NAMES = {"train_loss": "train/mean_loss"}

# A key segment is secret if it names a password, secret, API/private/access key or credential, or
# ends in the word "token" (hub_token, access_token). "pad_token_id" and "max_new_tokens" are not secrets.
_SECRET_PATTERN = re.compile(
    r"password|passwd|secret|api_?key|private_?key|access_?key|credential|authorization|(?:^|_)token$"
)
_INVALID_KEY_CHARS = re.compile(r"[^/\w.\- :]" if os.name != "nt" else r"[^/\w.\- ]")


def flatten_params(params: Mapping[str, Any], prefix: str = "", max_items: int = 100) -> dict[str, Any]:
    """Flatten nested dicts and lists into one level of dotted keys.

    ``{"a": {"b": 1}, "c": [2, 3]}`` becomes ``{"a.b": 1, "c.0": 2, "c.1": 3}``. A container with
    more than ``max_items`` entries (a 10,000-label ``id2label``) stays one value, so it becomes one
    (truncated) param instead of thousands. Empty containers stay as they are.

    Args:
        params: the mapping to flatten.
        prefix: prepended to every key, with a dot (``"config"`` gives ``config.hidden_size``).
        max_items: the largest container that is expanded.

    Returns:
        A flat dict from dotted key to leaf value (not yet stringified).
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and 0 < len(value) <= max_items:
            flat.update(flatten_params(value, name, max_items))
        elif isinstance(value, (list, tuple)) and 0 < len(value) <= max_items:
            flat.update(flatten_params(dict(enumerate(value)), name, max_items))
        else:
            flat[name] = value
    return flat


def prepare_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow takes them, from a nested mapping: flattened to dotted keys, secrets dropped
    (:func:`is_secret_key`), keys sanitized and values cut to this MLflow's limits; a key that sanitizes to one
    already taken is skipped with a warning. The one preparation every writer of params uses."""
    max_key, max_value, _, _ = _limits()
    prepared: dict[str, str] = {}
    for key, value in flatten_params(params).items():
        if is_secret_key(str(key)):
            logger.debug("MLflow: not logging param %r (looks like a secret)", key)
            continue
        name = sanitize_key(str(key), max_key)
        if name in prepared:
            logger.warning("MLflow: param %r maps to %r, which is already taken; skipped", key, name)
            continue
        prepared[name] = param_value(value, max_value)
    return prepared


def is_secret_key(key: str) -> bool:
    """True for param names that look like credentials (``hub_token``, ``db.password``, ``api_key``)."""
    segments = re.split(r"[./]", key.lower())
    return any(_SECRET_PATTERN.search(re.sub(r"[^a-z0-9]+", "_", segment)) for segment in segments)


def sanitize_key(key: str, max_length: int = DEFAULT_MAX_KEY_LENGTH) -> str:
    """Turn ``key`` into a name MLflow accepts, unchanged when it already is one.

    Characters outside ``[A-Za-z0-9_\\-. /:]`` become ``_``; empty, ``.`` and ``..`` path segments
    (MLflow refuses names that normalize to another path) are dropped or replaced; a key over
    ``max_length`` is cut and ends in a short hash of the original, so distinct keys stay distinct.
    """
    cleaned = _INVALID_KEY_CHARS.sub("_", key)
    segments = [("__" if s == ".." else s) for s in cleaned.split("/") if s not in ("", ".")]
    cleaned = "/".join(segments) or "_"
    if len(cleaned) > max_length:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[: max_length - len(digest) - 1]}~{digest}"
    return cleaned


def param_value(value: Any, max_length: int = DEFAULT_MAX_PARAM_VALUE_LENGTH) -> str:
    """A param value as MLflow stores it: a string, cut to ``max_length`` (ending in ``...`` when cut)."""
    text = str(value)
    if len(text) > max_length:
        text = text[: max_length - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return text


def metric_name(key: str) -> str:
    """The grouped MLflow name of a Trainer log key: ``eval_loss`` -> ``eval/loss``, ``train_runtime`` ->
    ``train/runtime``, ``loss`` -> ``train/loss``, ``train_loss`` (the run's mean) -> ``train/mean_loss``; a key
    that already names its group (``export/onnx/speedup``) is kept."""
    if "/" in key:
        return key
    if key in SUMMARY_NAMES:
        return SUMMARY_NAMES[key]
    for group in METRIC_GROUPS:
        if key.startswith(group + "_"):
            return f"{group}/{key.removeprefix(group + '_')}"
    return f"train/{key}"


def as_metric(value: Any) -> float | None:
    """``value`` as a float when it is a number (NaN and inf included), else None. Bools are not metrics."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d torch tensor or numpy array
        item = value.item()
        return float(item) if isinstance(item, numbers.Real) and not isinstance(item, bool) else None
    return None


class MLflowCallback(TrainerCallback):
    """Logs a Trainer's run to MLflow: params at the start, metrics at every log and evaluation.

    Only the main process (``state.is_world_process_zero``) talks to MLflow.

    * ``on_train_begin``: reuses the active run if there is one (and then never ends it), otherwise
      starts one named ``args.run_name``. Logs as params the training arguments (top-level keys,
      ``learning_rate``), the model config under ``config.`` (``config.hidden_size``), both
      flattened with :func:`flatten_params`, and ``model_num_parameters``. Values are stringified
      and cut to MLflow's length limit; keys MLflow would reject are sanitized; keys that look like
      secrets (:func:`is_secret_key`) are skipped. Params are sent 100 per call. A param that a
      reused run already holds with another value is skipped with a warning naming it (MLflow
      refuses to overwrite params).
    * ``on_log`` / ``on_evaluate``: numeric values as metrics at ``step=state.global_step`` (NaN
      and inf passed through; strings and bools skipped), named by group with ``group_metrics``
      (:func:`metric_name`: ``train/loss``, ``eval/accuracy``), so MLflow's UI shows one section per
      group. A key logged with the same value at the
      same step is sent once, so metrics the Trainer passes both to ``on_log`` and ``on_evaluate``
      appear once. Metrics go to the run set up in ``on_train_begin``, which stays the target after
      training (a final ``trainer.evaluate()`` lands in it); before any training, to the active run
      if there is one, else nowhere.
    * ``on_save``: nothing, unless ``log_checkpoints``: then the checkpoint directory is logged as
      artifacts under ``checkpoints/<directory name>``.
    * ``on_train_end``: ends the run with status FINISHED if this callback started it. A Trainer
      whose loop raises should call :meth:`close` (status FAILED) from its exception handler.

    Args:
        tracking_uri: passed to ``mlflow.set_tracking_uri`` at the start of training. That is
            process-wide state: leave it None and set ``MLFLOW_TRACKING_URI`` instead where other
            code shares the process (a Prefect flow).
        experiment_name: the experiment for runs this callback starts (created if missing, as a model-training
            experiment: ``mlflow.experimentKind`` ``custom_model_development``), passed
            as ``experiment_id`` to ``start_run``, so the process's active experiment is untouched.
            None uses ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` or MLflow's default.
        log_checkpoints: log every saved checkpoint directory as run artifacts.
        run_id: log to this existing run (created by the caller, e.g. one per pipeline run) instead
            of the active or a new one; the callback never ends it.
        tolerate_errors: when the tracking server fails (down, unreachable), keep training: metrics
            are kept in :attr:`pending`, retried at most every ``retry_after_s`` seconds and at
            the end of training; :meth:`save_pending` writes what is still unsent to a file that
            :func:`replay_pending` sends later. Params that fail are logged with the same care.
        retry_after_s: how long to wait after a failure before talking to the server again.
        group_metrics: name metrics ``train/...``, ``eval/...``, ``test/...`` (:func:`metric_name`); False logs
            the Trainer's keys as they are (``loss``, ``eval_loss``).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        log_checkpoints: bool = False,
        run_id: str | None = None,
        tolerate_errors: bool = False,
        retry_after_s: float = 30.0,
        group_metrics: bool = True,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ImportError("MLflowCallback needs mlflow: pip install 'modelcore[mlflow]'")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.log_checkpoints = log_checkpoints
        self.run_id: str | None = run_id
        self._fixed_run = run_id is not None  # a run given by the caller: used as is, never ended here
        self._started_run = False  # True while a run this callback started is open
        self._step_logged: tuple[int, dict[str, float]] = (-1, {})
        self.tolerate_errors = tolerate_errors
        self.retry_after_s = retry_after_s
        self.group_metrics = group_metrics
        self.pending: list[tuple[int, dict[str, float]]] = []  # (step, metrics) not yet accepted by the server
        self._down_since: float | None = None
        self._saved_uri: tuple[Any, str | None] | None = None

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self._setup_run(args)
        params = flatten_params(args.to_dict())
        config = getattr(model, "config", None)
        if hasattr(config, "to_dict"):
            params.update(flatten_params(config.to_dict(), CONFIG_PREFIX))
        if hasattr(model, "num_parameters"):
            params["model_num_parameters"] = model.num_parameters()
        elif model is not None:  # a plain torch.nn.Module
            params["model_num_parameters"] = sum(p.numel() for p in model.parameters())
        try:
            self.log_params(params)
        except Exception as error:
            if not (self.tolerate_errors and _is_connection_error(error)):
                raise
            self._mark_down(error)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.log_metrics(logs, step=state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            self.log_metrics(metrics, step=state.global_step)

    def on_save(self, args, state, control, checkpoint=None, **kwargs):
        if not (self.log_checkpoints and state.is_world_process_zero and checkpoint and self.run_id):
            return
        import mlflow

        path = Path(checkpoint)
        mlflow.log_artifacts(str(path), artifact_path=f"checkpoints/{path.name}", run_id=self.run_id)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.pending:
            self._down_since = None  # one more try before giving up
            self._flush()
        if self.pending:
            path = self.save_pending(Path(args.output_dir) / PENDING_METRICS_FILE)
            logger.warning("MLflow: %d metric batches not sent; kept in %s", len(self.pending), path)
        self.close(status="FINISHED")
        self._restore_tracking_uri()

    def _restore_tracking_uri(self) -> None:
        """Put back the process's tracking URI as it was before ``tracking_uri`` replaced it."""
        saved, self._saved_uri = getattr(self, "_saved_uri", None), None
        if saved is not None:
            _set_tracking_uri_state(saved)

    # ------------------------------------------------------------------ run lifecycle
    def close(self, status: str = "FAILED") -> None:
        """End the run this callback started, with ``status``; a no-op for a reused run or when closed.

        Args:
            status: an MLflow run status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        """
        if status != "FINISHED":  # a failed train(): on_train_end will not come
            self._restore_tracking_uri()
        if self._fixed_run or not self._started_run or self.run_id is None:
            return
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status=status)
        else:  # someone else's run is active on top of ours: end ours without touching theirs
            mlflow.MlflowClient().set_terminated(self.run_id, status=status)
        self._started_run = False
        logger.info("MLflow run %s ended: %s", self.run_id, status)

    def _setup_run(self, args: Any) -> None:
        import mlflow

        if self.tracking_uri is not None:
            self._saved_uri = _tracking_uri_state()
            mlflow.set_tracking_uri(self.tracking_uri)
        if self._fixed_run:
            self._step_logged = (-1, {})
            logger.info("MLflow: logging to the given run %s", self.run_id)
            return
        active = mlflow.active_run()
        if active is not None:
            # Our own run left open by a failed train() stays ours; any other run is the caller's.
            self._started_run = self._started_run and active.info.run_id == self.run_id
            self.run_id = active.info.run_id
            self._step_logged = (-1, {})
            logger.info("MLflow: logging to the active run %s", self.run_id)
            return
        experiment_id = None
        if self.experiment_name is not None:
            experiment = mlflow.get_experiment_by_name(self.experiment_name)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else mlflow.create_experiment(self.experiment_name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
            )
        run = mlflow.start_run(run_name=args.run_name, experiment_id=experiment_id)
        self.run_id, self._started_run = run.info.run_id, True
        self._step_logged = (-1, {})
        logger.info("MLflow: started run %s (experiment %s)", self.run_id, run.info.experiment_id)

    def _target_run(self) -> str | None:
        if self.run_id is not None:
            return self.run_id
        import mlflow

        active = mlflow.active_run()
        return active.info.run_id if active is not None else None

    # ------------------------------------------------------------------ logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flat ``params`` to the run: secrets dropped, keys sanitized, values cut, conflicts skipped."""
        import mlflow
        from mlflow.exceptions import MlflowException

        if self.run_id is None:
            raise RuntimeError("MLflowCallback.log_params called before a run was set up")
        _, _, per_batch, _ = _limits()
        prepared = prepare_params(params)

        existing = mlflow.get_run(self.run_id).data.params
        conflicts = sorted(k for k, v in prepared.items() if k in existing and existing[k] != v)
        if conflicts:
            logger.warning(
                "MLflow run %s already has params with other values (MLflow cannot overwrite them); skipped %d: %s",
                self.run_id,
                len(conflicts),
                _preview(conflicts),
            )
        pending = {k: v for k, v in prepared.items() if k not in existing}
        rejected: list[str] = []
        for batch in _chunks(pending, per_batch):
            try:
                mlflow.log_params(batch, run_id=self.run_id)
            except MlflowException as error:  # a param written since we looked, or one MLflow rejects
                if error.error_code != "INVALID_PARAMETER_VALUE":
                    raise
                rejected.extend(self._log_params_one_by_one(batch))
        if rejected:
            logger.warning("MLflow refused %d params, skipped: %s", len(rejected), _preview(rejected))

    def _log_params_one_by_one(self, batch: dict[str, str]) -> list[str]:
        import mlflow
        from mlflow.exceptions import MlflowException

        rejected = []
        for key, value in batch.items():
            try:
                mlflow.log_params({key: value}, run_id=self.run_id)
            except MlflowException as error:
                if error.error_code != "INVALID_PARAMETER_VALUE":
                    raise
                rejected.append(key)
        return rejected

    def log_metrics(self, logs: Mapping[str, Any], step: int) -> None:
        """Log the numeric values of ``logs`` at ``step``; others are skipped, repeats at a step sent once."""
        run_id = self._target_run()
        if run_id is None:
            logger.debug("MLflow: no run to log metrics to; skipped %s", sorted(logs))
            return
        import mlflow

        max_key, _, _, per_batch = _limits()
        if self._step_logged[0] != step:
            self._step_logged = (step, {})
        seen = self._step_logged[1]
        metrics: dict[str, float] = {}
        for key, raw in logs.items():
            value = as_metric(raw)
            if value is None:
                logger.debug("MLflow: not logging %r=%r as a metric (not a number)", key, raw)
                continue
            name = sanitize_key(metric_name(str(key)) if self.group_metrics else str(key), max_key)
            if name in seen and _same(seen[name], value):
                continue
            metrics[name] = seen[name] = value
        if not self.tolerate_errors:
            for batch in _chunks(metrics, per_batch):
                mlflow.log_metrics(batch, step=step, run_id=run_id)
            return
        if metrics:
            self.pending.append((step, metrics))
        self._flush()

    # ------------------------------------------------------------------ a tracking server that fails
    def _flush(self) -> None:
        """Send pending metrics, oldest first; stop at the first failure (the server is down)."""
        if self._down_since is not None and time.monotonic() - self._down_since < self.retry_after_s:
            return
        run_id = self._target_run()
        if run_id is None:
            return
        import mlflow

        per_batch = _limits()[3]
        while self.pending:
            step, metrics = self.pending[0]
            try:
                for batch in _chunks(metrics, per_batch):
                    mlflow.log_metrics(batch, step=step, run_id=run_id)
            except Exception as error:
                if not _is_connection_error(error):
                    raise
                self._mark_down(error)
                return
            self.pending.pop(0)
        if self._down_since is not None:
            logger.info("MLflow: tracking server reachable again; pending metrics sent")
            self._down_since = None

    def _mark_down(self, error: Exception) -> None:
        if self._down_since is None:
            logger.warning("MLflow: tracking server failed (%s); training goes on, metrics are kept", error)
        self._down_since = time.monotonic()

    def save_pending(self, path: str | Path) -> Path:
        """Write the unsent metrics as JSON lines ``{"run_id", "step", "metrics"}`` (atomically)."""
        import json

        from modelcore.serialization.atomic import atomic_write_text

        lines = [json.dumps({"run_id": self._target_run(), "step": s, "metrics": m}) for s, m in self.pending]
        atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
        return Path(path)


PENDING_METRICS_FILE = "mlflow_pending_metrics.jsonl"


def _tracking_uri_state() -> tuple[Any, str | None]:
    """mlflow's process-wide tracking URI as set (None when unset) and ``MLFLOW_TRACKING_URI``."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return getattr(tracking_utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")


def _set_tracking_uri_state(state: tuple[Any, str | None]) -> None:
    """Undo ``mlflow.set_tracking_uri`` (which sets a module global and the environment variable)."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    uri, env = state
    if hasattr(tracking_utils, "_tracking_uri"):
        tracking_utils._tracking_uri = uri
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


def replay_pending(path: str | Path, tracking_uri: str | None = None) -> int:
    """Send metrics a :class:`MLflowCallback` could not send (see ``save_pending``); remove the file after.

    Returns:
        How many (step, metrics) records were sent; 0 when the file does not exist.
    """
    import json

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    path = Path(path)
    if not path.is_file():
        return 0
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    client = MlflowClient(tracking_uri=tracking_uri)
    per_batch = _limits()[3]
    for record in records:
        timestamp = int(time.time() * 1000)
        metrics = [Metric(k, v, timestamp, record["step"]) for k, v in record["metrics"].items()]
        for start in range(0, len(metrics), per_batch):
            client.log_batch(record["run_id"], metrics=metrics[start : start + per_batch])
    path.unlink()
    return len(records)


def _is_connection_error(error: BaseException) -> bool:
    """True for failures of the transport (server down, refused, timed out), not for refused requests."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return True
    if isinstance(error, MlflowException):
        text = str(error)
        return any(s in text for s in ("Max retries exceeded", "Connection refused", "API request to", "timed out"))
    return isinstance(error, OSError)


def _limits() -> tuple[int, int, int, int]:
    """(key length, param value length, params per batch, metrics per batch) as this mlflow enforces them."""
    try:
        from mlflow.utils import validation
    except ImportError:
        validation = None
    return (
        getattr(validation, "MAX_ENTITY_KEY_LENGTH", DEFAULT_MAX_KEY_LENGTH),
        getattr(validation, "MAX_PARAM_VAL_LENGTH", DEFAULT_MAX_PARAM_VALUE_LENGTH),
        getattr(validation, "MAX_PARAMS_TAGS_PER_BATCH", DEFAULT_MAX_PARAMS_PER_BATCH),
        getattr(validation, "MAX_METRICS_PER_BATCH", DEFAULT_MAX_METRICS_PER_BATCH),
    )


def _chunks(items: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
    keys = list(items)
    for start in range(0, len(keys), size):
        yield {k: items[k] for k in keys[start : start + size]}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _preview(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"
