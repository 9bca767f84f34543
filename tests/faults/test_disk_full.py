"""A full disk: checkpoints and exports name the path and the bytes needed, leave nothing partial, are not retried.

The disks are real: a small tmpfs mounted for the test (we run as root, here and in CI).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import subprocess
from pathlib import Path

import pytest

from modelcore.errors import DiskFullError


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Write a filler file so that about ``leave`` bytes stay free on ``disk``."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with open(disk / "filler.bin", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def _tiny_model():
    import torch

    from modelcore import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=2000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return BertForSequenceClassification(config)


def test_a_checkpoint_that_does_not_fit_names_path_and_bytes_and_leaves_the_previous_one(tmp_path):
    import torch

    from modelcore import Trainer, TrainerCallback, TrainingArguments
    from modelcore.trainer.checkpoint import list_checkpoints

    class FillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                _fill(Path(args.output_dir), leave=64 * 1024)

    rows = [{"input_ids": [101, 7 + i % 50, 102], "attention_mask": [1, 1, 1], "labels": i % 2} for i in range(64)]
    with small_disk(tmp_path / "disk", "24m") as disk:
        args = TrainingArguments(
            output_dir=str(disk / "out"), max_steps=4, save_steps=2, per_device_train_batch_size=8, report_to=[]
        )
        trainer = Trainer(_tiny_model(), args, train_dataset=rows, callbacks=[FillAfterFirstSave()])
        with pytest.raises(DiskFullError) as caught:
            trainer.train()
        message = str(caught.value)
        assert str(disk / "out" / "checkpoint-4") in message and "needed" in message and "bytes free" in message
        assert caught.value.needed > sum(p.numel() * 4 for p in trainer.model.parameters())
        assert [p.name for p in list_checkpoints(disk / "out")] == ["checkpoint-2"]
        assert not [p for p in (disk / "out").iterdir() if p.name.startswith(".")], "no partial checkpoint left"
        state = torch.load(disk / "out" / "checkpoint-2" / "optimizer.pt", weights_only=True)
        assert state["state"], "the previous checkpoint is intact"


def test_a_write_that_runs_out_of_space_midway_removes_the_partial_output(tmp_path):
    from tasks.outputs import task_output

    with small_disk(tmp_path / "disk", "1m") as disk:
        target = disk / "export"
        with pytest.raises(DiskFullError) as caught, task_output(target) as out:
            out.mkdir()
            (out / "config.json").write_text("{}")
            with open(out / "model.safetensors", "wb") as f:
                for _ in range(64):  # 4 MB into a 1 MB disk
                    f.write(b"\1" * 65536)
        assert str(target) in str(caught.value) and caught.value.errno == errno.ENOSPC
        assert not target.exists(), "the partial export is removed"
        assert isinstance(caught.value.__cause__, OSError)


def test_export_on_a_full_disk_is_refused_up_front_naming_the_bytes(tmp_path, tiny_checkpoint):
    from tasks.export import export_safetensors

    with small_disk(tmp_path / "disk", "1m") as disk:
        with pytest.raises(DiskFullError) as caught:
            export_safetensors.fn(str(tiny_checkpoint), str(disk / "safetensors"), "50MB", ["a fine film"])
        assert caught.value.needed > 1_000_000 and caught.value.free < caught.value.needed
        assert str(disk / "safetensors") in str(caught.value)
        assert not (disk / "safetensors").exists()


def _retrying_tasks():
    from prefect import Task

    for module in (
        "tasks.data",
        "tasks.evaluation",
        "tasks.export",
        "tasks.registry",
        "tasks.tracking",
        "tasks.training",
    ):
        for name, value in vars(importlib.import_module(module)).items():
            if isinstance(value, Task) and value.retries:
                yield f"{module}.{name}", value


def test_no_task_retries_a_full_disk_but_each_retries_other_failures():
    from prefect.states import Failed

    from tasks.outputs import retry_unless_disk_full

    found = dict(_retrying_tasks())
    assert {"tasks.training.fine_tune", "tasks.registry.register", "tasks.tracking.log_to_run"} <= set(found)
    for name, task in found.items():
        assert task.retry_condition_fn is retry_unless_disk_full, name
        full = Failed(data=DiskFullError("/x/model.safetensors", needed=10, free=1))
        assert task.retry_condition_fn(task, None, full) is False, name
        wrapped = RuntimeError("upload failed")
        wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
        assert task.retry_condition_fn(task, None, Failed(data=wrapped)) is False, name
        assert task.retry_condition_fn(task, None, Failed(data=ConnectionError("server down"))) is True, name


def test_partial_model_artifacts_of_a_failed_upload_are_deleted(tmp_path):
    from mlflow import MlflowClient

    from tasks.tracking import discard_artifacts

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("disk", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 4096)
    client.log_artifacts(run.info.run_id, str(partial), "model")
    client.log_text(run.info.run_id, "kept", "evaluation/report.txt")
    discard_artifacts(uri, run.info.run_id, "model")
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["evaluation"]
