"""ONNX export benchmark: the fine-tuned MiniLM sentiment model in eager PyTorch and in onnxruntime.

Part 1, sentiment (``--part minilm``): the fine-tuned MiniLM-L6 of ``benchmarks.sentiment_model``
(Rotten Tomatoes, held-out 2,551 snippets), each path measured the same way as in
``bench_quant``:

* accuracy on the held-out split (batches of 32, dynamic padding, truncation at 64 tokens);
* max |logit - eager fp32 logit| over every held-out example;
* latency of one forward of a 32 x 64 batch (the first 32 held-out texts padded to 64 tokens)
  with 2 threads (torch threads for eager, ``intra_op_num_threads`` for onnxruntime), and
  throughput (samples/s): the paths are interleaved over ``--rounds`` rounds of ``--calls`` calls
  (after 2 warm-up calls), so load from other processes spreads over all of them; the median of
  all calls is reported, with the fastest call;
* size: the weight files (``model.safetensors``; ``model.onnx`` + ``model.onnx.data``).

Paths: eager fp32; eager bf16 autocast (fp32 weights); ONNX fp32 as ``torch.onnx.export(dynamo=True)``
writes it (``export_onnx(optimize=False)``); ONNX fp32 optimized (the fusions of
``modelcore.exporters.onnx_optimize``: packed-QKV ``Attention``, SkipLayerNorm, BiasGelu); ONNX
int8 (``quant_pre_process`` + ``quantize_dynamic``) of the plain graph (the issue author's route)
and of the optimized one (``QAttention``).

Part 2, decoder (``--part llama``): a causal LM (default the SmolLM2-135M asset, GGUF Q4_1
dequantized to fp32; ``--llama tiny`` for a random tiny Llama) exported with KV-cache inputs;
greedy ``generate`` from eager and from onnxruntime on a few prompts must give the same tokens;
the time per generated token is reported for both.

    python -m benchmarks.bench_export [--part minilm llama] [--rounds 5] [--calls 4] [--out results.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmarks.bench_export")

THREADS = 2
BATCH, SEQ_LEN = 32, 64
PROMPTS = [
    "The capital of France is",
    "Here is a short poem about the sea:",
    "def fibonacci(n):",
]


def _cpu_busy_s() -> float:
    """Machine-wide busy CPU seconds (/proc/stat: all but idle, iowait and steal)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, _steal = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_rounds(
    paths: dict[str, Callable[[], Any]], rounds: int, calls: int, warmup: int = 2
) -> dict[str, dict[str, list[float]]]:
    """Milliseconds of every timed call of every path, the paths interleaved round by round.

    Each (round, path) block also records how much CPU other processes took meanwhile; a block where
    they took more than 5% of ours is "disturbed" (this machine is shared) and kept apart.
    """
    times: dict[str, dict[str, list[float]]] = {name: {"clean": [], "disturbed": []} for name in paths}
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in paths.items():
            busy, own = _cpu_busy_s(), _own_cpu_s()
            block = []
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                block.append((time.perf_counter() - start) * 1000.0)
            own = _own_cpu_s() - own
            others = _cpu_busy_s() - busy - own
            times[name]["disturbed" if others > 0.05 * own else "clean"].extend(block)
    return times


def _logits(model: Any, tokenizer: Any, texts: list[str], autocast: torch.dtype | None) -> torch.Tensor:
    """Logits of every text (batches of 32, dynamic padding, truncation at 64)."""
    from modelcore.quantization import evaluation

    out = []
    with evaluation.running(autocast, THREADS):
        for i in range(0, len(texts), BATCH):
            enc = tokenizer(
                texts[i : i + BATCH], truncation=True, max_length=SEQ_LEN, padding=True, return_tensors="pt"
            )
            out.append(model(**enc).logits.float())
    return torch.cat(out)


