"""The distributed job's bookkeeping, without namespaces or training: the restart record, the metrics left for the
flow to replay, the torchrun command, and the platform's refusals."""

from __future__ import annotations

import json

import pytest

from tasks import distributed, platforms


def _attempts(path, *lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_an_uninterrupted_job_records_no_restart(tmp_path):
    path = _attempts(tmp_path / "attempts.jsonl", {"started_at": 100.0, "step": 0, "checkpoint_written_at": None})
    record = distributed.restart_record(path)
    assert (record["restarts"], record["resumed_from_step"], record["time_lost_s"]) == (0, 0, 0.0)


def test_time_lost_runs_from_the_checkpoint_resumed_from_to_the_new_start(tmp_path):
    path = _attempts(
        tmp_path / "attempts.jsonl",
        {"started_at": 100.0, "step": 0, "checkpoint_written_at": None},
        {"started_at": 130.0, "step": 8, "checkpoint_written_at": 110.0},  # killed after checkpoint-8 (at 110 s)
        {"started_at": 150.0, "step": 8, "checkpoint_written_at": 110.0},  # failed again before checkpoint-12
    )
    record = distributed.restart_record(path)
    assert (record["restarts"], record["resumed_from_step"]) == (2, 8)
    assert record["time_lost_s"] == (130 - 110) + (150 - 130)


def test_no_attempts_file_is_a_job_that_never_trained(tmp_path):
    record = distributed.restart_record(tmp_path / "missing.jsonl")
    assert (record["restarts"], record["resumed_from_step"], record["time_lost_s"]) == (0, 0, 0.0)


def test_the_log_becomes_pending_metrics_each_step_once_with_the_restart_record(tmp_path):
    lines = [
        {"step": 4, "epoch": 0.33, "loss": 0.70, "learning_rate": 1e-3},
        {"step": 8, "epoch": 0.67, "loss": 0.69, "learning_rate": 9e-4},  # trained again after the restart
        {"step": 8, "epoch": 0.67, "loss": 0.68, "learning_rate": 9e-4},
        {"step": 12, "epoch": 1.0, "train_runtime": 3.0, "train_loss": 0.69},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    record = {"restarts": 1, "resumed_from_step": 4, "time_lost_s": 2.5, "nodes": 2}
    path = distributed.pending_metrics(tmp_path, "run-1", record, final_step=12)
    sent = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in sent] == [4, 8, 12, 12] and {r["run_id"] for r in sent} == {"run-1"}
    assert sent[1]["metrics"]["train/loss"] == 0.68  # the later line of a step trained twice
    assert sent[2]["metrics"] == {"train/epoch": 1.0, "train/runtime": 3.0, "train/mean_loss": 0.69}
    assert sent[3]["metrics"] == {
        "train/restarts": 1.0, "train/resumed_from_step": 4.0, "train/time_lost_s": 2.5, "train/nodes": 2.0
    }  # fmt: skip


def test_the_torchrun_command_names_the_rendezvous_and_the_node():
    command = distributed.torchrun_command(2, 1, "10.231.0.1:29400", "job-1", 3, "10.231.0.2", is_host=False)
    text = " ".join(command)
    assert "-m torch.distributed.run --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d" in text
    assert "--rdzv-endpoint 10.231.0.1:29400 --rdzv-id job-1 --rdzv-conf is_host=0 --max-restarts 3" in text
    assert text.endswith("--local-addr 10.231.0.2")


def test_the_platform_refuses_without_root_or_ip(monkeypatch):
    monkeypatch.setattr(platforms.os, "geteuid", lambda: 1000)
    with pytest.raises(platforms.PlatformError, match="needs root"):
        platforms.check_can_run()
    monkeypatch.setattr(platforms.shutil, "which", lambda name: None)
    with pytest.raises(platforms.PlatformError, match="iproute2"):
        platforms.check_can_run()


def test_one_node_trains_in_process_and_the_namespaces_are_for_two_or_more(monkeypatch):
    from tasks import training

    calls = []
    monkeypatch.setattr(training, "train_here", lambda *args, **kwargs: calls.append(args) or "in process")
    assert training.fine_tune.fn("base", "data", [], {}, "out", distributed={"nodes": 1}) == "in process"
    assert len(calls) == 1
    with pytest.raises(ValueError, match="2 or more"):
        platforms.NetnsNodes("job", 1)


def test_node_names_are_short_and_per_job():
    names = {platforms.namespace_name(job, i) for job in ("a", "b") for i in range(2)}
    assert len(names) == 4 and all(n.startswith(platforms.NAMESPACE_PREFIX) and len(n) < 20 for n in names)


class _HereNode(platforms.Node):
    """A node whose commands run right here (no namespace): the restart policy alone."""

    def wrap(self, command):
        return command


def test_the_platform_starts_a_failed_node_again_and_gives_up_past_its_backoff_limit(tmp_path):
    import sys

    nodes = [_HereNode(i, "127.0.0.1", "lo", "none") for i in range(2)]
    marker = tmp_path / "failed-once"
    flaky = f"import pathlib,sys; p=pathlib.Path({str(marker)!r}); sys.exit(0 if p.exists() else p.touch() or 3)"
    job = platforms.NodeJob(nodes, lambda node: [sys.executable, "-c", flaky if node.index else "pass"], {}, tmp_path)
    job.run(timeout_s=60)
    assert job.restarts == 1
    assert [(e.node, e.returncode, e.restarted) for e in job.events if e.returncode] == [(1, 3, True)]
    assert (tmp_path / "node-1.log").is_file()

    failing = platforms.NodeJob(nodes, lambda node: [sys.executable, "-c", "raise SystemExit(5)"], {}, tmp_path, 1)
    with pytest.raises(platforms.PlatformError, match="no restart left"):
        failing.run(timeout_s=60)
    assert failing.restarts == 1
