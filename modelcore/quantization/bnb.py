"""bitsandbytes: LLM.int8 (``bnb_8bit``) and 4-bit NF4 / FP4 (``bnb_nf4``, ``bnb_fp4``), on CPU and GPU.

Stored layout (transformers' names, so checkpoints go both ways):

* 8-bit: ``<layer>.weight`` int8 (out, in), ``<layer>.SCB`` float32 (out,) row scales,
  ``<layer>.weight_format`` uint8 0 (row-major), ``<layer>.bias``.
* 4-bit: ``<layer>.weight`` uint8 (out * in / 2, 1), two 4-bit codes per byte; ``weight.absmax``
  (one per block of 64; uint8 when double-quantized, with ``weight.nested_absmax`` and
  ``weight.nested_quant_map``), ``weight.quant_map`` (the 16 code values), and
  ``weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``): the JSON of the non-tensor state
  (blocksize, shape, dtype) packed in a uint8 tensor. Reloaded with ``Params4bit.from_prequantized``.

On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for its fused kernel on the first
inference call, rounding absmax to bf16 and dropping the nested quantization; its inverse for
saving is only approximate (and wrong for non-nested absmax in 0.50). ``Linear4bit`` here keeps
the quantization state as built or loaded beside it (its absmax stays alive: about 1/16 of the
4-bit weight's bytes, 1/64 with double quantization) and saves that, so a checkpoint saves back
exactly what it loaded. That kernel is also slow past a few dozen rows: ``Linear4bit`` uses it
for small inputs (decoding) and dequantizes for larger ones.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, ClassVar

import torch
from torch import nn

from modelcore.quantization.base import Quantizer
from modelcore.quantization.config import BitsAndBytesConfig


def _import_bitsandbytes() -> Any:
    # At import, bitsandbytes warns that an optional hub kernel (the `kernels` package) is missing;
    # it then uses the CPU kernels of its own library, which is what we measure. Silence that one line.
    cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = cpu_ops.level
    cpu_ops.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError as err:
        raise ImportError("the bnb_* quantization methods need bitsandbytes: pip install 'modelcore[bnb]'") from err
    finally:
        cpu_ops.setLevel(level)
    return bitsandbytes


class _DropCastNotice(logging.Filter):
    """LLM.int8 casts fp32 inputs to fp16 by design; bitsandbytes logs that on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast from" not in record.getMessage()


bnb = _import_bitsandbytes()
logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropCastNotice())
_unpack_cpu_weight = getattr(bnb.functional, "_convert_weight_packed_for_cpu_inverse", None)
_QUANT_STATE_KEYS = {"absmax", "quant_map", "nested_absmax", "nested_quant_map"}
_CPU_KERNEL_BLOCK_N = 32  # bitsandbytes' fused CPU kernel packs output rows in blocks of 32
# bitsandbytes' fused CPU kernel (a GEMV at heart) wins for a few rows, as in decoding; past 32-64 rows,
# dequantizing the weight and using torch's matmul is faster (measured here, AVX512-BF16 without AMX:
# 1.5x at 128 rows, 1.9x at 512 rows of a 384 -> 1536 layer; 2x on a whole 32 x 64 MiniLM batch).
_FUSED_CPU_MAX_ROWS = 32


class Linear8bitLt(bnb.nn.Linear8bitLt):
    """bitsandbytes' LLM.int8 Linear (unchanged; the subclass marks the model as quantized)."""

    quantized_by: ClassVar[str] = "bnb_8bit"


class Linear4bit(bnb.nn.Linear4bit):
    """bitsandbytes' 4-bit Linear, with a faster CPU path for many rows and an exact save.

    On the CPU, up to ``_FUSED_CPU_MAX_ROWS`` rows go through bitsandbytes' fused kernel (which
    repacks the weight on first use); more rows dequantize the weight and use torch's matmul.
    The quantization state as built (or loaded) is kept aside (the tensors are shared, not
    copied), so the many-rows path and ``state_dict`` do not depend on whether the repacking
    happened, and a checkpoint saves back exactly what it loaded.
    """

    quantized_by: ClassVar[str] = "bnb_4bit"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._original_state: Any = None  # bnb QuantState, before any CPU repacking
        # The fused CPU kernel needs whole blocks of rows and of absmax; other shapes dequantize instead.
        blocksize = self.weight.blocksize
        self.support_avx512bf16_for_cpu = (
            self.support_avx512bf16_for_cpu
            and self.out_features % _CPU_KERNEL_BLOCK_N == 0
            and self.in_features % blocksize == 0
        )

    def remember_quant_state(self) -> None:
        """Keep the state as built or loaded (call right after quantizing or loading)."""
        # The repacking replaces the live state's attributes (never its tensors in place): a shallow copy suffices.
        self._original_state = copy.copy(self.weight.quant_state)

    def _stored_weight(self) -> torch.Tensor:
        """The 4-bit codes in bitsandbytes' standard layout, (out * in / 2, 1) uint8."""
        if getattr(self.weight.quant_state, "packing_format_for_cpu", False):
            # Undo the CPU kernel's nibble layout (exact); a copy keeps the live state untouched.
            weight, _ = _unpack_cpu_weight(self.weight.data, copy.copy(self.weight.quant_state))
            return weight
        return self.weight.data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(x.shape[-1], 1)
        if x.device.type == "cpu" and rows > _FUSED_CPU_MAX_ROWS and self._original_state is not None:
            compute = self.compute_dtype or x.dtype
            weight = bnb.functional.dequantize_4bit(self._stored_weight(), self._original_state).to(compute)
            bias = None if self.bias is None else self.bias.to(compute)
            return nn.functional.linear(x.to(compute), weight, bias).to(x.dtype)  # (..., out)
        return super().forward(x)  # bitsandbytes' path: its fused kernel on the CPU

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        if self._original_state is None:
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        destination[prefix + "weight"] = self._stored_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()
        for key, value in self._original_state.as_dict(packed=True).items():
            destination[f"{prefix}weight.{key}"] = value.clone()  # a copy: bnb may share its code tables


