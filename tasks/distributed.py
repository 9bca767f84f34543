"""Fine-tuning across nodes: the fine_tune task's training as one torchrun job, one agent per node.

``fine_tune(..., distributed={"nodes": 2, ...})`` comes here. The task writes its arguments to
``output_dir/train-spec.json``; the platform (``tasks.platforms``; a Kubernetes Job on a cluster) runs on every node

    python -m torch.distributed.run --nnodes N --nproc-per-node P --rdzv-backend c10d \\
        --rdzv-endpoint <node 0>:29400 --rdzv-id <job id> --max-restarts R --local-addr <this node> \\
        infra/production/train_distributed.py --spec output_dir/train-spec.json

and the task waits for the job and returns the ``TrainResult`` the in-process path returns. Semantics:

* **Batch**: ``per_device_train_batch_size`` is per process: the global batch is nodes x nproc_per_node x it.
* **Faults**: torchrun restarts a failed worker group (up to ``max_restarts`` times) and rendezvouses again when the
  platform has started a lost node anew; every new start of training resumes from the newest complete
  ``checkpoint-N`` (written every ``save_steps`` by rank 0 into the shared output directory) exactly: the result
  equals an uninterrupted run's within float tolerance.
* **Record**: rank 0 appends one line per start of training to ``attempts.jsonl``. From it the task reports
  ``restarts`` (starts after the first), ``resumed_from_step`` (the step the last start resumed at) and
  ``time_lost_s`` (for each restart, from the moment training had reached the step it resumed at, i.e. its
  checkpoint was written, to training going again), in ``result.json``, in the ``TrainResult`` and as MLflow metrics
  ``train/restarts``, ``train/resumed_from_step``, ``train/time_lost_s``.
* **Tracking**: the ranks' network is the job's own, so they do not reach the tracking server; rank 0's
  ``log.jsonl`` becomes the pending-metrics file that the flow replays into its MLflow run (the route of metrics a
  tracking outage kept back), and the task logs the training arguments as the run's params.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tasks.results import TrainResult

logger = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "production" / "train_distributed.py"
SPEC_FILE = "train-spec.json"
RESULT_FILE = "result.json"  # rank 0's TrainResult, completed by the task with the job's restart record
ATTEMPTS_FILE = "attempts.jsonl"  # one line per start of training (rank 0)
NODE_LOGS = "nodes"  # each node's output: nodes/node-<i>.log
RDZV_PORT = 29400
JOB_TIMEOUT_S = 24 * 3600.0


def train_across_nodes(
    spec: dict[str, Any], distributed: dict[str, Any], job_id: str, tracking_uri: str | None, run_id: str | None
) -> TrainResult:
    """Run ``spec`` (fine_tune's arguments, without tracking) as a torchrun job over ``distributed["nodes"]`` nodes.

    Args:
        spec: ``tasks.training.train_here``'s arguments; ``output_dir`` is the shared volume of the nodes.
        distributed: ``nodes``, ``nproc_per_node``, ``max_restarts`` (torchrun's, and the platform's restarts of a
            lost node), ``platform`` (a key of ``tasks.platforms.PLATFORMS``).
        job_id: torchrun's ``--rdzv-id`` (the flow run's id): names the job's nodes too.
        tracking_uri, run_id: the flow's MLflow run; the metrics are left for the flow to replay into it.

    Returns:
        The ``TrainResult`` with ``nodes``, ``restarts``, ``resumed_from`` (the last start's checkpoint) and
        ``time_lost_s``; ``pending_metrics`` holds the training log's metrics when there is a run to send them to.

    Raises:
        PlatformError: the platform cannot run here, or a node failed past its restarts (see ``nodes/node-<i>.log``).
    """
    from tasks.platforms import PLATFORMS, NodeJob

    out = Path(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, ATTEMPTS_FILE):  # an earlier job's (a flow run resumed), not this job's
        (out / stale).unlink(missing_ok=True)
    spec_path = out / SPEC_FILE
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    nodes, per_node = int(distributed["nodes"]), int(distributed.get("nproc_per_node", 1))
    max_restarts = int(distributed.get("max_restarts", 3))
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // (nodes * per_node)))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
        # torchrun's agents otherwise share the rendezvous store with the workers, and a node that joins a later round
        # (one the platform started again) waits forever for a key the surviving rank-0 agent does not write again
        # (pytorch/pytorch#135712): the process group gets its own store, made anew at every rendezvous
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    started = time.time()
    with PLATFORMS[distributed.get("platform", "netns")](job_id, nodes) as platform:
        endpoint = f"{platform.nodes[0].address}:{RDZV_PORT}"
        logger.info(
            "training on %d nodes x %d processes (platform %s, rendezvous %s, job %s)",
            nodes, per_node, distributed.get("platform", "netns"), endpoint, job_id,
        )  # fmt: skip

        def command(node: Any) -> list[str]:
            return [
                *torchrun_command(nodes, per_node, endpoint, job_id, max_restarts, node.address, node.index == 0),
                str(SCRIPT), "--spec", str(spec_path),
            ]  # fmt: skip

        job = NodeJob(
            platform.nodes,
            command,
            env | {"GLOO_SOCKET_IFNAME": platform.nodes[0].interface},  # the same name on every node
            out / NODE_LOGS,
            backoff_limit=max_restarts,
        )
        job.run(timeout_s=float(distributed.get("timeout_s", JOB_TIMEOUT_S)))
    record = restart_record(out / ATTEMPTS_FILE)
    record |= {"nodes": nodes, "nproc_per_node": per_node, "node_restarts": job.restarts,
               "job_seconds": round(time.time() - started, 2)}  # fmt: skip
    # rank 0's result is its last start's: resumed_from is the checkpoint that start resumed from
    result = TrainResult(**json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))["train_result"])
    result = replace(result, nodes=nodes, restarts=record["restarts"], time_lost_s=record["time_lost_s"])
    if run_id is not None:
        pending = pending_metrics(out, run_id, record, result.global_step)
        result = replace(result, pending_metrics=str(pending))
        _log_params(tracking_uri, run_id, spec, distributed, result.checkpoint)
    (out / RESULT_FILE).write_text(
        json.dumps({"train_result": asdict(result), "job": record}, indent=2), encoding="utf-8"
    )
    logger.info(
        "distributed training done: %d steps on %d nodes, %d restart(s), resumed from step %s, %.1f s lost",
        result.global_step, nodes, record["restarts"], record["resumed_from_step"], record["time_lost_s"],
    )  # fmt: skip
    return result


def torchrun_command(
    nodes: int, per_node: int, endpoint: str, job_id: str, max_restarts: int, local_addr: str, is_host: bool
) -> list[str]:
    """torchrun's elastic launcher for one node, up to the training script (c10d rendezvous at ``endpoint``)."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(nodes), "--nproc-per-node", str(per_node),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", job_id,
        "--rdzv-conf", f"is_host={int(is_host)}",  # node 0 hosts the rendezvous store, stated rather than guessed
        "--max-restarts", str(max_restarts),
        "--local-addr", local_addr,  # the node's own address (the machine's hostname is the same on every "node")
    ]  # fmt: skip


