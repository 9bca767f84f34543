"""Export and quantization tasks: each conversion is checked against the eager model it came from."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.serialization.atomic import atomic_write_text
from modelcore.task_registry import get_task
from tasks.outputs import directory_bytes, task_output
from tasks.results import ExportCheck

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5  # max abs logit difference allowed for a lossless (safetensors) export


@task(name="export_safetensors", cache_policy=NO_CACHE)
def export_safetensors(
    checkpoint: str,
    output_dir: str,
    max_shard_size: str,
    check_texts: list[str],
    task_name: str = "text-classification",
) -> ExportCheck:
    """Re-save ``checkpoint`` (and its tokenizer or image processor) as sharded safetensors with an index, reload it
    and compare logits.

    Args:
        check_texts: the inputs the logits are compared on: texts, or an image task's images as base64 files.
        task_name: the registered task: its pipeline loads the checkpoint (a causal LM's logits are compared on
            the first ``LM_CHECK_TOKENS`` tokens of each check text).

    Returns:
        An ``ExportCheck`` with the path, the shards and the largest logit difference.

    Raises:
        RuntimeError: when the reloaded export's logits differ from the checkpoint's.
    """
    from modelcore.pipelines import pipeline
    from modelcore.task_registry import get_task

    spec = get_task(task_name)
    source = pipeline(spec.pipeline_task, model=checkpoint)
    with task_output(output_dir, needed=directory_bytes(checkpoint)) as out:
        source.model.save_pretrained(out, max_shard_size=max_shard_size)
        source.tokenizer.save_pretrained(out)
    exported = pipeline(spec.pipeline_task, model=out)
    if spec.label_column is not None:
        inputs = [base64.b64decode(x) for x in check_texts] if spec.modality == "image" else check_texts
        diff = float(abs(source.predict_logits(inputs) - exported.predict_logits(inputs)).max())
    else:
        diff = max(_lm_logit_diff(source, exported, text) for text in check_texts)
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"{out}: safetensors export changed the logits by {diff:.3g}")
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    check = ExportCheck(str(out), True, diff, shards=tuple(shards))
    atomic_write_text(out / "export_check.json", json.dumps(check.figures(), indent=2) + "\n")
    logger.info("safetensors export: %d shard(s), max abs logit diff %.3g", len(shards), diff)
    return check


LM_CHECK_TOKENS = 32


def _lm_logit_diff(source: Any, exported: Any, text: str) -> float:
    """Max abs difference of the next-token logits of two causal LMs over the first tokens of ``text``."""
    import torch

    ids = source.tokenizer(text, return_tensors="pt")["input_ids"][:, :LM_CHECK_TOKENS]
    with torch.inference_mode():
        return float((source.model(input_ids=ids).logits - exported.model(input_ids=ids).logits).abs().max())


INT8_MAX_ACCURACY_DROP = 0.01  # an int8 export may lose at most 1 point of held-out accuracy
MAX_PERPLEXITY_INCREASE = 0.05  # a quantized language model may raise held-out perplexity by at most 5%
GREEDY_CHECK_TOKENS = 16


def kept(check: ExportCheck, metric: str, what: str) -> bool:
    """Whether an export's held-out metric stays within its budget (accuracy: 1 point; perplexity: +5%); logs why not."""
    before, after = check.metric_before, check.metric_after
    if after is None or before is None:
        logger.warning("%s: no held-out %s to check it by: not kept", what, metric)
        return False
    if metric == "perplexity":
        increase = after / before - 1
        if increase > MAX_PERPLEXITY_INCREASE:
            logger.warning("%s raises perplexity %.3f -> %.3f (+%.1f%% > %.0f%%): not kept", what, before, after,
                           100 * increase, 100 * MAX_PERPLEXITY_INCREASE)  # fmt: skip
            return False
        return True
    drop = before - after
    if drop > INT8_MAX_ACCURACY_DROP:
        logger.warning("%s loses %.4f %s (> %.2f): not kept", what, drop, metric, INT8_MAX_ACCURACY_DROP)
        return False
    return True


def greedy_tokens_match(checkpoint: str, onnx_dir: Path, prompts: list[str]) -> bool:
    """Whether the ONNX decoder (with its KV cache) continues each prompt with the eager model's greedy tokens."""
    import torch

    from modelcore import AutoModelForCausalLM, AutoTokenizer
    from modelcore.exporters import OrtModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    eager = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="float32")
    ort = OrtModelForCausalLM.from_pretrained(onnx_dir)
    options = dict(max_new_tokens=GREEDY_CHECK_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id or 0)
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            if not torch.equal(eager.generate(ids, **options), ort.generate(ids, **options)):
                logger.warning("%s: greedy tokens differ from the eager model's on %r: not kept", onnx_dir, prompt)
                return False
    return True