def bench_minilm(rounds: int, calls: int, limit: int | None, workdir: Path) -> dict[str, Any]:
    from benchmarks.sentiment_model import fine_tuned_minilm, heldout_split
    from modelcore import AutoModelForSequenceClassification, AutoTokenizer
    from modelcore.exporters import OrtModelForSequenceClassification, export_onnx, quantize_onnx
    from modelcore.exporters.report import onnx_size
    from modelcore.quantization import evaluation

    checkpoint = fine_tuned_minilm()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts, labels = heldout_split()
    if limit:
        texts, labels = texts[:limit], labels[:limit]
    labels_t = torch.tensor(labels)
    batch = evaluation.check_batch(tokenizer, texts, BATCH, SEQ_LEN, vocab_size=0)

    eager = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    started = time.perf_counter()
    plain = export_onnx(checkpoint, workdir / "onnx", optimize=False, report=False)
    export_plain_s = time.perf_counter() - started
    started = time.perf_counter()
    fused = export_onnx(checkpoint, workdir / "onnx-optimized", optimize=True, report=False)
    export_fused_s = time.perf_counter() - started
    plain_int8 = quantize_onnx(plain, workdir / "onnx-int8", report=False)
    fused_int8 = quantize_onnx(fused, workdir / "onnx-optimized-int8", report=False)

    def ort(path: Path) -> Any:
        return OrtModelForSequenceClassification.from_pretrained(path, threads=THREADS)

    safetensors_size = (checkpoint / "model.safetensors").stat().st_size
    paths: dict[str, tuple[Any, int, torch.dtype | None]] = {
        "eager fp32": (eager, safetensors_size, None),
        "eager bf16 autocast": (eager, safetensors_size, torch.bfloat16),
        "ONNX fp32": (ort(plain), onnx_size(plain), None),
        "ONNX fp32 optimized": (ort(fused), onnx_size(fused), None),
        "ONNX int8 (plain graph)": (ort(plain_int8), onnx_size(plain_int8), None),
        "ONNX int8 (optimized graph)": (ort(fused_int8), onnx_size(fused_int8), None),
    }
    rows: dict[str, dict[str, Any]] = {}
    reference = None
    for name, (model, size, autocast) in paths.items():
        logger.info("evaluating %s", name)
        logits = _logits(model, tokenizer, texts, autocast)
        reference = logits if reference is None else reference
        rows[name] = {
            "accuracy": float((logits.argmax(-1) == labels_t).float().mean()),
            "max_abs_logit_diff": float((logits - reference).abs().max()),
            "size_mb": size / 1e6,
        }

    def forward(model: Any, autocast: torch.dtype | None) -> Callable[[], Any]:
        def call() -> Any:
            with evaluation.running(autocast):
                return model(**batch)

        return call

    torch.set_num_threads(THREADS)
    times = _timed_rounds({n: forward(m, a) for n, (m, _, a) in paths.items()}, rounds, calls)

    def usable(name: str) -> list[float]:  # undisturbed calls when there are enough of them
        clean = times[name]["clean"]
        return clean if len(clean) >= calls else clean + times[name]["disturbed"]

    fp32_ms = statistics.median(usable("eager fp32"))
    for name in paths:
        samples = usable(name)
        median = statistics.median(samples)
        rows[name] |= {
            "latency_ms": median,
            "latency_min_ms": min(samples),
            "throughput": BATCH / median * 1000.0,
            "speedup": fp32_ms / median,
            "calls_clean": len(times[name]["clean"]),
            "calls_disturbed": len(times[name]["disturbed"]),
        }
    return {
        "checkpoint": str(checkpoint),
        "heldout_examples": len(texts),
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "threads": THREADS,
        "timed_calls_per_path": rounds * calls,
        "export_s": {"plain": round(export_plain_s, 1), "optimized": round(export_fused_s, 1)},
        "paths": rows,
    }


def _tiny_llama() -> Any:
    from modelcore.models.llama import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def bench_llama(source: str, max_new_tokens: int, workdir: Path) -> dict[str, Any]:
    from modelcore import AutoModelForCausalLM, AutoTokenizer
    from modelcore.exporters import OrtModelForCausalLM, export_onnx

    torch.set_num_threads(THREADS)
    if source == "tiny":
        model, tokenizer = _tiny_llama(), None
        batches = [torch.randint(3, 256, (1, 6 + i), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
        batches = [tokenizer([p], return_tensors="pt")["input_ids"] for p in PROMPTS]
    started = time.perf_counter()
    out = export_onnx(model, workdir / "llama-onnx", with_past=True, report=False)
    export_s = time.perf_counter() - started
    ort_model = OrtModelForCausalLM.from_pretrained(out, threads=THREADS)
    rows, same, timings = [], True, {"eager": [], "onnx": []}
    for ids in batches:
        results = {}
        for name, m in (("eager", model), ("onnx", ort_model)):
            m.generate(ids, max_new_tokens=2, eos_token_id=None)  # warm-up
            start = time.perf_counter()
            results[name] = m.generate(ids, max_new_tokens=max_new_tokens, eos_token_id=None)
            timings[name].append((time.perf_counter() - start) * 1000.0 / max_new_tokens)
        equal = torch.equal(results["eager"], results["onnx"])
        same &= equal
        new = results["eager"][0, ids.shape[1] :].tolist()
        rows.append(
            {"prompt_tokens": ids.shape[1], "same_tokens": equal, "text": tokenizer.decode(new) if tokenizer else new}
        )
    return {
        "source": source,
        "parameters": model.num_parameters(),
        "max_new_tokens": max_new_tokens,
        "export_s": round(export_s, 1),
        "onnx_size_mb": sum(p.stat().st_size for p in out.glob("model.onnx*")) / 1e6,
        "greedy_tokens_equal": same,
        "ms_per_token": {k: statistics.median(v) for k, v in timings.items()},
        "generations": rows,
    }


def _markdown(minilm: dict[str, Any]) -> str:
    lines = [
        "| path | accuracy | max abs logit diff | latency (ms) | fastest (ms) | samples/s | vs eager fp32 | size (MB) |"
        " calls (clean/all) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in minilm["paths"].items():
        calls = r["calls_clean"] + r["calls_disturbed"]
        lines.append(
            f"| {name} | {r['accuracy']:.4f} | {r['max_abs_logit_diff']:.2g} | {r['latency_ms']:.1f} | "
            f"{r['latency_min_ms']:.1f} | {r['throughput']:.0f} | {r['speedup']:.2f}x | {r['size_mb']:.1f} | "
            f"{r['calls_clean']}/{calls} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=("minilm", "llama"), default=["minilm", "llama"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--limit", type=int, help="use the first N held-out examples (a quick run)")
    parser.add_argument("--llama", default="smollm2-135m-gguf", help="causal LM checkpoint, or 'tiny'")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--workdir", type=Path, help="keep the exports here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import onnxruntime

    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if "minilm" in args.part:
            results["minilm"] = bench_minilm(args.rounds, args.calls, args.limit, workdir)
            print(_markdown(results["minilm"]))
        if "llama" in args.part:
            try:
                results["llama"] = bench_llama(args.llama, args.max_new_tokens, workdir)
            except Exception as error:  # the GGUF loader is optional: fall back to a tiny random Llama
                if args.llama == "tiny":
                    raise
                logger.warning("%s could not be used (%s); checking a tiny random Llama instead", args.llama, error)
                results["llama"] = bench_llama("tiny", args.max_new_tokens, workdir) | {"fallback_reason": str(error)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