def restart_record(attempts_file: Path) -> dict[str, Any]:
    """``restarts``, ``resumed_from_step`` and ``time_lost_s`` from rank 0's lines in ``attempts.jsonl``.

    A line: ``{"started_at", "step", "checkpoint_written_at"}`` (times as ``time.time()``). The time a restart
    lost runs from when the previous start had reached ``step`` (the checkpoint it resumed from was written; its
    own start if it wrote none) to this start.
    """
    lines = attempts_file.read_text(encoding="utf-8").splitlines() if attempts_file.is_file() else []
    attempts = [json.loads(line) for line in lines if line.strip()]
    lost = 0.0
    for before, after in zip(attempts, attempts[1:], strict=False):
        reached = (after["checkpoint_written_at"] if after["step"] > before["step"] else None) or before["started_at"]
        lost += after["started_at"] - max(reached, before["started_at"])
    return {
        "restarts": max(0, len(attempts) - 1),
        "resumed_from_step": attempts[-1]["step"] if attempts else 0,
        "time_lost_s": round(lost, 2),
        "attempts": attempts,
    }


def pending_metrics(out: Path, run_id: str, record: dict[str, Any], final_step: int) -> Path:
    """The training log's metrics (as the Trainer's MLflow callback names them) and the restart record, as the
    pending-metrics file the flow replays. Steps trained twice (after a restart) count once: the later lines win."""
    from modelcore.integrations.mlflow import PENDING_METRICS_FILE, as_metric, metric_name
    from modelcore.serialization.atomic import atomic_write_text

    log = out / "log.jsonl"
    latest: dict[tuple[int, frozenset], dict[str, float]] = {}
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        entry = json.loads(line)
        values = {metric_name(k): as_metric(v) for k, v in entry.items() if k != "step"}
        values = {k: v for k, v in values.items() if v is not None}
        latest[(int(entry["step"]), frozenset(values))] = values
    restarts = {
        "train/restarts": float(record["restarts"]),
        "train/resumed_from_step": float(record["resumed_from_step"]),
        "train/time_lost_s": float(record["time_lost_s"]),
        "train/nodes": float(record["nodes"]),
    }
    records = [(step, values) for (step, _), values in sorted(latest.items(), key=lambda item: item[0][0])]
    records.append((final_step, restarts))
    path = out / PENDING_METRICS_FILE
    text = "".join(json.dumps({"run_id": run_id, "step": s, "metrics": m}) + "\n" for s, m in records)
    atomic_write_text(path, text)
    return path


