"""Quantization: a registry of methods, each with a config stored as ``quantization_config`` in config.json.

    from modelcore import AutoModelForCausalLM
    from modelcore.quantization import quantize

    model = AutoModelForCausalLM.from_pretrained(path, quantization_config="bnb_nf4")  # quantize on load
    model.save_pretrained(out)                        # a quantized checkpoint; loads back as saved
    model = quantize(other_model, "int8_dynamic")     # or quantize a model in memory

Methods (``QUANTIZERS``): ``bnb_8bit`` (LLM.int8), ``bnb_nf4`` / ``bnb_fp4`` (4-bit, optionally
double-quantized, with a compute dtype), ``int8_dynamic`` (CPU int8 kernels). Command line:
``modelcore quantize METHOD SRC DST`` (writes the checkpoint and ``report.json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelcore._lazy import lazy_exports

if TYPE_CHECKING:
    from modelcore.modeling_utils import PreTrainedModel
    from modelcore.quantization.config import QuantizationConfig

_EXPORTS = {
    "QuantizationConfig": "config",
    "QuantizationConfigError": "config",
    "BitsAndBytesConfig": "config",
    "Int8DynamicConfig": "config",
    "QUANTIZERS": "registry",
    "get_quantizer": "registry",
    "quantizer_class": "registry",
    "resolve_config": "registry",
    "Quantizer": "base",
    "AlreadyQuantizedError": "base",
    "is_quantized": "base",
    "default_skip_modules": "base",
    "quantize_checkpoint": "convert",
}
__all__ = sorted([*_EXPORTS, "quantize"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def quantize(
    model: PreTrainedModel, method: str | dict[str, Any] | QuantizationConfig, **options: Any
) -> PreTrainedModel:
    """Quantize a loaded full-precision model in place and return it.

    Args:
        model: a ``PreTrainedModel`` (not quantized yet).
        method: a registered method name (``"bnb_nf4"``...), a ``quantization_config`` dict or a config.
        **options: config fields for a method name, e.g. ``bnb_4bit_compute_dtype="bfloat16"``.

    Raises:
        ValueError: an unknown method (the message lists the known ones), or a model that is
            already quantized (``AlreadyQuantizedError``).
    """
    from modelcore.quantization.registry import get_quantizer

    return get_quantizer(method, **options).quantize(model)
