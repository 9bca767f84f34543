"""ONNX export, onnxruntime-backed models and ONNX int8 quantization.

    from modelcore.exporters import export_onnx, quantize_onnx, OrtModelForSequenceClassification

    export_onnx("fine-tuned/", "out/onnx", eval_data="heldout.jsonl")        # model.onnx(+.data), report.json
    quantize_onnx("out/onnx", "out/onnx/int8", reference="fine-tuned/")      # int8, report.json
    OrtModelForSequenceClassification.from_pretrained("out/onnx/int8", threads=2)(**batch).logits

Command line: ``modelcore export onnx SRC DST [--int8]``. onnx, onnxscript and onnxruntime are the
``onnx`` extra; nothing here imports them until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcore._lazy import lazy_exports

_EXPORTS = {
    "export_onnx": "onnx_export",
    "quantize_onnx": "onnx_quantize",
    "optimize_onnx": "onnx_optimize",
    "OrtModel": "modeling_ort",
    "OrtModelForSequenceClassification": "modeling_ort",
    "OrtModelForCausalLM": "modeling_ort",
    "ONNX_TASKS": "specs",
}
__all__ = [
    "ONNX_TASKS",
    "OrtModel",
    "OrtModelForCausalLM",
    "OrtModelForSequenceClassification",
    "export_onnx",
    "optimize_onnx",
    "quantize_onnx",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from modelcore.exporters.modeling_ort import OrtModel, OrtModelForCausalLM, OrtModelForSequenceClassification
    from modelcore.exporters.onnx_export import export_onnx
    from modelcore.exporters.onnx_optimize import optimize_onnx
    from modelcore.exporters.onnx_quantize import quantize_onnx
    from modelcore.exporters.specs import ONNX_TASKS
