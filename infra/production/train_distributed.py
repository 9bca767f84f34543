"""Entry point of a training job's ranks: the flow's fine-tuning step under torchrun (DDP via accelerate).

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 --rdzv-id JOB \\
        --max-restarts 3 infra/production/train_distributed.py --spec /pipeline/runs/<flow run id>/train/train-spec.json

The spec holds the arguments of ``tasks.training.train_here`` (``base_model``, ``tokenized_path``, ``labels``,
``training``, ``output_dir``, ``task_name``, ``lora``), written by the fine_tune task (``tasks.distributed``) or
whoever launches the job. Every rank reads it; the Trainer gives each rank its slice of every global batch (N ranks x
batch b = one process x batch N*b), and only rank 0 writes checkpoints, ``log.jsonl``, the final model, one line per
start of training in ``attempts.jsonl`` and ``output_dir/result.json``. A start after a failure (torchrun restarted
the workers) resumes from the newest complete checkpoint. Checked on CPU with gloo across two network namespaces
(tests/distributed); on GPUs the same command uses NCCL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tasks`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON with train_here's arguments")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank {rank} %(name)s: %(message)s")  # fmt: skip

    from tasks.distributed import RESULT_FILE, attempt_log
    from tasks.training import train_here

    # the task's function without Prefect (ranks are not task runs) and without MLflow (the task replays the log)
    result = train_here(**spec, callbacks=[attempt_log(spec["output_dir"])])
    if rank == 0:
        out = Path(spec["output_dir"]) / RESULT_FILE
        out.write_text(json.dumps({"train_result": asdict(result)}, indent=2), encoding="utf-8")
        logging.getLogger(__name__).info("%d steps, loss %.4f; wrote %s", result.global_step, result.train_loss, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
