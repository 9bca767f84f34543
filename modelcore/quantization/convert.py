"""Quantize a checkpoint directory into another, and write its ``report.json``.

The report compares the original with the quantized checkpoint *as reloaded from disk*, so it
also checks that the saved checkpoint loads back: sizes of the weight files, the task metric on
validation data (accuracy or perplexity, when data is given), the largest logit difference on a
check batch, latency and throughput at ``batch_size`` x ``seq_len``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from modelcore.auto.registry import FAMILIES, resolve
from modelcore.configuration_utils import CONFIG_NAME, ConfigError, read_source_config
from modelcore.quantization import evaluation
from modelcore.quantization.base import QUANTIZATION_CONFIG_KEY, AlreadyQuantizedError, describe
from modelcore.quantization.registry import get_quantizer
from modelcore.reports import ConversionReport, Measurement, directory_size
from modelcore.serialization.sources import resolve_source

if TYPE_CHECKING:
    from modelcore.modeling_utils import PreTrainedModel

logger = logging.getLogger(__name__)

# Files of a checkpoint that the quantized copy does not take over (it writes its own weights and config).
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".gguf", ".index.json")
_NOT_COPIED_NAMES = (CONFIG_NAME, "report.json")


def quantize_checkpoint(
    source: str | os.PathLike,
    output: str | os.PathLike,
    method: str,
    *,
    options: dict[str, Any] | None = None,
    report: bool = True,
    eval_data: evaluation.EvalData | str | os.PathLike | None = None,
    eval_limit: int | None = None,
    batch_size: int = 32,
    seq_len: int = 64,
    threads: int | None = None,
    repeats: int = 10,
) -> ConversionReport | None:
    """Load ``source``, quantize it with ``method``, save it to ``output`` with its tokenizer files.

    Args:
        source: a full-precision checkpoint (directory, asset name or MLflow URI).
        output: the directory to write (must differ from the source's).
        method: a registered method name (``bnb_8bit``, ``bnb_nf4``, ``bnb_fp4``, ``int8_dynamic``).
        options: config fields of the method (``{"bnb_4bit_compute_dtype": "bfloat16"}``).
        report: measure both checkpoints and write ``output/report.json``.
        eval_data: validation data for the task metric (an ``EvalData``, a file or an asset name;
            see ``evaluation.load_eval_data``); without it the metric is left out.
        eval_limit: use the first ``eval_limit`` examples only.
        batch_size, seq_len: the shape of the check batch (logit difference and timing).
        threads: torch threads while timing (default: the current setting).
        repeats: timed forwards per model (the median is reported).

    Returns:
        The report, or None with ``report=False``.

    Raises:
        ValueError: an unknown method (naming the known ones), a source that is quantized already
            (``AlreadyQuantizedError``), or an output equal to the source.
        FileNotFoundError: the source does not exist.
    """
    quantizer = get_quantizer(method, **(options or {}))
    directory = resolve_source(source)  # a checkpoint directory, or a GGUF file
    config_dict, where = read_source_config(directory)
    if config_dict.get(QUANTIZATION_CONFIG_KEY) is not None:
        raise AlreadyQuantizedError(
            f"{directory} is already quantized with {describe(config_dict[QUANTIZATION_CONFIG_KEY])}; "
            "quantize its full-precision original instead"
        )
    output = Path(output)
    if output.exists() and output.resolve() == directory.resolve():
        raise ValueError(f"the output {output} is the source checkpoint; write the quantized copy elsewhere")
    model_class = model_class_for_checkpoint(where, config_dict)
    data = evaluation.load_eval_data(eval_data) if isinstance(eval_data, (str, os.PathLike)) else eval_data

    model = model_class.from_pretrained(directory, quantization_config=quantizer.config)
    model.save_pretrained(output)
    _copy_side_files(directory, output)
    logger.info("wrote %s (%s) to %s", type(model).__name__, quantizer.name, output)
    del model
    if not report:
        return None
    return build_report(
        model_class,
        directory,
        output,
        quantizer.name,
        data=None if data is None else data.limited(eval_limit),
        batch_size=batch_size,
        seq_len=seq_len,
        threads=threads,
        repeats=repeats,
        eval_source=None if eval_data is None or isinstance(eval_data, evaluation.EvalData) else str(eval_data),
    )


def build_report(
    model_class: type[PreTrainedModel],
    source: Path,
    output: Path,
    method: str,
    *,
    data: evaluation.EvalData | None,
    batch_size: int,
    seq_len: int,
    threads: int | None,
    repeats: int,
    eval_source: str | None = None,
) -> ConversionReport:
    """Measure the source and the saved quantized checkpoint (reloaded) and write ``output/report.json``."""
    tokenizer = _tokenizer(source)
    before = model_class.from_pretrained(source)
    after = model_class.from_pretrained(output)
    batch = evaluation.check_batch(
        tokenizer, None if data is None else data.texts, batch_size, seq_len, before.config.vocab_size
    )
    batch = evaluation.accepted_inputs(batch, before)
    metric_name = evaluation.task_of(before)
    if data is not None and tokenizer is None:
        logger.warning("%s has no tokenizer files: the task metric is left out", source)
    use_data = data is not None and tokenizer is not None

    latencies = evaluation.paired_latency_ms([before, after], batch, repeats=repeats, threads=threads)

    def measure(model: PreTrainedModel, size: int, latency: float) -> Measurement:
        metric = evaluation.task_metric(model, tokenizer, data, seq_len) if use_data else None
        return Measurement(size_bytes=size, metric=metric, latency_ms=latency, throughput=batch_size / latency * 1000.0)

    result = ConversionReport(
        kind="quantize",
        method=method,
        source=str(source),
        output=str(output),
        before=measure(before, directory_size(source), latencies[0]),
        after=measure(after, directory_size(output), latencies[1]),
        max_abs_logit_diff=evaluation.max_abs_diff(before, after, batch),
        metric_name=metric_name if use_data else None,
        settings={
            "batch_size": batch_size,
            "seq_len": seq_len,
            "threads": threads or torch.get_num_threads(),
            "repeats": repeats,
            "timing": "median of the repeats, the two models alternating call by call",
            "eval_data": eval_source,
            "eval_examples": len(data.texts) if use_data else 0,
            "linear_weight_bytes": {
                "before": evaluation.linear_weight_bytes(before),
                "after": evaluation.linear_weight_bytes(after),
            },
            "quantization_config": getattr(after.config, QUANTIZATION_CONFIG_KEY, None),
            "torch": torch.__version__,
        },
    )
    path = result.write(output)
    logger.info("wrote %s", path)
    return result


def model_class_for_checkpoint(where: str, config_dict: dict[str, Any]) -> type[PreTrainedModel]:
    """The class named by config.json's ``architectures`` (the family's bare model when it names none we have)."""
    model_type = config_dict.get("model_type")
    family = FAMILIES.get(str(model_type))
    if family is None:
        raise ConfigError(f"{where}: model_type {model_type!r} is not one of {', '.join(sorted(FAMILIES))}")
    by_name = {ref.rpartition(":")[2]: ref for ref in family.models.values()}
    for architecture in config_dict.get("architectures") or []:
        if architecture in by_name:
            return resolve(by_name[architecture])
    return resolve(family.models["AutoModel"])


def _tokenizer(directory: Path) -> Any:
    from modelcore.auto import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as err:  # no tokenizer files: random ids, no metric
        logger.info("%s: no tokenizer (%s)", directory, err)
        return None


def _copy_side_files(source: Path, output: Path) -> None:
    """Tokenizer, generation config and other small files travel with the quantized weights."""
    if not source.is_dir():  # a GGUF file: its tokenizer is inside, and was not converted
        return
    for path in source.iterdir():
        if path.is_file() and path.name not in _NOT_COPIED_NAMES and not path.name.endswith(_NOT_COPIED_SUFFIXES):
            shutil.copy2(path, output / path.name)
