"""The quantizer registry: method name -> Quantizer class, resolved on first use.

Entries are "module:Class" strings so that looking a name up does not import bitsandbytes or
torch's quantized kernels until that method is used. Add a method by adding its entry here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelcore.auto.registry import resolve
from modelcore.quantization.config import QuantizationConfig

if TYPE_CHECKING:
    from modelcore.quantization.base import Quantizer

QUANTIZERS: dict[str, str | type[Quantizer]] = {
    "bnb_8bit": "modelcore.quantization.bnb:Bnb8bitQuantizer",
    "bnb_nf4": "modelcore.quantization.bnb:BnbNf4Quantizer",
    "bnb_fp4": "modelcore.quantization.bnb:BnbFp4Quantizer",
    "int8_dynamic": "modelcore.quantization.int8:Int8DynamicQuantizer",
}


def quantizer_class(method: str) -> type[Quantizer]:
    """The Quantizer class registered under ``method``.

    Raises:
        ValueError: ``method`` is not registered; the message lists the known names.
    """
    if method not in QUANTIZERS:
        raise ValueError(f"unknown quantization method {method!r}; known methods: {', '.join(sorted(QUANTIZERS))}")
    return resolve(QUANTIZERS[method])


def resolve_config(spec: str | dict[str, Any] | QuantizationConfig | Any, **options: Any) -> QuantizationConfig:
    """Turn what a user passes as ``quantization_config`` into a config.

    Args:
        spec: a method name (``"bnb_nf4"``: its default config, with ``options`` applied), a
            ``quantization_config`` dict (as stored in config.json), one of our configs, or any
            object with ``to_dict()`` giving such a dict (e.g. transformers' ``BitsAndBytesConfig``).
        **options: config fields for a method name (``bnb_4bit_compute_dtype="bfloat16"``...).
    """
    if isinstance(spec, str):
        return quantizer_class(spec).default_config(**options)
    if options:
        raise TypeError(f"options {sorted(options)} only apply to a method name, not to a {type(spec).__name__}")
    if isinstance(spec, QuantizationConfig):
        return spec
    if isinstance(spec, dict):
        return QuantizationConfig.from_dict(spec)
    if callable(getattr(spec, "to_dict", None)):
        return QuantizationConfig.from_dict(spec.to_dict())
    raise TypeError(
        f"quantization_config must be a method name, a dict or a QuantizationConfig, got {type(spec).__name__}"
    )


def get_quantizer(spec: str | dict[str, Any] | QuantizationConfig | Any, **options: Any) -> Quantizer:
    """The quantizer for a method name or config (see ``resolve_config``)."""
    config = resolve_config(spec, **options)
    return quantizer_class(config.method)(config)
