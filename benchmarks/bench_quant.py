"""Quantization benchmark: the CPU inference paths of the fine-tuned MiniLM, and bitsandbytes NF4 on a Llama.

Part 1, sentiment (``--part minilm``): the fine-tuned MiniLM-L6 of ``benchmarks.sentiment_model``
(Rotten Tomatoes, held-out 2,551 snippets), each path measured the same way:

* accuracy on the held-out split (batches of 32, dynamic padding, truncation at 64 tokens);
* max |logit - fp32 logit| over the check batch: the first 32 held-out texts, padded to 64 tokens;
* latency of one forward of that 32 x 64 batch with 2 torch threads, and throughput (samples/s):
  every path is timed in each of ``--rounds`` rounds (``--calls`` calls each, after 2 warm-up
  calls), the paths interleaved so that load from other processes spreads over all of them;
  the median of all calls is reported, with the fastest call;
* size: the weight files of the saved checkpoint (for torchao: its pickled state dict).

Paths: fp32 eager; bf16 autocast eager (``torch.autocast("cpu", torch.bfloat16)``, fp32 weights);
``int8_dynamic`` (7-bit and 8-bit activations; and with the FFN output projections, whose
inputs have the widest range, left in fp32); ``bnb_8bit`` (LLM.int8, threshold 6);
``bnb_nf4`` (compute dtype fp32, and bf16); torchao's ``Int8DynamicActivationInt8WeightConfig``
when ``torchao`` is importable (it is not a dependency: ``PYTHONPATH=<unpacked wheel>``).
Quantized paths are written with ``modelcore.quantization.quantize_checkpoint`` and reloaded from
disk, so what is measured is what a user loads.

Part 2, Llama (``--part llama``): a causal LM checkpoint (default the SmolLM2-135M asset, a GGUF
Q4_1 file dequantized to fp32 on load; any causal-LM checkpoint works) in fp32 and after each of
``--llama-methods`` (default ``bnb_nf4``; also ``bnb_8bit`` and ``int8_dynamic`` with 7-bit or 8-bit
activations, with or without the MLP output projections; each saved and reloaded):
perplexity on Wikipedia article extracts (the ``wikipedia-summaries`` asset, the first
``--llama-tokens`` tokens of the concatenated articles, windows of ``--window`` tokens), and the
bytes of the Linear weights (quantization state included; the tied output layer is the embedding
table and counted in neither). ``--peer`` loads the same fp32 weights (saved in the Hugging Face
layout) into transformers and quantizes them with its bitsandbytes integration, NF4 and 8-bit
(``--peer-methods``), on the CPU; the perplexity is the same function on the same tokens. A peer
load that transformers refuses is reported with its error instead of a figure.

    python -m benchmarks.bench_quant [--part minilm llama] [--rounds 5] [--calls 4] [--out results.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmarks.bench_quant")

THREADS = 2
BATCH, SEQ_LEN = 32, 64
MINILM_PATHS: dict[str, dict[str, Any]] = {
    "fp32 eager": {},
    "bf16 autocast eager": {"autocast": torch.bfloat16},
    "int8_dynamic": {"method": "int8_dynamic"},
    "int8_dynamic, 8-bit activations": {"method": "int8_dynamic", "options": {"reduce_range": False}},
    "int8_dynamic, 8-bit act., FFN output fp32": {
        "method": "int8_dynamic",
        "options": {
            "reduce_range": False,
            "modules_to_not_convert": ["classifier", r"bert.encoder.layer.\d+.output.dense"],
        },
    },
    "bnb_8bit": {"method": "bnb_8bit"},
    "bnb_nf4": {"method": "bnb_nf4"},
    "bnb_nf4, bf16 compute": {"method": "bnb_nf4", "options": {"bnb_4bit_compute_dtype": "bfloat16"}},
    "torchao int8 dynamic": {"torchao": True},
}


def _minilm_models(checkpoint: Path, workdir: Path, names: list[str]) -> dict[str, tuple[Any, int, torch.dtype | None]]:
    """Each path's model (reloaded from its saved checkpoint), size in bytes and autocast dtype."""
    from modelcore import AutoModelForSequenceClassification
    from modelcore.quantization import quantize_checkpoint
    from modelcore.reports import directory_size

    models = {}
    for name in names:
        spec = MINILM_PATHS[name]
        if spec.get("torchao"):
            model = _torchao_model(checkpoint, workdir)
            if model is not None:
                models[name] = model
            continue
        if "method" in spec:
            target = workdir / "".join(c if c.isalnum() else "_" for c in name)
            quantize_checkpoint(checkpoint, target, spec["method"], options=spec.get("options"), report=False)
        else:
            target = checkpoint
        model = AutoModelForSequenceClassification.from_pretrained(target)
        models[name] = (model, directory_size(target), spec.get("autocast"))
    return models


