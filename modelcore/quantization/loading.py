"""How ``from_pretrained`` loads quantized: a checkpoint saved quantized, or quantization on load.

``serialization.loading.load_pretrained`` asks ``plan_for_loading`` for a plan whenever the
checkpoint's config has a ``quantization_config`` or the caller passed one, then calls it at four
points of its loop:

1. ``before_weights(model)``: for a quantized checkpoint, the targeted Linear layers of the model
   (still on the meta device) become empty quantized modules;
2. ``claims(name)`` / ``take(name, tensor)``: their stored pieces (``weight``, ``SCB``,
   ``weight.absmax``...) are handed to the plan instead of being set as parameters;
3. ``after_weights()``: each quantized module is built from its pieces
   (bitsandbytes 4-bit through ``Params4bit.from_prequantized``);
4. ``after_load(model)``: when quantizing on load, the loaded full-precision Linear layers are
   quantized one by one (each weight is read from the memory-mapped file only then, so the peak
   stays near the quantized model plus one layer).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from modelcore.quantization.base import (
    AlreadyQuantizedError,
    Quantizer,
    describe,
    set_submodule,
    target_linears,
)
from modelcore.quantization.registry import get_quantizer

if TYPE_CHECKING:
    from modelcore.configuration_utils import PretrainedConfig
    from modelcore.modeling_utils import PreTrainedModel

logger = logging.getLogger(__name__)


def plan_for_loading(config: PretrainedConfig, requested: Any) -> QuantizedLoad:
    """The plan for a checkpoint whose config is ``config``, loaded with ``quantization_config=requested``.

    Raises:
        AlreadyQuantizedError: the checkpoint is quantized and ``requested`` asks for another quantization.
        ValueError: an unknown method or a bad config.
    """
    stored = getattr(config, "quantization_config", None)
    if stored is None:
        return QuantizedLoad(get_quantizer(requested), prequantized=False)
    quantizer = get_quantizer(stored)
    if requested is not None:
        wanted = get_quantizer(requested).config
        if not _same_method(wanted.to_dict(), quantizer.config.to_dict()):
            raise AlreadyQuantizedError(
                f"this checkpoint is already quantized with {describe(stored)}; cannot quantize it again with "
                f"{wanted.method}: load it without quantization_config, or quantize the full-precision original"
            )
    return QuantizedLoad(quantizer, prequantized=True)


def _same_method(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal configs, ignoring the skip patterns (a stored config has them resolved, a requested one may not)."""
    ignore = ("llm_int8_skip_modules", "modules_to_not_convert")
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


class QuantizedLoad:
    """The quantization side of one ``from_pretrained`` call (see the module docstring)."""

    def __init__(self, quantizer: Quantizer, prequantized: bool) -> None:
        self.quantizer = quantizer
        self.prequantized = prequantized
        self._modules: dict[str, nn.Module] = {}
        self._pieces: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)

    def before_weights(self, model: PreTrainedModel) -> None:
        if not self.prequantized:
            return
        for name, linear in target_linears(model, self.quantizer.config.skip_modules):
            module = self.quantizer.empty_linear(linear)
            set_submodule(model, name, module)
            self._modules[name] = module

    def claims(self, name: str) -> bool:
        """Whether a stored tensor (model name) is a piece of a quantized module; the bias loads as usual."""
        module, key = self._split(name)
        return module is not None and key != "bias"

    def take(self, name: str, tensor: torch.Tensor) -> None:
        module, key = self._split(name)
        self._pieces[module][key] = tensor

    def after_weights(self) -> set[str]:
        """Build each quantized module; return the parameter names now filled (for the missing-keys report)."""
        filled = set()
        for name, module in self._modules.items():
            pieces = self._pieces.pop(name, {})
            if not pieces:
                raise ValueError(
                    f"the checkpoint is quantized with {self.quantizer.name}, but holds no quantized weight for {name!r}"
                )
            try:
                self.quantizer.load_linear(module, pieces)
            except (KeyError, ValueError) as err:
                raise ValueError(f"quantized module {name!r}: {err}") from err
            filled.update(f"{name}.{key}" for key in pieces)
        return filled

    def after_load(self, model: PreTrainedModel) -> PreTrainedModel:
        if self.prequantized:
            return model
        logger.info("quantizing %s with %s on load", type(model).__name__, self.quantizer.name)
        return self.quantizer.quantize(model)

    def _split(self, name: str) -> tuple[str | None, str]:
        """``"a.b.query.weight.absmax"`` -> (``"a.b.query"``, ``"weight.absmax"``) when ``a.b.query`` is quantized."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in self._modules:
                return prefix, ".".join(parts[i:])
        return None, name
