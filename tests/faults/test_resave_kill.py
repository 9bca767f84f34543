"""kill -9 during a sharded re-save over a checkpoint with the same shard names: old or new, never a mix.

A fork server (``_ckpt_resave_child.py``, one process with torch imported once) re-saves the "new"
model over the "old" checkpoint in a child process that is SIGKILLed: at every filesystem step
of the save in turn (deterministic), and after random delays. After each kill the checkpoint is
loaded with ``from_pretrained`` (which finishes a save killed after its commit point) and must
equal the old model or the new one exactly, config.json included; the next save must leave no
temporary file or commit record behind.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modelcore import LlamaForCausalLM
from modelcore.serialization.atomic import JOURNAL_NAME
from tests.faults._ckpt_resave_child import build_model, resave

CHILD = Path(__file__).with_name("_ckpt_resave_child.py")
REQUEST_TIMEOUT_S = 60
RANDOM_KILLS = 30


class ForkServer:
    """The child process that forks one re-save per request (see _ckpt_resave_child.py)."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=Path(__file__).parents[2],
        )
        assert self._reply() == {"ready": True}

    def resave(self, directory: Path, kill_at: int | None = None, kill_after: float | None = None) -> dict:
        request = {"dir": str(directory), "kill_at": kill_at, "kill_after": kill_after}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def _reply(self) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], REQUEST_TIMEOUT_S)
        if not ready:
            self.close()
            pytest.fail(f"the re-save fork server did not answer within {REQUEST_TIMEOUT_S} s")
        line = self.process.stdout.readline()
        if not line:
            pytest.fail(f"the re-save fork server died (exit status {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def server():
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def models():
    old, new = build_model("old"), build_model("new")
    return {"old": old.state_dict(), "new": new.state_dict(), "old_model": old, "new_model": new}


def which_checkpoint(directory: Path, models: dict) -> str:
    """Load ``directory``; return "old" or "new" when it equals that model exactly (config.json included)."""
    loaded = LlamaForCausalLM.from_pretrained(directory).state_dict()
    matches = [v for v in ("old", "new") if all(torch.equal(loaded[k], t) for k, t in models[v].items())]
    assert len(matches) == 1, f"{directory}: the loaded weights are a mix of the old and the new checkpoint"
    eps = json.loads((directory / "config.json").read_text())["rms_norm_eps"]
    assert eps == models[f"{matches[0]}_model"].config.rms_norm_eps, "config.json and weights from different saves"
    return matches[0]


def fresh_old_checkpoint(directory: Path, models: dict) -> None:
    """Re-save the old model (the "next save") and check it left exactly the checkpoint's files."""
    resave(models["old_model"], directory)
    names = sorted(p.name for p in directory.iterdir())
    shards = sorted(n for n in names if n.startswith("model-"))
    assert names == ["config.json", *shards, "model.safetensors.index.json"], names
    assert len(shards) >= 4


def test_dry_run_saves_new_checkpoint_over_old(server, models, tmp_path):
    fresh_old_checkpoint(tmp_path, models)
    assert which_checkpoint(tmp_path, models) == "old"
    reply = server.resave(tmp_path)
    assert reply["status"] == "completed"
    assert which_checkpoint(tmp_path, models) == "new"


def kill_and_check(server, models, directory: Path, **kill) -> tuple[str, dict]:
    fresh_old_checkpoint(directory, models)
    reply = server.resave(directory, **kill)
    assert reply["status"] in ("killed", "completed"), reply
    outcome = which_checkpoint(directory, models)
    assert not (directory / JOURNAL_NAME).exists(), "the load did not finish the committed save"
    fresh_old_checkpoint(directory, models)  # the next save removes every temporary file (checked inside)
    return outcome, reply


def test_sigkill_at_every_step_of_a_resave_leaves_old_or_new(server, models, tmp_path):
    fresh_old_checkpoint(tmp_path, models)
    steps = server.resave(tmp_path)["ops"]
    renames = [i for i, op in enumerate(steps, 1) if op.startswith("replace .model-")]
    assert len(steps) > 30 and len(renames) >= 4, steps
    outcomes = {}
    for kill_at in range(1, len(steps) + 1):
        outcome, reply = kill_and_check(server, models, tmp_path, kill_at=kill_at)
        assert reply["status"] == "killed" and len(reply["ops"]) == kill_at, reply
        outcomes[kill_at] = outcome
    commit = next(i for i, op in enumerate(steps, 1) if op.startswith(f"replace .{JOURNAL_NAME}"))
    # Killed before the commit record is in place: the old checkpoint; from the first rename after it: the new one.
    assert all(outcomes[k] == "old" for k in range(1, commit + 1)), outcomes
    assert all(outcomes[k] == "new" for k in range(commit + 1, len(steps) + 1)), outcomes


def test_sigkill_after_random_delays_leaves_old_or_new(server, models, tmp_path):
    fresh_old_checkpoint(tmp_path, models)
    full = server.resave(tmp_path)["seconds"]
    rng = random.Random(13)
    counts = {"old": 0, "new": 0}
    killed_mid_save = 0
    started = time.monotonic()
    for _ in range(RANDOM_KILLS):
        outcome, reply = kill_and_check(server, models, tmp_path, kill_after=rng.uniform(0, full))
        counts[outcome] += 1
        killed_mid_save += reply["status"] == "killed" and len(reply["ops"]) > 0
    assert counts["old"] + counts["new"] == RANDOM_KILLS
    assert killed_mid_save >= RANDOM_KILLS // 4, f"only {killed_mid_save} kills landed inside the save"
    assert time.monotonic() - started < 120
