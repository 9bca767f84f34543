"""Load benchmark: time and peak RSS of ``from_pretrained`` on a ~400 MB fp32 Llama checkpoint.

Ours (``modelcore.LlamaForCausalLM``) against Hugging Face transformers' on the same files. Each
measurement runs in a fresh subprocess (so neither side benefits from the other's allocations),
with the checkpoint already in the page cache for both; runs alternate between the two.

    python -m benchmarks.bench_load [--repeats 5] [--workdir DIR]

RSS is sampled every millisecond from a thread; "delta" is peak RSS during the load minus RSS
just before it (after imports), which is what the load itself costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("benchmarks.bench_load")

# ~100M parameters, untied: 398 MB in fp32.
CONFIG = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=8,
    num_attention_heads=12,
    num_key_value_heads=4,
    tie_word_embeddings=False,
)

_CHILD = r"""
import json, os, sys, threading, time
import psutil
which, path, dtype_name = sys.argv[1], sys.argv[2], sys.argv[3]
import torch
if which == "modelcore":
    from modelcore import LlamaForCausalLM
else:
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from transformers import LlamaForCausalLM
proc = psutil.Process()
peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.001)
before = proc.memory_info().rss
thread = threading.Thread(target=sample, daemon=True)
thread.start()
t0 = time.perf_counter()
model = LlamaForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype_name))
seconds = time.perf_counter() - t0
peak_load = max(peak[0], proc.memory_info().rss)
with torch.inference_mode():  # touches every weight: lazily mapped pages are read here
    logits = model(torch.arange(16)[None]).logits
first_output = time.perf_counter() - t0
stop.set(); thread.join()
peak[0] = max(peak[0], proc.memory_info().rss)
dtypes = sorted({str(p.dtype) for p in model.parameters()})
print(json.dumps({"seconds": seconds, "first_output": first_output, "before": before, "peak_load": peak_load,
                  "peak": peak[0], "dtypes": dtypes, "checksum": float(logits.float().abs().sum())}))
"""


def make_checkpoint(directory: Path) -> Path:
    """Write the benchmark checkpoint with transformers (the peer's own layout), once."""
    if (directory / "model.safetensors").exists():
        return directory
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    model.save_pretrained(directory)
    return directory


def measure(which: str, checkpoint: Path, dtype: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, which, str(checkpoint), dtype], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "modelcore-bench-load")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    checkpoint = make_checkpoint(args.workdir)
    size = (checkpoint / "model.safetensors").stat().st_size
    logger.info("checkpoint %s: %.1f MB", checkpoint, size / 1e6)
    summary: dict = {"file_mb": round(size / 1e6, 1)}
    for dtype in ("float32", "bfloat16"):
        for which in ("modelcore", "transformers"):  # warm the page cache and the import caches
            measure(which, checkpoint, dtype)
        runs: dict[str, list[dict]] = {"modelcore": [], "transformers": []}
        for i in range(args.repeats):
            for which in runs:
                runs[which].append(measure(which, checkpoint, dtype))
                row = runs[which][-1]
                logger.info(
                    "%s run %d %-12s load %.3f s, first output %.3f s",
                    dtype,
                    i,
                    which,
                    row["seconds"],
                    row["first_output"],
                )
        checksums = {which: rows[0]["checksum"] for which, rows in runs.items()}
        if abs(checksums["modelcore"] - checksums["transformers"]) > 1e-3 * abs(checksums["transformers"]):
            raise RuntimeError(f"outputs differ between the two loads: {checksums}")
        summary[dtype] = {which: _summarize(rows, size) for which, rows in runs.items()}
        summary[dtype]["load_speedup"] = round(
            summary[dtype]["transformers"]["load_s"] / summary[dtype]["modelcore"]["load_s"], 2
        )
        summary[dtype]["first_output_speedup"] = round(
            summary[dtype]["transformers"]["first_output_s"] / summary[dtype]["modelcore"]["first_output_s"], 2
        )
    print(json.dumps(summary, indent=2))
    return summary


def _summarize(rows: list[dict], size: int) -> dict:
    """Medians of times; worst case of memory (RSS growth over the pre-load RSS)."""
    return {
        "load_s": round(statistics.median(r["seconds"] for r in rows), 3),
        "first_output_s": round(statistics.median(r["first_output"] for r in rows), 3),
        "load_delta_rss_over_size": round(max(r["peak_load"] - r["before"] for r in rows) / size, 3),
        "delta_rss_over_size_after_forward": round(max(r["peak"] - r["before"] for r in rows) / size, 3),
        "peak_rss_mb": round(max(r["peak"] for r in rows) / 1e6, 1),
        "dtypes": rows[0]["dtypes"],
    }


if __name__ == "__main__":
    main()