def _log_params(
    tracking_uri: str | None, run_id: str, spec: dict[str, Any], distributed: dict[str, Any], checkpoint: str
) -> None:
    """The params the Trainer's MLflow callback logs in process (training arguments, model config), plus the
    job's shape as ``distributed.*``; params the run has already are left as they are. A failure is a warning."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    from modelcore import TrainingArguments
    from modelcore.integrations.mlflow import CONFIG_PREFIX, flatten_params, prepare_params
    from tasks.training import split_training

    try:
        fields, augment = split_training(spec["training"])
        args = TrainingArguments(output_dir=spec["output_dir"], report_to=[], **fields).to_dict()
        params = flatten_params(args) | flatten_params({"distributed": distributed, "augment": augment})
        config = Path(checkpoint) / "config.json"
        if config.is_file():
            params |= flatten_params(json.loads(config.read_text(encoding="utf-8")), CONFIG_PREFIX)
        client = MlflowClient(tracking_uri=tracking_uri)
        existing = client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in prepare_params(params).items() if k not in existing]
        for start in range(0, len(new), 100):
            client.log_batch(run_id, params=new[start : start + 100])
    except Exception as error:  # the params describe the run; the trained model does not depend on them
        logger.warning("could not log the distributed run's params to MLflow run %s: %s", run_id, error)


def attempt_log(output_dir: str | Path) -> Any:
    """A Trainer callback (rank 0) that appends one line per start of training to ``output_dir/attempts.jsonl``:
    when training began, at which step (after a resume: the checkpoint's), and when that checkpoint was written."""
    from modelcore.trainer.callbacks import TrainerCallback

    path = Path(output_dir) / ATTEMPTS_FILE

    class AttemptLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            written = Path(args.output_dir) / f"checkpoint-{state.global_step}" / "trainer_state.json"
            line = {
                "started_at": time.time(),
                "step": state.global_step,
                "checkpoint_written_at": written.stat().st_mtime if state.global_step and written.is_file() else None,
                "worker_group_restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
            }
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")

    return AttemptLog()
