"""Run workspaces: keyed on parameters and data, locked while running, resumable when unfinished."""

from __future__ import annotations

import json
import os
import time

from tasks.runs import FAILED, FINISHED, RUNNING, RunWorkspace, prune, run_key


def _checkpoint(workspace: RunWorkspace, step: int) -> None:
    path = workspace.directory / "train" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(b"\0" * 1000)


def test_run_key_depends_on_parameters_and_data_only():
    params = {"lr": 1e-3, "training": {"seed": 0, "max_steps": 10}}
    assert run_key(params, "abc") == run_key({"training": {"max_steps": 10, "seed": 0}, "lr": 1e-3}, "abc")
    assert run_key(params, "abc") != run_key(params, "abd")
    assert run_key(params, "abc") != run_key({**params, "lr": 2e-3}, "abc")


def test_a_dead_run_is_found_with_its_newest_checkpoint(tmp_path):
    first = RunWorkspace.claim("k", root=tmp_path)
    assert first.previous is None
    first.record(status=RUNNING, mlflow_run_id="m1", flow_run_id="f1")
    _checkpoint(first, 10)
    _checkpoint(first, 20)
    first.release()  # the process died: the kernel drops its lock the same way

    second = RunWorkspace.claim("k", root=tmp_path)
    assert second.directory == first.directory
    assert second.previous is not None and second.previous.crashed
    assert (second.previous.mlflow_run_id, second.previous.flow_run_id) == ("m1", "f1")
    assert second.previous.checkpoint == str(first.directory / "train" / "checkpoint-20")


def test_a_failed_run_is_resumed_but_not_called_crashed(tmp_path):
    first = RunWorkspace.claim("k", root=tmp_path)
    first.record(status=FAILED, mlflow_run_id="m1")
    first.release()
    previous = RunWorkspace.claim("k", root=tmp_path).previous
    assert previous is not None and previous.status == FAILED and not previous.crashed and previous.checkpoint is None


def test_a_run_in_progress_elsewhere_is_not_shared(tmp_path):
    holder = RunWorkspace.claim("k", root=tmp_path)
    holder.record(status=RUNNING, mlflow_run_id="m1")
    other = RunWorkspace.claim("k", root=tmp_path)
    assert other.directory != holder.directory and other.directory.name.startswith("k-")
    assert other.previous is None
    holder.release()
    other.release()


def test_finish_drops_checkpoints_keeps_the_model_and_a_new_run_starts_afresh(tmp_path):
    workspace = RunWorkspace.claim("k", root=tmp_path)
    workspace.record(status=RUNNING, mlflow_run_id="m1")
    _checkpoint(workspace, 10)
    (workspace.directory / "train" / "model").mkdir()
    (workspace.directory / "train" / "model" / "config.json").write_text("{}")
    assert workspace.finish() == 1000
    assert json.loads((workspace.directory / "run.json").read_text())["status"] == FINISHED
    assert [p.name for p in (workspace.directory / "train").iterdir()] == ["model"]
    workspace.release()

    again = RunWorkspace.claim("k", root=tmp_path)
    assert again.previous is None
    assert sorted(p.name for p in again.directory.iterdir()) == [".lock"]


def test_prune_removes_only_old_unfinished_unlocked_runs(tmp_path):
    old = time.time() - 10 * 86400

    def make(key: str, status: str, updated: float, hold: bool = False) -> RunWorkspace:
        workspace = RunWorkspace.claim(key, root=tmp_path)
        workspace.record(status=status)
        record = json.loads((workspace.directory / "run.json").read_text()) | {"updated": updated}
        (workspace.directory / "run.json").write_text(json.dumps(record))
        if not hold:
            workspace.release()
        return workspace

    make("abandoned", FAILED, old)
    make("crashed", RUNNING, old)
    make("recent", FAILED, time.time())
    make("finished", FINISHED, old)
    held = make("running", RUNNING, old, hold=True)
    removed = prune(root=tmp_path, max_age_days=7)
    assert sorted(p.name for p in removed) == ["abandoned", "crashed"]
    assert sorted(os.listdir(tmp_path)) == ["finished", "recent", "running"]
    held.release()
