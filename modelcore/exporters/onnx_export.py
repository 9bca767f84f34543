"""Export a model to an ONNX directory with ``torch.onnx.export(dynamo=True)``, checked against eager.

    from modelcore.exporters import export_onnx, quantize_onnx

    export_onnx("fine-tuned/", "out/onnx", eval_data="heldout.jsonl", threads=2)   # fp32, fused, report.json
    quantize_onnx("out/onnx", "out/onnx/int8", reference="fine-tuned/")               # int8, report.json

The directory written holds ``model.onnx`` with its weights in ``model.onnx.data`` (always external,
so models past protobuf's 2 GB limit export the same way), ``config.json``, the tokenizer and
generation config when the source has them, and ``report.json``. Batch and sequence axes (and the
past length of a decoder with KV cache) are dynamic.

Before export the model is made exportable: eval mode, float32 weights (a bf16 model is copied to
float32), and the class's own ``forward`` is traced, so an autocast wrapper that mixed-precision
training left on ``model.forward`` is not (see ``specs.call_forward``). The exported graph is then
compared with the eager model on check inputs; a logit difference above ``atol`` (scaled by the logits'
magnitude beyond 1) is an error.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from modelcore.exporters import report as export_report
from modelcore.exporters.modeling_ort import ONNX_NAME, ORT_SESSION_CONFIG_KEY, TASK_METADATA_KEY, OrtModelForCausalLM
from modelcore.exporters.modeling_ort import OrtModelForSequenceClassification as _OrtClassifier
from modelcore.exporters.specs import GraphSpec, OnnxTask, call_forward, task_for_architectures, task_for_model
from modelcore.generation.configuration import GENERATION_CONFIG_NAME
from modelcore.modeling_utils import PreTrainedModel
from modelcore.reports import REPORT_NAME

logger = logging.getLogger(__name__)

DEFAULT_ATOL = 1e-4  # largest logit difference from eager that an fp32 export may show
# Session settings stored with every export. A masked attention score becomes exp(-88) = 4e-39 in
# onnxruntime's softmax, a denormal, and denormal arithmetic is slow on x86: flushing them to zero made
# the int8 MiniLM 18% faster (156 -> 128 ms at 32 x 64, 2 threads) and changes no result above 1e-38.
ORT_SESSION_CONFIG = {"session.set_denormal_as_zero": "1"}
ORT_CLASSES = {"text-classification": _OrtClassifier, "text-generation": OrtModelForCausalLM}


def export_onnx(
    model: PreTrainedModel | str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    task: str | None = None,
    with_past: bool = True,
    opset: int | None = None,
    optimize: bool = True,
    tokenizer: Any = None,
    atol: float = DEFAULT_ATOL,
    report: bool = True,
    eval_data: Any = None,
    eval_limit: int | None = None,
    batch_size: int = 32,
    seq_len: int = 64,
    threads: int | None = None,
    repeats: int = 10,
) -> Path:
    """Export ``model`` to ``output_dir`` and check it against the eager model.

    Args:
        model: a loaded model, or a checkpoint reference (directory, asset name, MLflow URI, GGUF file).
        output_dir: created if needed; an earlier export there is replaced.
        task: ``text-classification`` or ``text-generation``; default from the model's head.
        with_past: decoders: give the graph past key/value inputs and present outputs (a KV cache).
        opset: ONNX opset (default: torch's).
        optimize: fuse attention, LayerNorm and GELU for onnxruntime (``onnx_optimize``); the graph
            then uses ``com.microsoft`` operators, so it needs onnxruntime.
        tokenizer: saved with the export; default: the source checkpoint's, when it has one.
        atol: largest logit difference from the eager model accepted on check inputs (for logits up to 1 in
            magnitude; it scales with larger ones).
        report: measure eager and exported model and write ``report.json``.
        eval_data: validation data for the task metric (``EvalData``, a .jsonl/.json/.csv file, or an
            asset name); without it the report leaves the metric out.
        eval_limit: use the first ``eval_limit`` examples.
        batch_size, seq_len: the check batch for logit difference and timing.
        threads: torch and onnxruntime threads while measuring (default: torch's).
        repeats: timed forwards per model.

    Returns:
        ``output_dir``.

    Raises:
        ValueError: a model with no exportable head, or an export that differs from eager beyond ``atol``.
    """
    source = None if isinstance(model, PreTrainedModel) else model
    if source is not None:
        model, location, tokenizer = _load_source(source, task, tokenizer)
    else:
        location = None
    spec_task = task_for_model(model, task)
    if not spec_task.has_past:
        with_past = False
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    exportable = exportable_model(model)

    with tempfile.TemporaryDirectory(prefix=".export-", dir=output) as tmp:
        staging = Path(tmp) / "export"  # checked here first: a failed check leaves output_dir as it was
        staging.mkdir()
        raw = Path(tmp) / ONNX_NAME
        spec = spec_task.build(exportable, with_past)
        program = _torch_export(spec, opset)
        program.model.metadata_props.update(
            {
                TASK_METADATA_KEY: spec_task.name,
                "modelcore.with_past": str(int(with_past)),
                ORT_SESSION_CONFIG_KEY: json.dumps(ORT_SESSION_CONFIG),
            }
        )
        program.save(str(raw), external_data=True)
        if optimize:
            from modelcore.exporters.onnx_optimize import optimize_onnx

            optimize_onnx(raw, staging / ONNX_NAME)
        else:
            move_onnx(raw, staging)
        _write_side_files(exportable, staging, location, tokenizer)
        max_diff = check_export(exportable, spec, staging, spec_task, atol)
        install(staging, output)
    logger.info(
        "exported %s to %s (max abs logit diff from eager %.3g on check inputs)", spec_task.name, output, max_diff
    )
    if report:
        ort_model = ORT_CLASSES[spec_task.name].from_pretrained(output, threads=threads)
        export_report.build_report(
            "onnx_optimized" if optimize else "onnx",
            source=str(source if source is not None else type(model).__name__),
            output=output,
            before=exportable,
            after=ort_model,
            before_size=export_report.state_dict_bytes(exportable),
            after_size=export_report.onnx_size(output),
            tokenizer=tokenizer,
            eval_data=eval_data,
            eval_limit=eval_limit,
            batch_size=batch_size,
            seq_len=seq_len,
            threads=threads,
            repeats=repeats,
            extra={"task": spec_task.name, "with_past": with_past, "opset": opset, "export_check_diff": max_diff},
        )
    return output


def exportable_model(model: PreTrainedModel) -> PreTrainedModel:
    """The model in eval mode, with float32 weights and its class's own ``forward``.

    A ``forward`` set on the instance (accelerate's autocast wrapper after mixed-precision training)
    is dropped from a shallow copy, which shares the weights; weights that are not float32 are
    converted in a deep copy. The caller's model keeps its forward and dtype (it is put in eval mode).
    """
    if "forward" in vars(model):
        logger.warning(
            "%s.forward is wrapped on the instance (mixed-precision training leaves an autocast wrapper): "
            "exporting and measuring the class's own forward, in float32",
            type(model).__name__,
        )
        model = copy.copy(model)  # shares parameters and submodules
        del model.forward
    floating = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if floating - {torch.float32}:
        logger.info("exporting a float32 copy of the %s weights", "/".join(sorted(str(d) for d in floating)))
        model = copy.deepcopy(model).float()
    return model.eval()


@contextlib.contextmanager
def _sdpa_attention(model: PreTrainedModel) -> Iterator[None]:
    """Trace attention as ``scaled_dot_product_attention``: the form the attention fusion recognizes."""
    config = model.config
    previous = getattr(config, "attn_implementation", None)
    if previous is not None:
        config.attn_implementation = "sdpa"
    try:
        yield
    finally:
        if previous is not None:
            config.attn_implementation = previous


def _torch_export(spec: GraphSpec, opset: int | None) -> Any:
    model = spec.module.model
    # No autocast may leak in from the caller: a bf16 MatMul in the graph would not run on onnxruntime's CPU provider.
    with _sdpa_attention(model), torch.autocast("cpu", enabled=False), torch.no_grad(), warnings.catch_warnings():
        # Axes given one name (batch, sequence) on several inputs draw a warning per input; they are named as asked.
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)", category=FutureWarning)
        return torch.onnx.export(
            spec.module.eval(),
            spec.args,
            dynamo=True,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_shapes=spec.dynamic_shapes,
            opset_version=opset,
            external_data=True,
            verbose=False,
        )


def move_onnx(source: Path, directory: Path) -> None:
    """Move ``source`` (``model.onnx`` + its ``.data``) into ``directory``: weights first, then the graph."""
    data = source.with_name(source.name + ".data")
    if data.exists():
        os.replace(data, directory / (ONNX_NAME + ".data"))
    else:
        (directory / (ONNX_NAME + ".data")).unlink(missing_ok=True)
    os.replace(source, directory / ONNX_NAME)


def install(staging: Path, output: Path) -> None:
    """Move a checked export from ``staging`` into ``output``, replacing an earlier one (and its report)."""
    (output / REPORT_NAME).unlink(missing_ok=True)
    for path in staging.iterdir():
        if path.is_file() and not path.name.startswith(ONNX_NAME):
            os.replace(path, output / path.name)
    move_onnx(staging / ONNX_NAME, output)


def _load_source(source: Any, task: str | None, tokenizer: Any) -> tuple[PreTrainedModel, Path, Any]:
    import modelcore.auto as auto
    from modelcore.configuration_utils import read_source_config
    from modelcore.serialization.sources import resolve_source

    location = resolve_source(source)
    data, where = read_source_config(location)
    spec = task_for_architectures(data.get("architectures"), task, where)
    model = getattr(auto, spec.auto_class).from_pretrained(location, dtype=torch.float32)
    if tokenizer is None:
        tokenizer = export_report.load_tokenizer(location)
    return model, location, tokenizer


def _write_side_files(model: PreTrainedModel, output: Path, location: Path | None, tokenizer: Any) -> None:
    """config.json (naming the architecture), tokenizer files, generation_config.json."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.dtype = "float32"
    config.save_pretrained(output)
    if tokenizer is not None:
        tokenizer.save_pretrained(output)
    if location is not None and location.is_dir() and (location / GENERATION_CONFIG_NAME).is_file():
        shutil.copy2(location / GENERATION_CONFIG_NAME, output / GENERATION_CONFIG_NAME)


def check_export(model: PreTrainedModel, spec: GraphSpec, output: Path, task: OnnxTask, atol: float) -> float:
    """The largest logit difference between the export and eager on check inputs; too large is a ValueError.

    The tolerance is ``atol`` for logits up to 1 in magnitude and scales with them beyond (a 30-layer
    LM's logits reach 30, and fp32 summation order alone moves them by about 1e-4).
    """
    ort_model = ORT_CLASSES[task.name].from_pretrained(output)
    if task.name == "text-generation":
        pairs = _decoder_outputs(model, ort_model, spec.args[0])
    else:
        with torch.inference_mode():
            expected = spec.module(*spec.args)
        pairs = [(expected, ort_model(**dict(zip(spec.input_names, spec.args, strict=True))).logits)]
    diff = max(float((a - b).abs().max()) for a, b in pairs)
    scale = max([1.0] + [float(a.abs().max()) for a, _ in pairs])
    if not diff <= atol * scale:  # also catches NaN
        raise ValueError(
            f"{output / ONNX_NAME}: logits differ from the eager model by {diff:.3g} "
            f"(> atol {atol:g} x logit scale {scale:.3g})"
        )
    return diff


def _decoder_outputs(model: PreTrainedModel, ort_model: Any, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, Any]]:
    """(eager, onnx) logits of a left-padded prompt, then of one more token on the cache when the export has one."""
    from modelcore.generation.utils import left_padded_positions
    from modelcore.nn.cache import DynamicCache

    mask = torch.ones_like(input_ids)
    mask[-1, 0] = 0
    cache = DynamicCache() if ort_model.with_past else None
    with torch.inference_mode():
        eager = call_forward(
            model,
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=left_padded_positions(mask),
            past_key_values=cache,
            use_cache=cache is not None,
        )
    onnx_out = ort_model(input_ids, mask)
    keep = mask.bool()
    pairs = [(eager.logits[keep], onnx_out.logits[keep])]
    if cache is not None:
        token, mask = input_ids[:, -1:], torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        with torch.inference_mode():
            eager = call_forward(
                model,
                input_ids=token,
                attention_mask=mask,
                position_ids=left_padded_positions(mask)[:, -1:],
                past_key_values=cache,
                use_cache=True,
            )
        onnx_out = ort_model(token, mask, past_key_values=onnx_out.past_key_values)
        pairs.append((eager.logits, onnx_out.logits))
    return pairs
