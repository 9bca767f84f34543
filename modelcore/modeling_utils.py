"""PreTrainedModel: the base of every model, with the Hugging Face checkpoint layout.

Subclass contract (a family's model file):

* class attributes: ``config_class``; ``base_model_prefix`` (attribute name of the bare model
  inside heads: "model" for Llama, "bert" for BERT); ``_no_split_modules`` (block class names
  that device maps keep whole); ``_tied_weights_keys`` mapping a tied parameter's full name to
  its source, e.g. ``{"lm_head.weight": "model.embed_tokens.weight"}`` (tied only when
  ``config.tie_word_embeddings``); ``_keys_to_ignore_on_load_unexpected`` and
  ``_keys_to_ignore_on_load_missing`` (regexes of checkpoint keys that are fine to drop / lack).
* ``__init__(self, config)`` calls ``super().__init__(config)`` first, builds submodules and ends
  with ``self.post_init()``, which applies ``_init_weights`` to every module and ties weights.
* ``_init_weights(self, module)`` initializes one module the way the family's checkpoints were, including
  the non-persistent buffers it computes at construction (position ids...): a model built on the meta
  device by ``from_pretrained`` gets those buffers from it (or the module computes them on the CPU itself
  when ``torch.get_default_device()`` is meta, as ``RotaryEmbedding`` does).
* ``get_input_embeddings`` / ``set_input_embeddings``; LM heads also ``get_output_embeddings``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from modelcore.configuration_utils import CONFIG_NAME, PretrainedConfig
from modelcore.generation.configuration import GENERATION_CONFIG_NAME
from modelcore.serialization.checkpoint import save_state_dict

logger = logging.getLogger(__name__)

# True while a model is built only to be filled from a checkpoint: post_init then skips the init.
_building_empty: contextvars.ContextVar[bool] = contextvars.ContextVar("modelcore_building_empty", default=False)


@contextlib.contextmanager
def init_empty_weights() -> Iterator[None]:
    """Build models with every tensor on the meta device and no weight init; computed buffers are made real.

    Construction runs under ``torch.device("meta")``, so a parameter never exists on the CPU: building a
    model of any size allocates nothing (its weights come from a checkpoint afterwards). Buffers that are
    never in a checkpoint (non-persistent: BERT's position ids, rotary ``inv_freq``) are materialized on the
    CPU by ``post_init`` and filled by the family's ``_init_weights``; modules that compute such a buffer on
    the CPU themselves when the default device is meta (``RotaryEmbedding``) keep theirs as computed.
    The device context is per thread, like the flag ``post_init`` reads, so a model built meanwhile in
    another thread is built as usual.
    """
    token = _building_empty.set(True)
    try:
        with _torch_init_skipped(), torch.device("meta"):
            yield
    finally:
        _building_empty.reset(token)


_TORCH_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)
_init_patch_lock = threading.Lock()
_init_patch_users = 0
_original_init_functions: dict[str, Callable[..., torch.Tensor]] = {}


@contextlib.contextmanager
def _torch_init_skipped() -> Iterator[None]:
    """Make torch's ``nn.init`` functions no-ops for code building under ``init_empty_weights``.

    torch's own ``reset_parameters()`` would run random init on meta tensors, which is wasted work and
    imports torch._dynamo (about 2 s) on first use. The functions are replaced while any thread builds
    empty, by wrappers that skip only where ``_building_empty`` is set (a context variable, so per thread):
    a model initialized at the same time in another thread is initialized as usual.
    """
    global _init_patch_users
    with _init_patch_lock:
        if _init_patch_users == 0:
            for name in _TORCH_INIT_FUNCTIONS:
                _original_init_functions[name] = getattr(nn.init, name)
                setattr(nn.init, name, _skipping(_original_init_functions[name]))
        _init_patch_users += 1
    try:
        yield
    finally:
        with _init_patch_lock:
            _init_patch_users -= 1
            if _init_patch_users == 0:
                for name, function in _original_init_functions.items():
                    setattr(nn.init, name, function)
                _original_init_functions.clear()


def _skipping(init_function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(init_function)
    def skip_while_building_empty(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if _building_empty.get():
            return tensor
        return init_function(tensor, *args, **kwargs)

    return skip_while_building_empty


def _materialize_computed_buffers(model: PreTrainedModel) -> None:
    """Give the meta non-persistent buffers of ``model`` real CPU storage and their values, from ``_init_weights``.

    Those buffers are computed at construction (never loaded), so building on the meta device loses their
    values. Each is allocated filled with a sentinel; the family's ``_init_weights`` on the module holding it
    must overwrite it (the subclass contract), which is checked.
    """
    pending: list[tuple[str, nn.Module, str]] = []
    for module_name, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_meta and name in module._non_persistent_buffers_set:
                module._buffers[name] = _sentinel_like(buffer)
                pending.append((module_name, module, name))
    if not pending:
        return
    with torch.device("cpu"), torch.no_grad():
        for module in {id(m): m for _, m, _ in pending}.values():
            model._init_weights(module)
    for module_name, module, name in pending:
        if _untouched(module._buffers[name]):
            raise RuntimeError(
                f"{type(model).__name__}._init_weights left the buffer {module_name}.{name} unset: a model built "
                "on the meta device (from_pretrained) needs it to compute its non-persistent buffers"
            )


def _untouched(buffer: torch.Tensor | None) -> bool:
    """Whether every element of ``buffer`` still holds the sentinel of ``_sentinel_like``."""
    if buffer is None or buffer.is_meta or buffer.numel() == 0:
        return False
    if buffer.is_floating_point() or buffer.is_complex():
        return bool(torch.isnan(buffer).all())
    return torch.equal(buffer, _sentinel_like(buffer))


def _sentinel_like(buffer: torch.Tensor) -> torch.Tensor:
    """A CPU tensor shaped like ``buffer``, filled with a value no computed buffer holds everywhere."""
    if buffer.is_floating_point() or buffer.is_complex():
        value: float | int | bool = float("nan")
    elif buffer.dtype == torch.bool:
        value = True
    else:
        value = torch.iinfo(buffer.dtype).min
    return torch.full(buffer.shape, value, dtype=buffer.dtype, device="cpu")


class PreTrainedModel(nn.Module):
    config_class: ClassVar[type[PretrainedConfig]] = PretrainedConfig
    base_model_prefix: ClassVar[str] = ""
    _no_split_modules: ClassVar[list[str]] = []
    _tied_weights_keys: ClassVar[dict[str, str]] = {}
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = []
    _keys_to_ignore_on_load_missing: ClassVar[list[str]] = []
    supports_gradient_checkpointing: ClassVar[bool] = False

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        config.check_sizes()  # the config may have been changed since it was validated: refuse before allocating
        self.config = config

    # ------------------------------------------------------------ init & tying
    def post_init(self) -> None:
        """Initialize every module's weights, then tie the weights the config asks to tie.

        Under ``init_empty_weights`` the weights stay uninitialized on the meta device; only the computed
        (non-persistent) buffers are made real, by ``_init_weights`` on the modules holding them.
        """
        if _building_empty.get():
            _materialize_computed_buffers(self)
        else:
            self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialize one module; families override this."""

    def tie_weights(self) -> None:
        """Make each tied parameter the very same tensor as its source."""
        if not self.config.tie_word_embeddings:
            return
        for target, source in self._tied_weights_keys.items():
            parent_name, _, attr = target.rpartition(".")
            parent = self.get_submodule(parent_name)
            setattr(parent, attr, self.get_parameter(source))

    def get_input_embeddings(self) -> nn.Module:
        base = getattr(self, self.base_model_prefix, None)
        if base is None or base is self:
            raise NotImplementedError(f"{type(self).__name__} does not define get_input_embeddings")
        return base.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        base = getattr(self, self.base_model_prefix, None)
        if base is None or base is self:
            raise NotImplementedError(f"{type(self).__name__} does not define set_input_embeddings")
        base.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return None

    # ------------------------------------------------------------ introspection
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Count parameters, each shared (tied) tensor once."""
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        seen: set[int] = set()
        total = 0
        for p in self.parameters():  # parameters() already yields a shared tensor once
            if (only_trainable and not p.requires_grad) or (exclude_embeddings and id(p) in embeddings):
                continue
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    def extra_repr(self) -> str:
        return f"params={self.num_parameters():,}"

    def gradient_checkpointing_enable(self) -> None:
        if not self.supports_gradient_checkpointing:
            raise ValueError(f"{type(self).__name__} does not support gradient checkpointing")
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False

    # ------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | os.PathLike, max_shard_size: int | str = "10GB") -> Path:
        """Write ``config.json``, the weights as safetensors (sharded past ``max_shard_size``) and, when the model
        has one, ``generation_config.json``.

        Tied weights are stored once. The save is one transaction (``save_state_dict``): killed at any
        point, the directory holds the previous checkpoint or this one, config.json included; weight
        files of an earlier save that the new layout does not use are removed.

        Args:
            save_directory: created if needed.
            max_shard_size: bytes per shard, an int or a string such as ``"5GB"`` / ``"500MB"``.

        Returns:
            The directory.
        """
        directory = Path(save_directory)
        state = self._state_dict_for_saving()
        self.config.architectures = [type(self).__name__]
        self.config.dtype = str(self.dtype).removeprefix("torch.")
        # config.json switches with the weights in one transaction: a killed re-save never pairs them wrongly
        extra_files = {CONFIG_NAME: self.config.to_json_string()}
        generation_config = getattr(self, "generation_config", None)
        if generation_config is not None:
            extra_files[GENERATION_CONFIG_NAME] = generation_config.to_json_string()
        save_state_dict(state, directory, max_shard_size, extra_files=extra_files)
        return directory

    def _state_dict_for_saving(self) -> dict[str, torch.Tensor]:
        """The state dict with each shared tensor once (tied targets dropped, sources kept)."""
        tied = set(self._tied_weights_keys) if self.config.tie_word_embeddings else set()
        state: dict[str, torch.Tensor] = {}
        seen: dict[tuple[int, int], str] = {}
        for name, tensor in self.state_dict().items():
            if name in tied:
                continue
            if tensor.device.type == "meta":
                raise ValueError(f"cannot save {name!r}: it is on the meta device (offloaded or never loaded)")
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
            if key in seen and tensor.numel():
                logger.debug("%s shares storage with %s; stored once", name, seen[key])
                continue
            seen[key] = name
            state[name] = tensor
        return state

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        *,
        config: PretrainedConfig | None = None,
        dtype: str | torch.dtype = "auto",
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[str | int, int | str] | None = None,
        offload_folder: str | os.PathLike | None = None,
        ignore_mismatched_sizes: bool = False,
        allow_pickle: bool = False,
        attn_implementation: str | None = None,
        output_loading_info: bool = False,
        quantization_config: Any = None,
        **config_overrides: Any,
    ) -> PreTrainedModel | tuple[PreTrainedModel, dict[str, list[str]]]:
        """Build the model on the meta device and fill it from a checkpoint, one tensor at a time.

        Peak memory stays near one copy of the weights: each tensor is read from the file
        straight into the parameter that keeps it.

        Args:
            source: a checkpoint directory (Hugging Face layout) or an asset name.
            config: use this configuration instead of the checkpoint's ``config.json``.
            dtype: ``"auto"`` keeps the stored dtype; or a ``torch.dtype`` / name (``"bfloat16"``).
            device_map: None or ``"cpu"``; a device (``"cuda:0"``); ``"auto"`` to fill the fastest
                devices first, then CPU, then disk (bounded by ``max_memory``); or a dict of module
                name prefix -> device / ``"cpu"`` / ``"disk"``.
            max_memory: per-device budgets for ``device_map="auto"``, e.g. ``{"cpu": "2GB"}``.
            offload_folder: where weights mapped to ``"disk"`` go (default: a temp folder).
            ignore_mismatched_sizes: re-initialize weights whose stored shape differs instead of failing.
            allow_pickle: allow ``pytorch_model.bin`` files (loaded with ``weights_only=True``).
            attn_implementation: ``"eager"`` or ``"sdpa"``.
            output_loading_info: also return ``{"missing_keys", "unexpected_keys", "mismatched_keys"}``.
            quantization_config: quantize on load: a method name (``"bnb_nf4"``, ``"bnb_8bit"``,
                ``"int8_dynamic"``...), a ``quantization_config`` dict or a
                ``modelcore.quantization`` config. A checkpoint saved quantized loads quantized
                without it (its config.json records how); asking it for another method is an error.
            **config_overrides: configuration fields to override (an unknown name is an error).

        Returns:
            The model in eval mode (and the loading info when asked).
        """
        from modelcore.serialization.loading import load_pretrained

        return load_pretrained(
            cls,
            source,
            config=config,
            dtype=dtype,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            allow_pickle=allow_pickle,
            attn_implementation=attn_implementation,
            output_loading_info=output_loading_info,
            config_overrides=config_overrides,
            quantization_config=quantization_config,
        )