@task(name="export_onnx", cache_policy=NO_CACHE)
def export_onnx(
    checkpoint: str,
    output_dir: str,
    int8: bool,
    eval_data: str,
    max_length: int,
    threads: int = 2,
    task_name: str = "text-classification",
    check_prompts: list[str] | None = None,
) -> dict[str, ExportCheck]:
    """ONNX export (fp32, attention fused for onnxruntime) and optionally its int8 quantization.

    Each comes with the exporter's ``report.json`` (size, max abs logit difference, held-out
    accuracy or perplexity, latency and throughput before and after). The fp32 export must match the
    eager logits (the exporter refuses otherwise); the int8 one is kept only within its budget on
    ``eval_data`` (:func:`kept`). A causal LM's decoder (with its KV cache) must also continue
    ``check_prompts`` with the eager model's greedy tokens.

    Args:
        checkpoint: the fine-tuned checkpoint.
        output_dir: gets ``onnx/`` and ``onnx_int8/``.
        int8: also quantize.
        eval_data: held-out rows as JSON lines with ``text`` (and ``label`` for a classifier).
        max_length: the sequence length of the timing batch (and of the perplexity windows).
        task_name: the registered task of the checkpoint.
        check_prompts: prompts for a causal LM's greedy check.

    Returns:
        ``{"onnx": ExportCheck, "onnx_int8": ExportCheck}``: each export with ``passed`` and its report's figures.
    """
    from modelcore.exporters import export_onnx as export_to_onnx
    from modelcore.exporters import quantize_onnx

    out = Path(output_dir)
    common = dict(eval_data=eval_data, batch_size=32, seq_len=max_length, threads=threads, repeats=5)
    spec = get_task(task_name)
    metric = spec.decides.name
    with task_output(out / "onnx", needed=directory_bytes(checkpoint)):
        fp32 = export_to_onnx(checkpoint, out / "onnx", task=spec.name, **common)
    passed = greedy_tokens_match(checkpoint, fp32, check_prompts or []) if spec.onnx_with_past else True
    results = {"onnx": _check(fp32, passed)}
    if int8:
        # the same eager model, data and length as the fp32 report's "before": its metric is not evaluated twice
        before = results["onnx"].metric_before
        with task_output(out / "onnx_int8", needed=directory_bytes(checkpoint) // 3):
            quantized = quantize_onnx(fp32, out / "onnx_int8", reference=checkpoint, before_metric=before, **common)
        check = _check(quantized)
        results["onnx_int8"] = dataclasses.replace(check, passed=kept(check, metric, "int8 ONNX export"))
    return results


def _check(directory: Path, passed: bool = False) -> ExportCheck:
    """The figures of an export's ``report.json``."""
    report = json.loads((Path(directory) / "report.json").read_text(encoding="utf-8"))
    return ExportCheck(
        path=str(directory),
        passed=passed,
        max_abs_logit_diff=report.get("max_abs_logit_diff"),
        metric_before=report["before"].get("metric"),
        metric_after=report["after"].get("metric"),
        size_ratio=report.get("size_ratio"),
        speedup=report.get("speedup"),
    )


@task(name="quantize", cache_policy=NO_CACHE)
def quantize(
    checkpoint: str,
    output_dir: str,
    methods: list[str],
    eval_data: str,
    max_length: int,
    task_name: str = "text-classification",
) -> dict[str, ExportCheck]:
    """Quantize ``checkpoint`` with each method into ``output_dir/<method>``, each with its ``report.json``.

    A quantized checkpoint is kept only within its budget on ``eval_data`` (:func:`kept`: at most 1 point of
    accuracy; at most +5% perplexity for a causal LM), so each method is reported by its metric change.

    Returns:
        ``{method: ExportCheck}``: each with ``passed`` and its report's figures.
    """
    from modelcore.quantization import quantize_checkpoint

    results = {}
    for method in methods:
        out = Path(output_dir) / method
        with task_output(out, needed=directory_bytes(checkpoint) // 2):
            quantize_checkpoint(
                checkpoint, out, method, eval_data=eval_data, batch_size=32, seq_len=max_length, threads=2, repeats=5
            )
        check = _check(out)
        results[method] = dataclasses.replace(check, passed=kept(check, get_task(task_name).decides.name, method))
    return results
