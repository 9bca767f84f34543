"""Export and quantization tasks: each conversion is checked against the eager model it came from."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.serialization.atomic import atomic_write_text
from tasks.outputs import directory_bytes, task_output

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5  # max abs logit difference allowed for a lossless (safetensors) export


@task(name="export_safetensors", cache_policy=NO_CACHE)
def export_safetensors(
    checkpoint: str,
    output_dir: str,
    max_shard_size: str,
    check_texts: list[str],
    task_name: str = "text-classification",
) -> dict[str, Any]:
    """Re-save ``checkpoint`` as sharded safetensors with an index, reload it and compare logits.

    Args:
        task_name: the registered task: its pipeline loads the checkpoint (a causal LM's logits are compared on
            the first ``LM_CHECK_TOKENS`` tokens of each check text).

    Returns:
        ``{"path", "shards", "max_abs_logit_diff"}``.

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
        diff = float(abs(source.predict_logits(check_texts) - exported.predict_logits(check_texts)).max())
    else:
        diff = max(_lm_logit_diff(source, exported, text) for text in check_texts)
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"{out}: safetensors export changed the logits by {diff:.3g}")
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    report = {"path": str(out), "shards": shards, "max_abs_logit_diff": diff}
    atomic_write_text(out / "export_check.json", json.dumps(report, indent=2) + "\n")
    logger.info("safetensors export: %d shard(s), max abs logit diff %.3g", len(shards), diff)
    return report


LM_CHECK_TOKENS = 32


def _lm_logit_diff(source: Any, exported: Any, text: str) -> float:
    """Max abs difference of the next-token logits of two causal LMs over the first tokens of ``text``."""
    import torch

    ids = source.tokenizer(text, return_tensors="pt")["input_ids"][:, :LM_CHECK_TOKENS]
    with torch.inference_mode():
        return float((source.model(input_ids=ids).logits - exported.model(input_ids=ids).logits).abs().max())


INT8_MAX_ACCURACY_DROP = 0.01  # an int8 export may lose at most 1 point of held-out accuracy


@task(name="export_onnx", cache_policy=NO_CACHE)
def export_onnx(
    checkpoint: str, output_dir: str, int8: bool, eval_data: str, max_length: int, threads: int = 2
) -> dict[str, Any]:
    """ONNX export (fp32, attention fused for onnxruntime) and optionally its int8 quantization.

    Each comes with the exporter's ``report.json`` (size, max abs logit difference, held-out
    accuracy, latency and throughput before and after). The fp32 export must match the eager
    logits (the exporter refuses otherwise); the int8 one is kept only when it loses at most
    ``INT8_MAX_ACCURACY_DROP`` of accuracy on ``eval_data``.

    Args:
        checkpoint: the fine-tuned checkpoint.
        output_dir: gets ``onnx/`` and ``onnx_int8/``.
        int8: also quantize.
        eval_data: held-out rows as JSON lines with ``text`` and ``label`` (the evaluation's predictions file).
        max_length: the sequence length of the timing batch.

    Returns:
        ``{"onnx": {...}, "onnx_int8": {...}}``, each with ``path``, ``passed`` and the report's figures.
    """
    from modelcore.exporters import export_onnx as export_to_onnx
    from modelcore.exporters import quantize_onnx

    out = Path(output_dir)
    common = dict(eval_data=eval_data, batch_size=32, seq_len=max_length, threads=threads, repeats=5)
    with task_output(out / "onnx", needed=directory_bytes(checkpoint)):
        fp32 = export_to_onnx(checkpoint, out / "onnx", task="text-classification", **common)
    results = {"onnx": _summarize(fp32, passed=True)}
    if int8:
        # the same eager model, data and length as the fp32 report's "before": its accuracy is not evaluated twice
        before = results["onnx"]["metric_before"]
        with task_output(out / "onnx_int8", needed=directory_bytes(checkpoint) // 3):
            quantized = quantize_onnx(fp32, out / "onnx_int8", reference=checkpoint, before_metric=before, **common)
        summary = _summarize(quantized)
        drop = (summary["metric_before"] or 0.0) - (summary["metric_after"] or 0.0)
        summary["passed"] = summary["metric_after"] is not None and drop <= INT8_MAX_ACCURACY_DROP
        if not summary["passed"]:
            logger.warning("int8 ONNX export loses %.4f accuracy (> %.2f): not kept", drop, INT8_MAX_ACCURACY_DROP)
        results["onnx_int8"] = summary
    return results


def _summarize(directory: Path, passed: bool | None = None) -> dict[str, Any]:
    report = json.loads((Path(directory) / "report.json").read_text(encoding="utf-8"))
    return {
        "path": str(directory),
        "passed": passed,
        "max_abs_logit_diff": report.get("max_abs_logit_diff"),
        "metric_before": report["before"].get("metric"),
        "metric_after": report["after"].get("metric"),
        "size_ratio": report.get("size_ratio"),
        "speedup": report.get("speedup"),
    }


@task(name="quantize", cache_policy=NO_CACHE)
def quantize(checkpoint: str, output_dir: str, methods: list[str], eval_data: str, max_length: int) -> dict[str, Any]:
    """Quantize ``checkpoint`` with each method into ``output_dir/<method>``, each with its ``report.json``.

    A quantized checkpoint is kept only when it loses at most ``INT8_MAX_ACCURACY_DROP`` of
    held-out accuracy on ``eval_data``.

    Returns:
        ``{method: {"path", "passed", "max_abs_logit_diff", "metric_before", "metric_after", ...}}``.
    """
    from modelcore.quantization import quantize_checkpoint

    results = {}
    for method in methods:
        out = Path(output_dir) / method
        with task_output(out, needed=directory_bytes(checkpoint) // 2):
            quantize_checkpoint(
                checkpoint, out, method, eval_data=eval_data, batch_size=32, seq_len=max_length, threads=2, repeats=5
            )
        summary = _summarize(out)
        drop = (summary["metric_before"] or 0.0) - (summary["metric_after"] or 0.0)
        summary["passed"] = summary["metric_after"] is not None and drop <= INT8_MAX_ACCURACY_DROP
        if not summary["passed"]:
            logger.warning("%s loses %.4f accuracy (> %.2f): not kept", method, drop, INT8_MAX_ACCURACY_DROP)
        results[method] = summary
    return results