class _BnbQuantizer(Quantizer):
    config_class = BitsAndBytesConfig
    config: BitsAndBytesConfig


class Bnb8bitQuantizer(_BnbQuantizer):
    """LLM.int8: int8 weights with one absmax scale per output row; outlier activations in 16 bits."""

    name = "bnb_8bit"

    @classmethod
    def default_config(cls, **options: Any) -> BitsAndBytesConfig:
        return BitsAndBytesConfig(load_in_8bit=True, **options)

    def _module(self, linear: nn.Linear) -> Linear8bitLt:
        return Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            has_fp16_weights=False,
            threshold=self.config.llm_int8_threshold,
            device="meta",
        )

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        module = self._module(linear)
        weight = linear.weight.detach()
        # Int8Params quantizes when moved from the CPU to a device (the CPU included).
        module.weight = bnb.nn.Int8Params(weight.to("cpu"), requires_grad=False, has_fp16_weights=False).to(
            weight.device
        )
        module.bias = linear.bias
        return module.train(linear.training)

    def empty_linear(self, linear: nn.Linear) -> nn.Module:
        return self._module(linear)

    def load_linear(self, module: nn.Module, pieces: dict[str, torch.Tensor]) -> None:
        pieces = dict(pieces)
        weight, scb = pieces.pop("weight", None), pieces.pop("SCB", None)
        weight_format = pieces.pop("weight_format", None)
        if weight is None or scb is None:
            raise ValueError("an 8-bit layer needs 'weight' and 'SCB'")
        if pieces:
            raise ValueError(f"unexpected pieces for an 8-bit layer: {sorted(pieces)}")
        if weight.dtype != torch.int8 or tuple(weight.shape) != (module.out_features, module.in_features):
            raise ValueError(
                f"'weight' is {weight.dtype} {tuple(weight.shape)}, expected torch.int8 "
                f"{(module.out_features, module.in_features)}"
            )
        if weight_format is not None and int(weight_format) != 0:
            raise ValueError(f"weight_format {int(weight_format)}: only row-major (0) 8-bit weights are supported")
        module.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False, CB=weight, SCB=scb)


class Bnb4bitQuantizer(_BnbQuantizer):
    """4-bit blockwise quantization (blocks of 64, one absmax each), NF4 or FP4 codes."""

    quant_type: ClassVar[str] = ""

    @classmethod
    def default_config(cls, **options: Any) -> BitsAndBytesConfig:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cls.quant_type, **options)

    def _module(self, linear: nn.Linear) -> Linear4bit:
        return Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=getattr(torch, self.config.bnb_4bit_compute_dtype),
            compress_statistics=self.config.bnb_4bit_use_double_quant,
            quant_type=self.config.bnb_4bit_quant_type,
            quant_storage=torch.uint8,
            device="meta",
        )

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        module = self._module(linear)
        weight = linear.weight.detach()
        module.weight = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            compress_statistics=self.config.bnb_4bit_use_double_quant,
            quant_type=self.config.bnb_4bit_quant_type,
            quant_storage=torch.uint8,
            module=module,
        ).to(weight.device)  # quantizes, on the weight's device
        module.bias = linear.bias
        module.remember_quant_state()
        return module.train(linear.training)

    def empty_linear(self, linear: nn.Linear) -> nn.Module:
        return self._module(linear)

    def load_linear(self, module: nn.Module, pieces: dict[str, torch.Tensor]) -> None:
        pieces = dict(pieces)
        weight = pieces.pop("weight", None)
        if weight is None:
            raise ValueError("a 4-bit layer needs 'weight'")
        stats = {key.removeprefix("weight."): value for key, value in pieces.items()}
        state_keys = [k for k in stats if k.startswith("quant_state.bitsandbytes__")]
        if len(state_keys) != 1 or "absmax" not in stats or "quant_map" not in stats:
            raise ValueError(
                "a 4-bit layer needs 'weight.absmax', 'weight.quant_map' and one "
                f"'weight.quant_state.bitsandbytes__<type>'; found {sorted(pieces)}"
            )
        unknown = set(stats) - _QUANT_STATE_KEYS - set(state_keys)
        if unknown:
            raise ValueError(f"unexpected pieces for a 4-bit layer: {sorted('weight.' + k for k in unknown)}")
        stored_type = state_keys[0].rpartition("__")[2]
        if stored_type != self.config.bnb_4bit_quant_type:
            raise ValueError(f"stored as {stored_type}, but the config says {self.config.bnb_4bit_quant_type}")
        module.weight = bnb.nn.Params4bit.from_prequantized(
            data=weight, quantized_stats=dict(stats), requires_grad=False, device=weight.device, module=module
        )
        shape = tuple(module.weight.quant_state.shape)
        if shape != (module.out_features, module.in_features):
            raise ValueError(f"stored for a {shape} weight, the model has {(module.out_features, module.in_features)}")
        module.remember_quant_state()


class BnbNf4Quantizer(Bnb4bitQuantizer):
    """4-bit NormalFloat: code values at the quantiles of a normal distribution (QLoRA)."""

    name = "bnb_nf4"
    quant_type = "nf4"


class BnbFp4Quantizer(Bnb4bitQuantizer):
    """4-bit floating point (1 sign, 2 exponent, 1 mantissa bits)."""

    name = "bnb_fp4"
    quant_type = "fp4"