def _torchao_model(checkpoint: Path, workdir: Path) -> tuple[Any, int, None] | None:
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        logger.info("torchao is not importable: its row is left out")
        return None
    from modelcore import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    head = model.classifier
    quantize_(
        model,
        Int8DynamicActivationInt8WeightConfig(),
        filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "classifier",
    )
    assert model.classifier is head
    path = workdir / "torchao.pt"
    torch.save(model.state_dict(), path)
    return model, path.stat().st_size, None


def _timed_rounds(
    paths: dict[str, Callable[[], Any]], rounds: int, calls: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Milliseconds of every timed call of every path, the paths interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in paths.items():
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def bench_minilm(
    rounds: int,
    calls: int,
    limit: int | None,
    checkpoint: Path | None = None,
    paths: list[str] | None = None,
    with_accuracy: bool = True,
) -> dict[str, Any]:
    from benchmarks.sentiment_model import fine_tuned_minilm, heldout_split
    from modelcore import AutoTokenizer
    from modelcore.quantization import evaluation

    checkpoint = checkpoint or fine_tuned_minilm()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts, labels = heldout_split()
    data = evaluation.EvalData(texts, labels).limited(limit)
    batch = evaluation.check_batch(tokenizer, data.texts, BATCH, SEQ_LEN, vocab_size=0)
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        names = ["fp32 eager", *[n for n in (paths or MINILM_PATHS) if n != "fp32 eager"]]
        models = _minilm_models(checkpoint, Path(tmp), names)
        reference = evaluation.logits_of(models["fp32 eager"][0], batch)
        rows: dict[str, dict[str, Any]] = {}
        for name, (model, size, autocast) in models.items():
            logger.info("evaluating %s", name)
            correct = evaluation.accuracy(model, tokenizer, data, BATCH, SEQ_LEN, autocast) if with_accuracy else None
            rows[name] = {
                "accuracy": correct,
                "max_abs_logit_diff": (evaluation.logits_of(model, batch, autocast) - reference).abs().max().item(),
                "size_mb": size / 1e6,
                # torchao's tensor subclasses report their logical (fp32) size: left out
                "linear_weight_mb": None if name.startswith("torchao") else evaluation.linear_weight_bytes(model) / 1e6,
            }

        def forward(model: Any, autocast: torch.dtype | None) -> Callable[[], Any]:
            def call() -> Any:
                with evaluation.running(autocast):
                    return model(**batch)

            return call

        torch.set_num_threads(THREADS)
        times = _timed_rounds({n: forward(m, a) for n, (m, _, a) in models.items()}, rounds, calls)
    fp32_ms = statistics.median(times["fp32 eager"])
    for name, samples in times.items():
        median = statistics.median(samples)
        rows[name] |= {
            "latency_ms": median,
            "latency_min_ms": min(samples),
            "throughput": BATCH / median * 1000.0,
            "speedup": fp32_ms / median,
        }
    return {
        "checkpoint": str(checkpoint),
        "heldout_examples": len(data.texts),
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "threads": THREADS,
        "timed_calls_per_path": rounds * calls,
        "paths": rows,
    }


PEER_CONFIGS: dict[str, dict[str, Any]] = {
    # NF4 on blocks of 64 with fp32 compute: what our bnb_nf4 does by default
    "bnb_nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.float32},
    "bnb_8bit": {"load_in_8bit": True},  # LLM.int8, outlier threshold 6 (bitsandbytes' default, as ours)
}
# Llama rows: name -> quantization method and options (the peer row of the same name, if any, is its equivalent)
LLAMA_METHODS: dict[str, dict[str, Any]] = {
    "bnb_nf4": {"method": "bnb_nf4"},
    "bnb_8bit": {"method": "bnb_8bit"},
    "int8_dynamic": {"method": "int8_dynamic"},
    "int8_dynamic, 8-bit activations": {"method": "int8_dynamic", "options": {"reduce_range": False}},
    "int8_dynamic, 8-bit act., down_proj fp32": {
        "method": "int8_dynamic",
        "options": {"reduce_range": False, "modules_to_not_convert": ["lm_head", "down_proj"]},
    },
}


def _peer(
    fp32_dir: str, tokenizer: Any, data: Any, window: int, batch_size: int, max_tokens: int, methods: list[str]
) -> dict:
    """transformers + bitsandbytes on the same fp32 weights: its fp32 perplexity, then each of ``methods``.

    Tells our quantization apart from the method itself: if transformers' loses as much, the loss is the method's.
    A load transformers refuses (on the CPU) is reported as its error, type and message.
    """
    import transformers

    from modelcore.quantization import evaluation

    peer: dict[str, Any] = {"transformers": transformers.__version__}
    model = transformers.AutoModelForCausalLM.from_pretrained(fp32_dir, dtype=torch.float32)
    peer["fp32_perplexity"] = evaluation.perplexity(model, tokenizer, data, window, batch_size, max_tokens)
    del model
    for method in methods:
        logger.info("perplexity with transformers + bitsandbytes %s (the peer)", method)
        config = transformers.BitsAndBytesConfig(**PEER_CONFIGS[method])
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                fp32_dir, dtype=torch.float32, quantization_config=config, device_map="cpu"
            )
            ppl = evaluation.perplexity(model, tokenizer, data, window, batch_size, max_tokens)
        except Exception as error:  # reported, not raised: the refusal is the finding
            logger.warning("transformers %s failed: %s: %s", method, type(error).__name__, error)
            peer[method] = {"error": f"{type(error).__name__}: {error}"}
            continue
        peer[method] = {
            "perplexity": ppl,
            "ratio": ppl / peer["fp32_perplexity"],
            "linear_weight_bytes": _peer_linear_bytes(model),
        }
        del model
    return peer


