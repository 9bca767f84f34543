"""Fork server for test_resave_kill: re-saves a checkpoint in a child process that is killed with SIGKILL.

Started once per test module (torch and modelcore imported once); it reads one JSON request per
line on stdin and answers one JSON line on stdout:

    {"dir": DIR, "kill_at": K or null, "kill_after": SECONDS or null}
    -> {"status": "killed" | "completed", "ops": [labels of the filesystem steps it reached], "seconds": S}

For each request it forks a child that re-saves the "new" model over DIR (max_shard_size="2MB",
config.json in the same transaction). ``kill_at=K``: the child SIGKILLs itself right before its
K-th filesystem step (temp file created, shard written, half a shard written, fsync, rename,
removal). ``kill_after=S``: this server SIGKILLs the child S seconds after forking it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

from modelcore import LlamaConfig, LlamaForCausalLM
from modelcore.serialization import checkpoint

MAX_SHARD_SIZE = "2MB"


def build_model(version: str) -> LlamaForCausalLM:
    """The "old" or "new" tiny Llama: same shapes (so the same shard names), different values and config."""
    torch.manual_seed(0 if version == "old" else 1)
    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6 if version == "old" else 1e-5,
    )
    return LlamaForCausalLM(config)


def resave(model: LlamaForCausalLM, directory: Path) -> None:
    """The user's call: ``save_pretrained`` switches config.json in the same transaction as the weights."""
    model.save_pretrained(directory, max_shard_size=MAX_SHARD_SIZE)


class _KillPoints:
    """Counts the filesystem steps of a save; SIGKILLs the process right before step ``kill_at``."""

    def __init__(self, kill_at: int | None, report_fd: int) -> None:
        self.kill_at = kill_at
        self.report_fd = report_fd
        self.labels: list[str] = []

    def step(self, label: str) -> None:
        self.labels.append(label)
        os.write(self.report_fd, (label + "\n").encode())  # the server learns how far the child got
        if len(self.labels) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        real_replace, real_unlink, real_fsync, real_mkstemp = os.replace, os.unlink, os.fsync, tempfile.mkstemp
        real_write = checkpoint.write_safetensors
        real_write_bytes = Path.write_bytes

        def replace(src, dst, *args, **kwargs):
            self.step(f"replace {Path(src).name} -> {Path(dst).name}")
            return real_replace(src, dst, *args, **kwargs)

        def unlink(path, *args, **kwargs):
            self.step(f"unlink {Path(path).name}")
            return real_unlink(path, *args, **kwargs)

        def fsync(fd):
            self.step("fsync")
            return real_fsync(fd)

        def mkstemp(*args, **kwargs):
            self.step(f"mkstemp {kwargs.get('prefix', '')}")
            return real_mkstemp(*args, **kwargs)

        def write_safetensors(tensors, path, metadata=None):
            self.step(f"write {Path(path).name}")
            real_write(tensors, path, metadata)
            if self.kill_at == len(self.labels) + 1:  # killed half-way through writing this shard
                size = Path(path).stat().st_size
                os.truncate(path, size // 2)
            self.step(f"wrote {Path(path).name}")

        def write_bytes(path, data):
            self.step(f"write {path.name}")
            return real_write_bytes(path, data)

        os.replace, os.unlink, os.fsync, tempfile.mkstemp = replace, unlink, fsync, mkstemp
        checkpoint.write_safetensors = write_safetensors
        Path.write_bytes = write_bytes


def _run(request: dict, new_model: LlamaForCausalLM) -> dict:
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: re-save, possibly killing itself at a step
        code = 1
        try:
            os.close(read_fd)
            _KillPoints(request.get("kill_at"), write_fd).install()
            resave(new_model, Path(request["dir"]))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    if request.get("kill_after") is not None:
        time.sleep(request["kill_after"])
        os.kill(pid, signal.SIGKILL)  # a no-op if the child already exited (it stays a zombie until waited)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    with os.fdopen(read_fd, "rb") as report:
        labels = report.read().decode().splitlines()
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        outcome = "killed"
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        outcome = "completed"
    else:
        outcome = f"failed (wait status {status})"
    return {"status": outcome, "ops": labels, "seconds": seconds}


def main() -> None:
    torch.set_num_threads(1)
    new_model = build_model("new")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_run(json.loads(line), new_model)), flush=True)


if __name__ == "__main__":
    main()
