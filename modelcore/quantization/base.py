"""What every quantization method shares: which Linear layers it swaps, and the Quantizer contract.

A method quantizes by replacing ``nn.Linear`` modules with its own quantized modules, either
from a loaded full-precision model (``Quantizer.quantize``) or, for a checkpoint saved quantized,
as empty modules on the meta device that the loader fills from the stored pieces
(``Quantizer.empty_linear`` + ``Quantizer.load_linear``). The task head (the Linear layers
outside the base model) and tied output embeddings stay in full precision unless the config
names the modules to skip itself.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from modelcore.quantization.config import QuantizationConfig

if TYPE_CHECKING:
    from modelcore.modeling_utils import PreTrainedModel

QUANTIZATION_CONFIG_KEY = "quantization_config"


class AlreadyQuantizedError(ValueError):
    """The model or checkpoint is quantized already; quantize its full-precision original instead."""


class Quantizer:
    """One quantization method.

    Subclasses set ``name`` (the registry name), ``config_class``, and implement
    ``default_config``, ``quantize_linear``, ``empty_linear`` and ``load_linear``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[QuantizationConfig]] = QuantizationConfig

    def __init__(self, config: QuantizationConfig) -> None:
        if not isinstance(config, self.config_class) or config.method != self.name:
            raise ValueError(f"{type(self).__name__} ({self.name}) cannot use {config!r}")
        self.config = config

    @classmethod
    def default_config(cls, **options: Any) -> QuantizationConfig:
        """The method's configuration, with ``options`` (config fields) applied."""
        raise NotImplementedError

    # ------------------------------------------------------------- quantize
    def quantize(self, model: PreTrainedModel) -> PreTrainedModel:
        """Replace the model's Linear layers by quantized ones, in place, and record the config.

        Raises:
            AlreadyQuantizedError: the model is quantized already.
        """
        ensure_not_quantized(model)
        config = self.resolved_config(model)
        with torch.no_grad():
            for name, linear in target_linears(model, config.skip_modules):
                if linear.weight.device.type == "meta":
                    raise ValueError(f"cannot quantize {name!r}: its weight is on the meta device (offloaded to disk?)")
                set_submodule(model, name, self.quantize_linear(linear))
        set_quantization_config(model, config)
        return model

    def resolved_config(self, model: PreTrainedModel) -> QuantizationConfig:
        """The config with the skip patterns made explicit, as config.json stores it."""
        patterns = self.config.skip_modules
        return self.config.with_skip_modules(default_skip_modules(model) if patterns is None else patterns)

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        """A quantized module computing what ``linear`` computes (on ``linear``'s device)."""
        raise NotImplementedError

    # ------------------------------------------------- quantized checkpoints
    def empty_linear(self, linear: nn.Linear) -> nn.Module:
        """A quantized module shaped like ``linear``, with nothing allocated, for the loader to fill."""
        raise NotImplementedError

    def load_linear(self, module: nn.Module, pieces: dict[str, torch.Tensor]) -> None:
        """Fill an ``empty_linear`` module from its stored tensors (keys relative to the module, bias excluded).

        Raises:
            ValueError: pieces are missing or do not match the config.
        """
        raise NotImplementedError


# ---------------------------------------------------------------- selection
def matches_any(name: str, patterns: list[str]) -> bool:
    """transformers' rule: a pattern matches from the start up to a module boundary (also as a regex), or as a suffix.

    ``"layer.1"`` matches ``"layer.1.attn"`` but not ``"layer.11.attn"``; ``"fc1"`` matches
    ``"model.layers.3.fc1"``.
    """
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    return any(re.match(rf"(?:{p}){boundary}", name) or name.endswith(p) for p in patterns)


def default_skip_modules(model: PreTrainedModel) -> list[str]:
    """The Linear layers kept in full precision by default: the task head and tied output embeddings."""
    prefix = model.base_model_prefix
    has_head = bool(prefix) and isinstance(getattr(model, prefix, None), nn.Module)
    skip = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        in_head = has_head and not (name == prefix or name.startswith(prefix + "."))
        if in_head or module is model.get_output_embeddings():
            skip.append(name)
    if model.config.tie_word_embeddings:
        skip += [target.rpartition(".")[0] for target in model._tied_weights_keys]
    return sorted(set(skip))


def target_linears(model: nn.Module, skip: list[str] | None) -> list[tuple[str, nn.Linear]]:
    """The plain ``nn.Linear`` modules (subclasses excluded, as transformers does) not matched by ``skip``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not matches_any(name, skip or [])
    ]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


# ------------------------------------------------------------------- state
def quantization_config_of(model: PreTrainedModel) -> dict[str, Any] | None:
    """The ``quantization_config`` dict of a model's config (None for a full-precision model)."""
    value = getattr(model.config, QUANTIZATION_CONFIG_KEY, None)
    if isinstance(value, QuantizationConfig):
        return value.to_dict()
    return value


def set_quantization_config(model: PreTrainedModel, config: QuantizationConfig) -> None:
    """Record ``config`` in the model's config, so ``save_pretrained`` writes it to config.json."""
    # A key PretrainedConfig does not model: kept in its extra keys, which config.json writes back.
    data = config.to_dict()
    model.config._extra[QUANTIZATION_CONFIG_KEY] = data
    object.__setattr__(model.config, QUANTIZATION_CONFIG_KEY, data)


def is_quantized(model: nn.Module) -> bool:
    """Whether the model holds quantized modules or its config records a quantization."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, QUANTIZATION_CONFIG_KEY, None) is not None:
        return True
    return any(_is_quantized_module(m) for m in model.modules())


def _is_quantized_module(module: nn.Module) -> bool:
    module_name = type(module).__module__
    return getattr(module, "quantized_by", None) is not None or module_name.startswith(
        ("bitsandbytes.", "torch.ao.nn.quantized", "torchao.")
    )


def ensure_not_quantized(model: nn.Module) -> None:
    """Raise ``AlreadyQuantizedError`` naming the method when the model is quantized already."""
    if not is_quantized(model):
        return
    config = getattr(getattr(model, "config", None), QUANTIZATION_CONFIG_KEY, None)
    how = f" with {describe(config)}" if config is not None else ""
    raise AlreadyQuantizedError(
        f"{type(model).__name__} is already quantized{how}; quantizing it again would stack the errors "
        "of two quantizations: quantize the full-precision checkpoint instead"
    )


def describe(config: dict[str, Any] | QuantizationConfig) -> str:
    """``"bnb_nf4"``, or the quant_method of a config we do not know."""
    try:
        return QuantizationConfig.from_dict(config).method if isinstance(config, dict) else config.method
    except ValueError:
        return f"quant_method {config.get('quant_method')!r}" if isinstance(config, dict) else repr(config)
