"""The main job against the reference glue: wall time, accuracy, and the orchestration + tracking share.

Both run as fresh processes on the same data and settings (see ``benchmarks/reference_pipeline.py``):

* ours: ``python -m flows.retrain`` (the README's main-job command) in a fresh pipeline home;
* reference: HF Trainer + Prefect + MLflow's transformers flavor + ONNX int8 export.

Each gets a Prefect home that was started once before (Prefect's temporary server takes seconds
more on a fresh home; a user's machine has a warm one), and a fresh MLflow SQLite store.
Overhead = wall time - model work (the training loop, the held-out evaluation, the export
conversions); it is what orchestration, tracking, registration, imports and I/O cost.

    python -m benchmarks.bench_pipeline [--workdir DIR] [--skip-reference] [--only ours|reference]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("benchmarks.bench_pipeline")
THREADS = "2"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env.update(OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS, TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _warm_prefect(env: dict[str, str]) -> None:
    code = "from prefect import flow\n@flow\ndef warm():\n    return 1\nwarm()\n"
    # the same start-up allowance as tasks.settings gives the flows (a fresh home migrates its database)
    env = env | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"warming Prefect's home failed ({out.returncode}):\n{out.stderr[-3000:]}")


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    with open(log, "w") as err:
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}); see {log}")
    text = out.stdout
    return wall, json.loads(text[text.index("{") :]) if cmd[-1] == "--json" else json.loads(
        text.strip().splitlines()[-1]
    )


def run_ours(work: Path) -> dict:
    home = work / "ours"
    env = _env(MODELCORE_PIPELINE_HOME=str(home), PREFECT_HOME=str(home / "prefect"))
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    _warm_prefect(env)
    wall, summary = _timed([sys.executable, "-m", "flows.retrain", "--json"], env, work / "ours.log")
    stages = summary["timings_s"]
    model_work = summary["train_runtime_s"] + stages["evaluate"] + stages.get("export", 0.0)
    return {
        "wall_s": round(wall, 1),
        "accuracy": round(summary["metrics"]["accuracy"], 4),
        "train_s": round(summary["train_runtime_s"], 1),
        "eval_s": stages["evaluate"],
        "export_s": stages.get("export", 0.0),
        "overhead_s": round(wall - model_work, 1),
        "overhead_share": round((wall - model_work) / wall, 3),
        "aliases": summary["aliases"],
        "pull": time_to_first_prediction(PULL_OURS.format(name=summary["registered_model"]), summary["tracking_uri"]),
        "exports": sorted(summary["exports"]),
        "stages_s": stages,
    }


PULL_OURS = (
    "import time; t0 = time.perf_counter()\n"
    "import modelcore\n"
    "pipe = modelcore.pipeline('text-classification', model='models:/{name}@champion')\n"
    "pipe('a gorgeous, witty film'); print(time.perf_counter() - t0)\n"
)
PULL_REFERENCE = (
    "import time; t0 = time.perf_counter()\n"
    "import mlflow, pandas as pd\n"
    "model = mlflow.pyfunc.load_model('models:/{name}@champion')\n"
    "model.predict(pd.DataFrame({{'text': ['a gorgeous, witty film']}})); print(time.perf_counter() - t0)\n"
)


def time_to_first_prediction(code: str, tracking_uri: str, repeats: int = 3) -> dict:
    """Process start to first prediction of a fresh process pulling the champion (median, and in-process part)."""
    walls, inner = [], []
    env = _env(MLFLOW_TRACKING_URI=tracking_uri)
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        walls.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        inner.append(float(out.stdout.strip().splitlines()[-1]))
    walls.sort()
    inner.sort()
    return {"wall_s": round(walls[len(walls) // 2], 2), "in_process_s": round(inner[len(inner) // 2], 2)}


def run_reference(work: Path) -> dict:
    home = work / "reference"
    env = _env(PREFECT_HOME=str(home / "prefect"))
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    _warm_prefect(env)
    cmd = [sys.executable, "-m", "benchmarks.reference_pipeline", str(home / "work")]
    wall, result = _timed(cmd, env, work / "reference.log")
    model_work = result["train_s"] + result["eval_s"] + result["export_s"]
    return {
        "wall_s": round(wall, 1),
        "accuracy": round(result["accuracy"], 4),
        "train_s": round(result["train_s"], 1),
        "eval_s": round(result["eval_s"], 1),
        "export_s": round(result["export_s"], 1),
        "overhead_s": round(wall - model_work, 1),
        "overhead_share": round((wall - model_work) / wall, 3),
        "log_model_s": round(result["log_s"], 1),
        "pull": time_to_first_prediction(
            PULL_REFERENCE.format(name="reference-sentiment"), f"sqlite:///{home / 'work' / 'mlflow.db'}"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--only", choices=("ours", "reference"), help="run one side; the other is kept from WORKDIR/summary.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    previous = work / "summary.json"
    results = json.loads(previous.read_text()) if args.only and previous.exists() else {}
    if args.only != "reference":
        results["ours"] = run_ours(work)
        logger.info("ours: %s", results["ours"])
    if not args.skip_reference and args.only != "ours":
        results["reference"] = run_reference(work)
        logger.info("reference: %s", results["reference"])
    (work / "summary.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