def _peer_linear_bytes(model: Any) -> int:
    """Bytes of the Linear weights of a transformers model (bitsandbytes layers included, state and all)."""
    import bitsandbytes as bnb

    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in embeddings:
            if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
                total += sum(t.numel() * t.element_size() for k, t in module.state_dict().items() if k != "bias")
            else:
                total += module.weight.numel() * module.weight.element_size()
    return total


def bench_llama(
    source: str,
    max_tokens: int,
    window: int,
    batch_size: int,
    peer: bool = False,
    methods: list[str] | None = None,
    peer_methods: list[str] | None = None,
) -> dict[str, Any]:
    from modelcore import AutoModelForCausalLM, AutoTokenizer
    from modelcore.quantization import evaluation, quantize
    from modelcore.reports import directory_size

    methods = list(methods or ["bnb_nf4"])
    tokenizer = AutoTokenizer.from_pretrained(source)
    data = evaluation.load_eval_data("wikipedia-summaries")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    torch.set_num_threads(THREADS)

    def measure(model: Any) -> dict[str, Any]:
        start = time.perf_counter()
        ppl = evaluation.perplexity(model, tokenizer, data, window, batch_size, max_tokens)
        return {
            "perplexity": ppl,
            "eval_seconds": time.perf_counter() - start,
            "linear_weight_bytes": evaluation.linear_weight_bytes(model),
            "parameter_bytes": sum(t.numel() * t.element_size() for t in model._state_dict_for_saving().values()),
        }

    logger.info("perplexity of %s in fp32", source)
    fp32 = measure(model)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quant-llama-") as tmp:
        model.save_pretrained(f"{tmp}/fp32")  # the Hugging Face layout, which transformers loads as is
        del model
        peer_result = None
        if peer:
            logger.info("perplexity with transformers + bitsandbytes (the peer)")
            peer_result = _peer(
                f"{tmp}/fp32", tokenizer, data, window, batch_size, max_tokens, list(peer_methods or PEER_CONFIGS)
            )
        for method in methods:
            spec, target = LLAMA_METHODS[method], f"{tmp}/{len(rows)}"
            fp32_model = AutoModelForCausalLM.from_pretrained(f"{tmp}/fp32", dtype=torch.float32)
            quantize(fp32_model, spec["method"], **spec.get("options", {})).save_pretrained(target)  # in place
            del fp32_model
            logger.info("perplexity after %s", method)
            quantized = AutoModelForCausalLM.from_pretrained(target)
            rows[method] = measure(quantized) | {"checkpoint_bytes": directory_size(target), **spec}
            rows[method]["perplexity_ratio"] = rows[method]["perplexity"] / fp32["perplexity"]
            rows[method]["linear_weight_ratio"] = rows[method]["linear_weight_bytes"] / fp32["linear_weight_bytes"]
            del quantized
    result: dict[str, Any] = {
        "source": source,
        "text": "wikipedia-summaries",
        "tokens": max_tokens,
        "window": window,
        "fp32": fp32,
        "methods": rows,
        "peer": peer_result,
    }
    if "bnb_nf4" in rows:  # the quantization issue's targets, for NF4
        nf4 = rows["bnb_nf4"]
        result["targets_met"] = {
            "perplexity within 10%": nf4["perplexity"] <= 1.10 * fp32["perplexity"],
            "linear weights <= 30% of fp32": nf4["linear_weight_bytes"] <= 0.30 * fp32["linear_weight_bytes"],
        }
    return result


