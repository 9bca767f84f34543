"""Quantization configurations: what a method needs, stored as ``quantization_config`` in config.json.

One dataclass per family of methods. ``to_dict`` gives the JSON stored in ``config.json``; it
carries ``quant_method`` (the Hugging Face key) so ``QuantizationConfig.from_dict`` can pick the
class back. The bitsandbytes config keeps transformers' ``BitsAndBytesConfig`` field names and
JSON shape, so a checkpoint quantized here loads in transformers and one quantized there loads here.

Two kinds of input, as for model configs: keywords passed in code must be fields (a typo is a
``TypeError``); keys read from a checkpoint that we do not model are kept and written back.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Any, ClassVar

from modelcore.errors import ConfigError
from modelcore.typecheck import matches, type_name

logger = logging.getLogger(__name__)

_DERIVED_KEYS = ("_load_in_8bit", "_load_in_4bit")  # transformers' private copies of load_in_8bit/4bit
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
BNB_4BIT_QUANT_TYPES = ("nf4", "fp4")


class QuantizationConfigError(ConfigError):
    """A quantization configuration is invalid; the message names the field."""


@dataclasses.dataclass(kw_only=True, eq=False)
class QuantizationConfig:
    """Base of every method's configuration.

    Subclasses set ``quant_method`` (the value stored under that key in config.json) and declare
    their fields; ``validate`` runs on construction.
    """

    quant_method: ClassVar[str] = ""
    _classes: ClassVar[dict[str, type[QuantizationConfig]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.quant_method:
            QuantizationConfig._classes[cls.quant_method] = cls

    def __post_init__(self) -> None:
        self._extra: dict[str, Any] = {}
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not matches(value, hints[field.name]):
                raise QuantizationConfigError(
                    f"{type(self).__name__}.{field.name} must be {type_name(hints[field.name])}, got {value!r}"
                )
        self.validate()

    def validate(self) -> None:
        """Check constraints between fields; raise ``QuantizationConfigError`` naming the field."""

    @property
    def method(self) -> str:
        """The registry name of the method this config describes (``"bnb_nf4"``, ``"int8_dynamic"``...)."""
        return self.quant_method

    @property
    def skip_modules(self) -> list[str] | None:
        """Module name patterns left in full precision (None: the model's default, its task head)."""
        return None

    def with_skip_modules(self, patterns: list[str]) -> QuantizationConfig:
        """A copy with the skip patterns resolved (what config.json stores, so a reload swaps the same modules)."""
        return self

    # ---------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """The JSON stored under ``quantization_config`` in config.json."""
        data = {"quant_method": self.quant_method}
        data.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        data.update(self._extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizationConfig:
        """Build the config a ``quantization_config`` dict describes; unknown keys are kept.

        Raises:
            ValueError: the dict has no ``quant_method`` or one no class handles.
        """
        method = data.get("quant_method")
        method = getattr(method, "value", method)  # transformers passes an enum
        target = cls if cls.quant_method else QuantizationConfig._classes.get(str(method))
        if target is None:
            known = ", ".join(sorted(QuantizationConfig._classes))
            raise ValueError(f"quantization_config has quant_method {method!r}; known: {known}")
        if cls.quant_method and method not in (None, cls.quant_method):
            raise ValueError(f"{cls.__name__} reads quant_method {cls.quant_method!r}, got {method!r}")
        names = {f.name for f in dataclasses.fields(target)}
        known = {k: v for k, v in data.items() if k in names}
        config = target(**target._normalize(known))
        config._extra = {k: v for k, v in data.items() if k not in names and k not in ("quant_method", *_DERIVED_KEYS)}
        if config._extra:
            logger.debug("%s: keeping keys it does not model: %s", target.__name__, sorted(config._extra))
        return config

    @classmethod
    def _normalize(cls, fields: dict[str, Any]) -> dict[str, Any]:
        """Adjust stored values to field types (subclasses map JSON spellings here)."""
        return fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantizationConfig) and self.to_dict() == other.to_dict()


@dataclasses.dataclass(kw_only=True, eq=False)
class BitsAndBytesConfig(QuantizationConfig):
    """bitsandbytes LLM.int8 (``load_in_8bit``) or 4-bit NF4/FP4 (``load_in_4bit``), transformers' field names.

    Args:
        load_in_8bit: LLM.int8: int8 weights with per-row scales (``SCB``), outlier columns of the
            activations above ``llm_int8_threshold`` computed in 16 bits.
        load_in_4bit: 4-bit weights in blocks of 64 with one absmax per block.
        llm_int8_threshold: the outlier threshold of LLM.int8 (0 disables the decomposition).
        llm_int8_skip_modules: module name patterns kept in full precision (transformers' matching:
            a prefix up to a module boundary, a regex, or a suffix). None: the task head and tied
            output embeddings. Used by the 4-bit methods too (the name is transformers').
        llm_int8_enable_fp32_cpu_offload, llm_int8_has_fp16_weight: kept for transformers'
            config shape; fp16 master weights (training) are not supported here.
        bnb_4bit_compute_dtype: the dtype 4-bit matmuls compute in (``float32``, ``bfloat16``, ``float16``).
        bnb_4bit_quant_type: ``"nf4"`` (normal-float, for normally distributed weights) or ``"fp4"``.
        bnb_4bit_use_double_quant: quantize the absmax values too (8-bit, blocks of 256): about
            0.4 bits per weight less.
        bnb_4bit_quant_storage: the dtype packing two 4-bit values; only ``"uint8"``.
    """

    quant_method: ClassVar[str] = "bitsandbytes"

    load_in_8bit: bool = False
    load_in_4bit: bool = False
    llm_int8_threshold: float = 6.0
    llm_int8_skip_modules: list[str] | None = None
    llm_int8_enable_fp32_cpu_offload: bool = False
    llm_int8_has_fp16_weight: bool = False
    bnb_4bit_compute_dtype: str = "float32"
    bnb_4bit_quant_type: str = "fp4"
    bnb_4bit_use_double_quant: bool = False
    bnb_4bit_quant_storage: str = "uint8"

    def validate(self) -> None:
        if self.load_in_8bit == self.load_in_4bit:
            raise QuantizationConfigError(
                "BitsAndBytesConfig needs exactly one of load_in_8bit / load_in_4bit set to True, "
                f"got load_in_8bit={self.load_in_8bit}, load_in_4bit={self.load_in_4bit}"
            )
        if self.bnb_4bit_quant_type not in BNB_4BIT_QUANT_TYPES:
            raise QuantizationConfigError(
                f"BitsAndBytesConfig.bnb_4bit_quant_type {self.bnb_4bit_quant_type!r} is not one of "
                f"{', '.join(BNB_4BIT_QUANT_TYPES)}"
            )
        if self.bnb_4bit_compute_dtype not in COMPUTE_DTYPES:
            raise QuantizationConfigError(
                f"BitsAndBytesConfig.bnb_4bit_compute_dtype {self.bnb_4bit_compute_dtype!r} is not one of "
                f"{', '.join(COMPUTE_DTYPES)}"
            )
        if self.bnb_4bit_quant_storage != "uint8":
            raise QuantizationConfigError(
                f"BitsAndBytesConfig.bnb_4bit_quant_storage {self.bnb_4bit_quant_storage!r}: only 'uint8' is supported"
            )
        if self.llm_int8_has_fp16_weight:
            raise QuantizationConfigError(
                "BitsAndBytesConfig.llm_int8_has_fp16_weight=True (16-bit master weights for training) is not supported"
            )
        if self.llm_int8_threshold < 0:
            raise QuantizationConfigError(
                f"BitsAndBytesConfig.llm_int8_threshold must be >= 0, got {self.llm_int8_threshold}"
            )

    @property
    def method(self) -> str:
        return "bnb_8bit" if self.load_in_8bit else f"bnb_{self.bnb_4bit_quant_type}"

    @property
    def skip_modules(self) -> list[str] | None:
        return self.llm_int8_skip_modules

    def with_skip_modules(self, patterns: list[str]) -> BitsAndBytesConfig:
        copy = dataclasses.replace(self, llm_int8_skip_modules=list(patterns))
        copy._extra = dict(self._extra)
        return copy

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        # transformers writes its private flags too; keeping them makes the two files identical in shape.
        data["_load_in_8bit"] = self.load_in_8bit
        data["_load_in_4bit"] = self.load_in_4bit
        return data

    @classmethod
    def _normalize(cls, fields: dict[str, Any]) -> dict[str, Any]:
        fields = dict(fields)
        for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            value = fields.get(key)
            if value is None:
                fields.pop(key, None)  # transformers' None means its default
            else:
                fields[key] = str(value).removeprefix("torch.")
        if isinstance(fields.get("llm_int8_threshold"), int):
            fields["llm_int8_threshold"] = float(fields["llm_int8_threshold"])
        return fields


@dataclasses.dataclass(kw_only=True, eq=False)
class Int8DynamicConfig(QuantizationConfig):
    """CPU int8 inference: int8 weights with one scale per output channel, activations quantized per batch.

    The matmul runs in fbgemm/oneDNN's int8 kernels (``torch.ops.quantized.linear_dynamic``):
    activations get one scale per call, computed on the fly, so no calibration data is needed.

    Args:
        modules_to_not_convert: module name patterns kept in full precision (None: the task head
            and tied output embeddings), matched like ``llm_int8_skip_modules``.
        reduce_range: quantize activations to 7 bits, which keeps fbgemm's int16 accumulation from
            saturating on CPUs without VNNI (the torch default on x86).
    """

    quant_method: ClassVar[str] = "int8_dynamic"

    modules_to_not_convert: list[str] | None = None
    reduce_range: bool = True

    @property
    def method(self) -> str:
        return "int8_dynamic"

    @property
    def skip_modules(self) -> list[str] | None:
        return self.modules_to_not_convert

    def with_skip_modules(self, patterns: list[str]) -> Int8DynamicConfig:
        copy = dataclasses.replace(self, modules_to_not_convert=list(patterns))
        copy._extra = dict(self._extra)
        return copy
