"""Training across two "nodes" (network namespaces on this machine, gloo over a veth pair), through fine_tune.

A tiny BERT (dropout 0: masks cannot match across process counts) on 192 real Rotten Tomatoes snippets, 2 epochs of
12 steps, a checkpoint every 4 steps. Needs root and iproute2's ``ip`` (CI runs as root): without them the tests
fail, naming what is missing, rather than skip.

The kill point can be moved: node ``MODELCORE_TEST_KILL_NODE`` (default 1) is killed once step
``MODELCORE_TEST_KILL_AFTER_STEP`` (default 4, mid-epoch 1; any step from 1 to 23) is trained, as rank 0's
``log.jsonl`` says, and the checkpoint due by then is written (none before step 4: the job then restarts from the
start). ``MODELCORE_TEST_FIGURES`` (a JSON file) keeps the figures of infra/DISTRIBUTED.md.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from modelcore.serialization.safetensors_io import load_file

pytestmark = pytest.mark.slow

EPOCHS, PER_NODE_BATCH, SAVE_STEPS = 2, 8, 4
KILL_AFTER_STEP = int(os.environ.get("MODELCORE_TEST_KILL_AFTER_STEP", "4"))
KILL_NODE = int(os.environ.get("MODELCORE_TEST_KILL_NODE", "1"))
TWO_NODES = {"nodes": 2, "nproc_per_node": 1, "max_restarts": 3, "platform": "netns"}
FIGURES: dict = {}


@pytest.fixture(scope="module", autouse=True)
def netns_platform(tmp_path_factory):
    """Fails (not skips) where namespaces cannot be made; afterwards no namespace and no job process is left."""
    from tasks.platforms import PlatformError, check_can_run, namespaces

    try:
        check_can_run()
    except PlatformError as error:
        pytest.fail(f"tests/distributed need root and `ip netns`: {error}")
    root = tmp_path_factory.getbasetemp()
    yield
    assert namespaces() == [], "namespaces left behind"
    assert _processes_under(root) == [], "job processes left behind"
    if FIGURES and os.environ.get("MODELCORE_TEST_FIGURES"):
        Path(os.environ["MODELCORE_TEST_FIGURES"]).write_text(json.dumps(FIGURES, indent=2))


def _processes_under(root: Path) -> list[int]:
    """Job processes (agents, workers) whose command line names a spec file under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace") if entry.name.isdigit() else ""
            if str(root) in cmdline and "train-spec.json" in cmdline:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def base_and_data(tmp_path_factory, minilm_dir, rotten_tomatoes):
    """(tiny BERT checkpoint directory, tokenized data directory with its ``train`` split)."""
    import datasets

    from modelcore import AutoTokenizer, BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("base")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    rows = rotten_tomatoes[:192]
    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=32)
    datasets.Dataset.from_dict({**encoded, "label": [r["label"] for r in rows]}).save_to_disk(root / "data" / "train")
    return root / "model", root / "data"


def _fine_tune(
    base_and_data, output_dir: Path, batch: int, distributed: dict | None = None, job_id: str | None = None,
    logging_steps: int = 4,
):  # fmt: skip
    from tasks.training import fine_tune

    base, data = base_and_data
    training = {
        "per_device_train_batch_size": batch, "learning_rate": 1e-3, "num_train_epochs": EPOCHS,
        "logging_steps": logging_steps, "save_strategy": "steps", "save_steps": SAVE_STEPS, "save_total_limit": 1,
        "seed": 0, "disable_tqdm": True,
    }  # fmt: skip
    start = time.perf_counter()
    result = fine_tune.fn(
        str(base), str(data), ["neg", "pos"], training, str(output_dir), distributed=distributed, job_id=job_id
    )
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, base_and_data):
    return _fine_tune(base_and_data, tmp_path_factory.mktemp("one"), batch=2 * PER_NODE_BATCH)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, base_and_data):
    return _fine_tune(base_and_data, tmp_path_factory.mktemp("two"), PER_NODE_BATCH, TWO_NODES, "test-two-nodes")


def _weights(result) -> dict[str, torch.Tensor]:
    return load_file(Path(result.checkpoint) / "model.safetensors")