def _llama_table(results: dict[str, Any]) -> str:
    """Ours and the peer, method by method: perplexity (change against the same library's fp32), Linear MB."""
    fp32, peer = results["fp32"], results.get("peer") or {}
    lines = [
        "| method | modelcore perplexity | change | Linear weights (MB) | transformers + bnb perplexity | change |",
        "|---|---|---|---|---|---|",
    ]
    peer_fp32 = peer.get("fp32_perplexity")
    lines.append(
        f"| fp32 | {fp32['perplexity']:.3f} | - | {fp32['linear_weight_bytes'] / 1e6:.1f} | "
        f"{'-' if peer_fp32 is None else f'{peer_fp32:.3f}'} | - |"
    )
    for method, row in results["methods"].items():
        theirs = peer.get(method)
        if theirs is None:
            peer_cells = "not measured | -"
        elif "error" in theirs:
            peer_cells = f"refused: {theirs['error'][:120]} | -"
        else:
            peer_cells = f"{theirs['perplexity']:.3f} | {100 * (theirs['ratio'] - 1):+.1f}%"
        lines.append(
            f"| {method} | {row['perplexity']:.3f} | {100 * (row['perplexity_ratio'] - 1):+.1f}% | "
            f"{row['linear_weight_bytes'] / 1e6:.1f} | {peer_cells} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(results: dict[str, Any]) -> str:
    lines = [
        "| path | held-out accuracy | max abs logit diff | latency 32x64 (ms) | samples/s | speed | size (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["paths"].items():
        lines.append(
            f"| {name} | {_fmt(r['accuracy'])} | {r['max_abs_logit_diff']:.4f} | {r['latency_ms']:.1f} "
            f"(min {r['latency_min_ms']:.1f}) | {r['throughput']:.0f} | {r['speedup']:.2f}x | {r['size_mb']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=("minilm", "llama"), default=["minilm", "llama"])
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds over all paths")
    parser.add_argument("--calls", type=int, default=4, help="timed calls per path per round")
    parser.add_argument("--limit", type=int, help="held-out examples for accuracy (default: all 2,551)")
    parser.add_argument("--checkpoint", type=Path, help="sentiment classifier (default: the fine-tuned MiniLM)")
    parser.add_argument("--paths", nargs="+", choices=list(MINILM_PATHS), help="MiniLM paths (default: all)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the held-out accuracy (timing only)")
    parser.add_argument("--llama", default="smollm2-135m-gguf", help="causal-LM checkpoint (default: SmolLM2-135M)")
    parser.add_argument("--llama-tokens", type=int, default=16384, help="tokens of Wikipedia text for perplexity")
    parser.add_argument("--window", type=int, default=512, help="tokens per perplexity window")
    parser.add_argument("--llama-batch", type=int, default=4, help="windows per forward")
    parser.add_argument(
        "--llama-methods", nargs="+", choices=list(LLAMA_METHODS), default=["bnb_nf4"], help="Llama rows to measure"
    )
    parser.add_argument("--peer", action="store_true", help="also transformers + bitsandbytes (Llama part)")
    parser.add_argument(
        "--peer-methods", nargs="+", choices=list(PEER_CONFIGS), default=list(PEER_CONFIGS), help="with --peer"
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "threads": THREADS,
    }
    if "minilm" in args.part:
        results["minilm"] = bench_minilm(
            args.rounds, args.calls, args.limit, args.checkpoint, args.paths, not args.no_accuracy
        )
        print(_table(results["minilm"]))
    if "llama" in args.part:
        results["llama"] = bench_llama(
            args.llama,
            args.llama_tokens,
            args.window,
            args.llama_batch,
            args.peer,
            args.llama_methods,
            args.peer_methods,
        )
        print(_llama_table(results["llama"]))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
