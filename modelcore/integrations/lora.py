"""LoRA adapters through the ``peft`` library, on any modelcore model (or torch module).

``add_lora`` injects peft's LoRA layers around the ``nn.Linear`` modules whose names end with one of the target
names, in place: the model keeps its class, its ``forward`` and its ``save_pretrained``, and only the adapter
weights train. ``save_adapter`` writes them in peft's standard layout (``adapter_config.json`` +
``adapter_model.safetensors``, loadable by ``peft.PeftModel.from_pretrained`` on the same base), and
``merge_lora`` folds them into the base weights, giving back plain ``nn.Linear`` layers: a checkpoint that
loads with no peft at all, for export and registration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from modelcore.errors import ConfigError

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"
PEFT_PREFIX = "base_model.model."


def add_lora(model: nn.Module, target_modules: list[str], r: int = 8, alpha: int = 16, dropout: float = 0.05) -> Any:
    """Wrap ``model``'s target linears with LoRA adapters (in place) and freeze everything else.

    Args:
        model: the model to adapt.
        target_modules: module names (or name suffixes) of the ``nn.Linear`` layers to adapt (``q_proj``, ...).
        r: the adapters' rank.
        alpha: the scale numerator (the update is ``alpha / r * B @ A``).
        dropout: dropout on the adapters' input.

    Returns:
        the peft ``LoraConfig`` used (to save with the adapter).

    Raises:
        ConfigError: a target that names no ``nn.Linear`` of the model (the message lists the linear names).
    """
    from peft import LoraConfig, inject_adapter_in_model

    linears = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    missing = [t for t in target_modules if t.rsplit(".", 1)[-1] not in linears]
    if not target_modules or missing:
        raise ConfigError(
            f"LoRA target modules {missing or target_modules} match no linear layer of {type(model).__name__}; "
            f"its linear layers are named {linears}"
        )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA r=%d on %s: %d of %d parameters train (%.2f%%)",
        r,
        target_modules,
        trainable,
        total,
        100 * trainable / total,
    )
    return config


def save_adapter(model: nn.Module, config: Any, directory: str | Path, base_model: str | None = None) -> Path:
    """Write the adapters of ``model`` in peft's layout: ``adapter_config.json`` and ``adapter_model.safetensors``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    # names as a PeftModel saves them: its wrapper and the tuner sit above the model ("base_model.model.")
    tensors = {PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    if base_model is not None:
        config.base_model_name_or_path = base_model
    config.save_pretrained(str(directory))
    return directory


def load_adapter(model: nn.Module, directory: str | Path) -> None:
    """Load adapters saved by :func:`save_adapter` (peft's layout) into ``model``, which ``add_lora`` prepared
    with the same targets and rank.

    Raises:
        ConfigError: the file's adapter tensors do not fit the model's (other targets or rank), naming them.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / "adapter_model.safetensors"
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(str(path)).items()}
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise ConfigError(f"{path}: adapters do not fit the model (missing {missing[:4]}, unexpected {unexpected[:4]})")


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base weight and put the plain ``nn.Linear`` back (in place; returns it)."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)  # refuses an adapter that would put NaN or inf into the weights
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model