def _max_difference(a, b) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _machine() -> dict:
    return {
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def test_two_nodes_equal_one_process_with_the_same_global_batch(base_and_data, one_process, two_nodes):
    (single, single_s), (multi, multi_s) = one_process, two_nodes
    assert (multi.nodes, multi.restarts, multi.resumed_from) == (2, 0, None)
    assert multi.global_step == single.global_step == EPOCHS * 192 // (2 * PER_NODE_BATCH)
    difference = _max_difference(single, multi)
    assert difference < 2e-5
    initial = load_file(base_and_data[0] / "model.safetensors")["classifier.weight"]
    assert _weights(multi)["classifier.weight"].ne(initial).any()  # it trained
    job = json.loads((Path(multi.checkpoint).parent / "result.json").read_text())["job"]
    assert job["restarts"] == 0 and job["node_restarts"] == 0
    logs = (Path(multi.checkpoint).parent / "nodes").glob("node-*.log")
    assert len(list(logs)) == 2
    FIGURES["two_nodes_vs_one_process"] = {
        "one_process_s": round(single_s, 1), "two_nodes_s": round(multi_s, 1),
        "max_abs_weight_difference": difference, **_machine(),
    }  # fmt: skip


def test_a_killed_node_restarts_from_the_checkpoint_and_ends_with_the_same_weights(
    tmp_path_factory, base_and_data, two_nodes
):
    from tasks.platforms import kill_node

    total = two_nodes[0].global_step
    assert 1 <= KILL_AFTER_STEP < total, f"MODELCORE_TEST_KILL_AFTER_STEP must be a step from 1 to {total - 1}"
    due = KILL_AFTER_STEP // SAVE_STEPS * SAVE_STEPS  # the newest checkpoint written by then (0: none yet)
    out = tmp_path_factory.mktemp("killed")
    job = "test-killed-node"
    killed: dict = {}

    def trained_step() -> int:  # rank 0 logs every step in this run
        lines = (out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").is_file() else []
        return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)

    def newest_checkpoint() -> int:
        return max((int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")), default=0)

    def kill_at_step() -> None:  # the fault: the node dies once step K is trained and its checkpoint is written
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (trained_step() < KILL_AFTER_STEP or newest_checkpoint() < due):
            time.sleep(0.02)
        killed["newest_checkpoint"], killed["step"] = newest_checkpoint(), trained_step()
        killed["pids"] = kill_node(job, KILL_NODE)

    watcher = threading.Thread(target=kill_at_step, daemon=True)
    watcher.start()
    result, seconds = _fine_tune(base_and_data, out, PER_NODE_BATCH, TWO_NODES, job, logging_steps=1)
    watcher.join(timeout=5)
    assert killed.get("pids"), f"node {KILL_NODE} was not killed before training ended: {killed}"
    assert KILL_AFTER_STEP <= killed["step"] < total, killed  # mid-training
    assert result.restarts >= 1
    resumed = int(Path(result.resumed_from).name.split("-")[1]) if result.resumed_from else 0
    assert resumed >= killed["newest_checkpoint"] >= due and resumed % SAVE_STEPS == 0, (resumed, killed)
    assert result.global_step == total
    difference = _max_difference(two_nodes[0], result)
    assert difference < 2e-5
    record = json.loads((out / "result.json").read_text())["job"]
    assert record["node_restarts"] >= 1 and record["time_lost_s"] > 0
    assert record["resumed_from_step"] == resumed
    FIGURES["killed_node"] = {
        "kill_after_step": KILL_AFTER_STEP, "killed_node": KILL_NODE, "killed_at_step": killed["step"],
        "resumed_from_step": record["resumed_from_step"],
        "restarts": record["restarts"], "node_restarts": record["node_restarts"],
        "time_lost_s_recorded": record["time_lost_s"], "killed_run_s": round(seconds, 1),
        "uninterrupted_run_s": round(two_nodes[1], 1), "wall_time_lost_s": round(seconds - two_nodes[1], 1),
        "max_abs_weight_difference": difference, **_machine(),
    }  # fmt: skip


def test_the_flow_trains_on_two_nodes_and_records_it_in_mlflow(tmp_path, prefect_server, pipeline_home, tiny_checkpoint,
                                                               real_csv):  # fmt: skip
    from mlflow import MlflowClient

    from flows.params import RetrainParams
    from flows.retrain import retrain
    from tasks import settings

    params = RetrainParams.model_validate({
        "base_model": str(tiny_checkpoint), "dataset": str(real_csv), "text_column": "review",
        "label_column": "sentiment", "max_length": 32, "register_model": False, "export_formats": ["safetensors"],
        "training": {"max_steps": 12, "per_device_train_batch_size": 8, "save_steps": 4, "learning_rate": 5e-3},
        "distributed": {"nodes": 2},
    })  # fmt: skip
    summary = retrain(params)
    assert summary["training"] == {"nodes": 2, "restarts": 0, "resumed_from_step": 0, "time_lost_s": 0.0}
    run = MlflowClient(tracking_uri=settings.tracking_uri()).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train/nodes"] == 2 and run.data.metrics["train/restarts"] == 0
    assert "train/loss" in run.data.metrics and run.data.params["distributed.nodes"] == "2"
    assert run.data.params["per_device_train_batch_size"] == "8"
    assert shutil.which("ip")  # (the module fixture checks that nothing was left behind)
