"""ONNX int8: onnxruntime's dynamic quantization of an export directory (weights int8, activations per batch).

The steps are onnxruntime's own: ``quant_pre_process`` (symbolic shape inference and a basic graph
optimization), then ``quantize_dynamic``. On a fused export (``export_onnx(optimize=True)``) each
packed ``Attention`` becomes ``QAttention``, whose QKV projection runs as one int8 GEMM; on an
unfused one only the MatMuls become ``MatMulInteger``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelcore.exporters import report as export_report
from modelcore.exporters.modeling_ort import ONNX_NAME, TASK_METADATA_KEY, load_session, read_metadata
from modelcore.exporters.onnx_export import install
from modelcore.exporters.onnx_optimize import quiet_logs
from modelcore.reports import REPORT_NAME

logger = logging.getLogger(__name__)

# Operators quantized: projections (MatMul, fused Attention -> QAttention) and the embedding tables (Gather);
# normalizations, GELU and the attention softmax stay float. On the fine-tuned MiniLM per-channel weight scales
# kept held-out accuracy at fp32's (per-tensor scales lost 0.5 points); int8 embeddings cut the size 2.5x more.
QUANTIZED_OPS = ("MatMul", "Attention", "Gather")


def quantize_onnx(
    export_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    per_channel: bool = True,
    reduce_range: bool = True,
    op_types: tuple[str, ...] = QUANTIZED_OPS,
    reference: Any = None,
    report: bool = True,
    eval_data: Any = None,
    eval_limit: int | None = None,
    batch_size: int = 32,
    seq_len: int = 64,
    threads: int | None = None,
    repeats: int = 10,
    before_metric: float | None = None,
) -> Path:
    """Quantize ``export_dir/model.onnx`` to int8 into ``output_dir`` (config and tokenizer files travel along).

    Args:
        export_dir: an fp32 export directory (``export_onnx``).
        output_dir: created if needed (it may lie inside ``export_dir``, e.g. ``export_dir/int8``).
        per_channel: one weight scale per output channel (False: one per tensor).
        reduce_range: 7-bit weights (the default). On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
            onnxruntime adds pairs of uint8 x int8 products in int16, which 8-bit weights overflow; 7-bit ones
            cannot. False keeps 8-bit weights, only for models that will run on VNNI CPUs (measured on the
            fine-tuned MiniLM with per-channel scales: the same accuracy either way).
        op_types: the operator types to quantize.
        reference: what the report compares with: the eager model (or its checkpoint reference) the export
            came from; default the fp32 export itself.
        report, eval_data, eval_limit, batch_size, seq_len, threads, repeats: as in ``export_onnx``.
        before_metric: ``reference``'s task metric on ``eval_data`` at ``seq_len`` when already measured
            (the fp32 export's report has it as ``before.metric``): the report takes it instead of
            evaluating the reference again.

    Returns:
        ``output_dir``.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source_dir, output = Path(export_dir), Path(output_dir)
    source = source_dir / ONNX_NAME
    load_session(source)  # a missing or corrupt export fails here, naming the file
    task = read_metadata(source).get(TASK_METADATA_KEY)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=output) as tmp:
        staging = Path(tmp) / "export"
        staging.mkdir()
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(source, prepared)
        with quiet_logs(""):  # quantize_dynamic logs each tensor on the root logger
            quantize_dynamic(
                prepared,
                staging / ONNX_NAME,
                op_types_to_quantize=list(op_types),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                use_external_data_format=True,
            )
        metadata = {**read_metadata(source), "modelcore.quantization": "int8_dynamic"}
        _set_metadata(staging / ONNX_NAME, metadata)  # the task, and the fusions onnxruntime must not redo
        load_session(staging / ONNX_NAME)  # onnxruntime must be able to run what it wrote
        for path in source_dir.iterdir():  # config, tokenizer, generation config
            if path.is_file() and not path.name.startswith(ONNX_NAME) and path.name != REPORT_NAME:
                shutil.copy2(path, staging / path.name)
        install(staging, output)
    logger.info("quantized %s to int8 in %s", source, output)
    if report:
        _write_report(
            source_dir,
            output,
            task,
            reference,
            dict(
                eval_data=eval_data,
                eval_limit=eval_limit,
                batch_size=batch_size,
                seq_len=seq_len,
                threads=threads,
                repeats=repeats,
                before_metric=before_metric,
            ),
            {"per_channel": per_channel, "reduce_range": reduce_range, "op_types": list(op_types)},
        )
    return output


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _pre_process(source: Path, destination: Path) -> None:
    """``quant_pre_process``; without symbolic shape inference when that cannot finish on the graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = dict(
        save_as_external_data=True, all_tensors_to_one_file=True, external_data_location=destination.name + ".data"
    )
    source, destination = source.resolve(), destination.resolve()  # before the chdir: relative paths stay right
    # On failure symbolic shape inference dumps its partial model into the working directory: keep that in ours.
    with _working_directory(destination.parent):
        try:
            quant_pre_process(source, destination, auto_merge=True, **options)
        except Exception as error:  # it raises a bare Exception("Incomplete symbolic shape inference")
            logger.warning("symbolic shape inference failed (%s); pre-processing with ONNX shape inference only", error)
            quant_pre_process(source, destination, skip_symbolic_shape=True, **options)


def _set_metadata(path: Path, values: dict[str, str]) -> None:
    """Rewrite ``path``'s metadata_props (the graph only: its weights stay in the external file)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    current = {p.key: p.value for p in proto.metadata_props}
    current.update({k: v for k, v in values.items() if v})
    del proto.metadata_props[:]
    for key, value in current.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _write_report(
    source_dir: Path, output: Path, task: str | None, reference: Any, measure: dict[str, Any], extra: dict[str, Any]
) -> None:
    from modelcore.exporters.onnx_export import ORT_CLASSES, exportable_model
    from modelcore.exporters.specs import ONNX_TASKS

    if task not in ORT_CLASSES:
        raise ValueError(f"{source_dir / ONNX_NAME}: no modelcore task in its metadata; cannot measure it")
    ort_class = ORT_CLASSES[task]
    tokenizer = export_report.load_tokenizer(output)
    if reference is None:  # the fp32 export
        source = str(source_dir)
        before = ort_class.from_pretrained(source_dir, threads=measure["threads"])
        before_size = export_report.onnx_size(source_dir)
    else:  # the eager model, or a checkpoint to load it from
        source = type(reference).__name__ if hasattr(reference, "state_dict") else str(reference)
        if not hasattr(reference, "state_dict"):
            import modelcore.auto as auto

            reference = getattr(auto, ONNX_TASKS[task].auto_class).from_pretrained(reference, dtype="float32")
        before = exportable_model(reference)
        before_size = export_report.state_dict_bytes(before)
    export_report.build_report(
        "onnx_int8",
        source=source,
        output=output,
        before=before,
        after=ort_class.from_pretrained(output, threads=measure["threads"]),
        before_size=before_size,
        after_size=export_report.onnx_size(output),
        tokenizer=tokenizer,
        extra={"task": task, "quantized_from": str(source_dir), **extra},
        **measure,
    )
