"""Training checkpoints: ``output_dir/checkpoint-N`` with everything needed to resume exactly.

A checkpoint holds the model (safetensors + config.json), the tokenizer when there is one, the
optimizer and scheduler states, the RNG states of every generator the loop uses, the
``TrainerState`` and the training arguments. It is written into a hidden temporary directory and
renamed into place, so a ``checkpoint-N`` directory is always complete: the newest one is where a
crashed run resumes. Optimizer/scheduler/RNG files are our own ``torch.save`` output and are read
back with ``weights_only=True`` (plain tensors and numbers only).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelcore.errors import DiskFullError, free_bytes, is_disk_full
from modelcore.trainer.callbacks import TRAINER_STATE_NAME, TrainerState

logger = logging.getLogger(__name__)

PREFIX = "checkpoint"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
RNG_NAME = "rng_state.pt"
ARGS_NAME = "training_args.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX}-(\d+)$")


def model_fingerprint(model: torch.nn.Module) -> str:
    """Class name and every parameter's name and shape: equal for the same architecture and size."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, param in model.state_dict().items():
        digest.update(f"{name}:{tuple(param.shape)};".encode())
    return digest.hexdigest()[:16]


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first (temporary directories are ignored)."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def rng_state() -> dict[str, Any]:
    """Every global generator's state as tensors, numbers and lists (safe for ``weights_only`` loading)."""
    numpy_state = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: Path,
    *,
    model: Any,
    processing_class: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    args: Any,
    rng_states: list[dict[str, Any]],
) -> Path:
    """Write ``checkpoint-<global_step>`` atomically (temp dir, then rename) and return it.

    Args:
        rng_states: one per process; saved as ``rng_state.pt`` (rank 0) and ``rng_state_<rank>.pt``.
    """
    final = output_dir / f"{PREFIX}-{state.global_step}"
    tmp = output_dir / f".{final.name}.tmp-{os.getpid()}"
    remove_stale_temporaries(output_dir)
    needed = checkpoint_bytes(model, None if args.save_only_model else optimizer)
    free = free_bytes(output_dir)
    if free is not None and needed > free:
        raise DiskFullError(final, needed=needed, free=free)
    try:
        model.save_pretrained(tmp)
        if processing_class is not None and hasattr(processing_class, "save_pretrained"):
            processing_class.save_pretrained(tmp)
        if not args.save_only_model:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_NAME)
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_NAME)
        for rank, rng in enumerate(rng_states):
            torch.save(rng, tmp / (RNG_NAME if rank == 0 else f"rng_state_{rank}.pt"))
        state.save_to_json(tmp / TRAINER_STATE_NAME)
        args.to_json_file(tmp / ARGS_NAME)
        if final.exists():  # the same step saved again (e.g. at the end): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise DiskFullError(final, needed=needed, free=free_bytes(output_dir)) from error
        raise
    return final


def checkpoint_bytes(model: Any, optimizer: torch.optim.Optimizer | None) -> int:
    """An upper estimate of the bytes a checkpoint takes: the tensors of ``model`` and ``optimizer``, plus 4 MiB."""
    tensors = list(model.state_dict().values())
    if optimizer is not None:
        tensors += [v for per_param in optimizer.state.values() for v in per_param.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors) + (4 << 20)  # + JSON, tokenizer, RNG states


def remove_stale_temporaries(output_dir: Path) -> None:
    """Remove ``.checkpoint-N.tmp-PID`` directories left by processes that died while saving."""
    if not output_dir.is_dir():
        return
    for path in output_dir.glob(f".{PREFIX}-*.tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        logger.info("removing %s, left by an interrupted checkpoint save", path)
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_training_state(checkpoint: Path, rank: int = 0) -> tuple[TrainerState, dict | None, dict | None, dict]:
    """Read (trainer state, optimizer state, scheduler state, this rank's RNG state) of a checkpoint."""
    state_path = checkpoint / TRAINER_STATE_NAME
    if not state_path.is_file():
        raise FileNotFoundError(f"{checkpoint}: not a training checkpoint (no {TRAINER_STATE_NAME})")
    state = TrainerState.load_from_json(state_path)

    def load(name: str) -> Any:
        path = checkpoint / name
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    rng = load(RNG_NAME if rank == 0 else f"rng_state_{rank}.pt") or load(RNG_NAME)
    return state, load(OPTIMIZER_NAME), load(SCHEDULER_NAME), rng


def rotate_checkpoints(output_dir: Path, limit: int | None, keep: str | None = None) -> None:
    """Delete the oldest checkpoints beyond ``limit``, never the one at ``keep`` (the best model)."""
    if not limit:
        return
    checkpoints = list_checkpoints(output_dir)
    removable = [c for c in checkpoints if keep is None or c.resolve() != Path(keep).resolve()]
    for path in removable[: max(0, len(checkpoints) - limit)]:
        logger.info("deleting old checkpoint %s (save_total_limit=%d)", path, limit)
        shutil.rmtree(path, ignore_errors=True)


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
