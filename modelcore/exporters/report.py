"""``report.json`` of an export: the eager model against the onnxruntime model, measured the same way.

The measurements are the quantization reports' (``modelcore.quantization.evaluation``): the task
metric on validation data (accuracy for classifiers, perplexity for causal LMs), the largest logit
difference and the latency on a ``batch_size`` x ``seq_len`` check batch, and the sizes of the
weights. onnxruntime models answer like eager ones (``model(**batch).logits``), so the same code
measures both; the thread count applies to torch and to the onnxruntime session alike.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from modelcore.reports import ConversionReport, Measurement

logger = logging.getLogger(__name__)


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's tensors, each shared (tied) tensor once: what its safetensors file holds."""
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def onnx_size(directory: str | os.PathLike, file_name: str = "model.onnx") -> int:
    """Bytes of one exported graph and its external weights (not of other exports below ``directory``)."""
    directory = Path(directory)
    return sum(p.stat().st_size for p in (directory / file_name, directory / f"{file_name}.data") if p.is_file())


def load_tokenizer(location: str | os.PathLike) -> Any:
    """The tokenizer of a checkpoint or export directory, or None when it has none."""
    from modelcore.auto import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as error:
        logger.info("%s: no tokenizer (%s)", location, error)
        return None


def build_report(
    method: str,
    *,
    source: str,
    output: Path,
    before: Any,
    after: Any,
    before_size: int,
    after_size: int,
    tokenizer: Any,
    eval_data: Any,
    eval_limit: int | None,
    batch_size: int,
    seq_len: int,
    threads: int | None,
    repeats: int,
    before_metric: float | None = None,
    extra: dict[str, Any] | None = None,
) -> ConversionReport:
    """Measure ``before`` and ``after`` and write ``output/report.json``.

    Args:
        method: ``onnx``, ``onnx_optimized`` or ``onnx_int8``.
        before, after: models called as ``model(**batch).logits`` (eager or onnxruntime); ``after`` must have
            been loaded with ``threads`` onnxruntime threads.
        eval_data: an ``EvalData``, a file or asset name (``evaluation.load_eval_data``), or None.
        before_metric: ``before``'s task metric on the same data and ``seq_len``, when an earlier report
            measured it (an fp32 export's report, for its int8 quantization): not evaluated again.
        extra: more settings to record.
    """
    from modelcore.quantization import evaluation

    data = eval_data
    eval_source = None
    if data is not None and not isinstance(data, evaluation.EvalData):
        eval_source = str(data)
        data = evaluation.load_eval_data(data)
    if data is not None:
        data = data.limited(eval_limit)
    if data is not None and tokenizer is None:
        logger.warning("no tokenizer to read the validation data with: the task metric is left out")
    use_data = data is not None and tokenizer is not None
    threads = threads or torch.get_num_threads()
    batch = evaluation.check_batch(
        tokenizer, data.texts if use_data else None, batch_size, seq_len, before.config.vocab_size
    )
    batch = evaluation.accepted_inputs(batch, before)

    def measure(model: Any, size: int, known_metric: float | None = None) -> Measurement:
        metric = None
        if use_data and known_metric is not None:
            metric = known_metric
        elif use_data:
            with evaluation.running(threads=threads):
                metric = evaluation.task_metric(model, tokenizer, data, seq_len)
        latency = evaluation.latency_ms(model, batch, repeats=repeats, threads=threads)
        return Measurement(size_bytes=size, metric=metric, latency_ms=latency, throughput=batch_size / latency * 1000.0)

    result = ConversionReport(
        kind="export",
        method=method,
        source=source,
        output=str(output),
        before=measure(before, before_size, before_metric),
        after=measure(after, after_size),
        max_abs_logit_diff=evaluation.max_abs_diff(before, after, batch),
        metric_name=evaluation.task_of(before) if use_data else None,
        settings={
            "batch_size": batch_size,
            "seq_len": seq_len,
            "threads": threads,
            "repeats": repeats,
            "eval_data": eval_source,
            "eval_examples": len(data.texts) if use_data else 0,
            "torch": torch.__version__,
            "onnxruntime": _onnxruntime_version(),
            **(extra or {}),
        },
    )
    path = result.write(output)
    logger.info("wrote %s", path)
    return result


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
