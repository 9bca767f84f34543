"""Entry point of the multi-GPU training job: the flow's fine-tuning step under torchrun (DDP via accelerate).

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        infra/production/train_distributed.py --spec /pipeline/runs/<flow run id>/train-spec.json

The spec holds the arguments of ``tasks.training.fine_tune`` (``base_model``, ``tokenized_path``,
``labels``, ``training``, ``output_dir``, ``tracking_uri``, ``run_id``), written by whoever launches
the job. Every rank reads it; the Trainer gives each rank its slice of every global batch (N ranks x
batch b = one process x batch N*b), and only rank 0 logs to MLflow and writes the checkpoint and
``output_dir/result.json``. Checked here on CPU (``torchrun --standalone --nproc-per-node 2``, gloo);
on GPUs the same command uses NCCL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tasks`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON with fine_tune's arguments")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text(encoding="utf-8"))

    from tasks.training import fine_tune

    result = fine_tune.fn(**spec)  # the task's function, without Prefect orchestration: ranks are not runs
    if int(os.environ.get("RANK", "0")) == 0:
        out = Path(spec["output_dir"]) / "result.json"
        out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"rank 0: {result['global_step']} steps, loss {result['train_loss']:.4f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
