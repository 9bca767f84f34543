"""``PreTrainedModel.from_pretrained``: meta-device construction, then one tensor at a time from disk.

Steps: resolve the source to a directory; read the config (with overrides); locate the weight
files (refusing pickle unless allowed, and index entries that leave the directory); build the
model with its parameters on the meta device (no memory, no random init); map checkpoint names
to parameter names (base <-> head prefixes, legacy LayerNorm gamma/beta); read each tensor
straight into the parameter that keeps it, on the device the device map gives it; initialize
what the checkpoint lacks (with a warning naming it); tie weights.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from modelcore.modeling_utils import init_empty_weights
from modelcore.serialization.checkpoint import CheckpointError, CheckpointFiles
from modelcore.serialization.sources import resolve_source

if TYPE_CHECKING:
    from modelcore.configuration_utils import PretrainedConfig
    from modelcore.modeling_utils import PreTrainedModel

logger = logging.getLogger(__name__)

DTYPE_ALIASES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}
_AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_LEGACY_NAMES = (
    (re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
    (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"),
)


def resolve_dtype(dtype: str | torch.dtype, files: CheckpointFiles, config: PretrainedConfig) -> torch.dtype:
    """``"auto"`` -> the stored dtype (config.json's ``dtype``, else the first floating tensor's)."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    if dtype == "auto":
        stored = DTYPE_ALIASES.get(str(config.dtype).removeprefix("torch.")) if config.dtype else None
        return stored or files.first_float_dtype() or torch.float32
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPE_ALIASES:
        return DTYPE_ALIASES[dtype.removeprefix("torch.")]
    raise ValueError(f"dtype {dtype!r} is not 'auto', a torch.dtype or one of {sorted(DTYPE_ALIASES)}")


def load_pretrained(
    cls: type[PreTrainedModel],
    source: str | os.PathLike,
    *,
    config: PretrainedConfig | None,
    dtype: str | torch.dtype,
    device_map: str | dict[str, Any] | None,
    max_memory: dict[str | int, int | str] | None,
    offload_folder: str | os.PathLike | None,
    ignore_mismatched_sizes: bool,
    allow_pickle: bool,
    attn_implementation: str | None,
    output_loading_info: bool,
    config_overrides: dict[str, Any],
    quantization_config: Any = None,
) -> Any:
    directory = resolve_source(source)
    config = _load_config(cls, directory, config, config_overrides, attn_implementation)
    quantization = _quantization_plan(config, quantization_config)
    files = CheckpointFiles.locate(directory, allow_pickle=allow_pickle)
    target_dtype = resolve_dtype(dtype, files, config)
    config.dtype = str(target_dtype).removeprefix("torch.")

    with init_empty_weights():  # parameters on meta, family init skipped: the checkpoint fills them
        model = cls(config)
    if quantization is not None:
        quantization.before_weights(model)  # a quantized checkpoint: its Linear layers become quantized modules
    expected = _expected_tensors(model)
    rename = _key_renamer(model, list(files.weight_map))
    device_map = _resolve_device_map(model, device_map, max_memory, target_dtype)
    place = _placer(device_map)
    offload = _DiskOffload(offload_folder) if "disk" in device_map.values() else None

    loaded, unexpected, mismatched = set(), [], []
    for path, reader in _progress(files):
        for stored_name in (n for n in reader.keys() if files.weight_map.get(n) == path):
            name = rename(stored_name)
            if quantization is not None and quantization.claims(name):  # weight, SCB, weight.absmax...
                device = place(name)
                quantization.take(
                    name, reader.read(stored_name, device="cpu" if device == "disk" else device, mmap=True)
                )
                continue
            if name not in expected:
                unexpected.append(name)
                continue
            target = expected[name]
            shape = reader.shape(stored_name)
            if shape != target.shape:
                if not ignore_mismatched_sizes:
                    raise CheckpointError(
                        f"{path}: tensor {stored_name!r} has shape {tuple(shape)}, but {cls.__name__} expects "
                        f"{tuple(target.shape)} for {name!r} (pass ignore_mismatched_sizes=True to re-initialize it)"
                    )
                mismatched.append(f"{name}: stored {tuple(shape)}, model {tuple(target.shape)}")
                continue
            _check_dtype_kind(path, stored_name, reader.dtype(stored_name), cls, name, target)
            device = place(name)
            cast = target_dtype if target.is_floating_point() else None
            tensor = reader.read(stored_name, dtype=cast, device="cpu" if device == "disk" else device, mmap=True)
            if device == "disk":
                offload.add(name, tensor, also_as=_tied_targets(model, name))
            else:
                _set_tensor(model, name, tensor)
            loaded.add(name)

    if quantization is not None:
        loaded |= quantization.after_weights()
    missing = [n for n in expected if n not in loaded]
    _initialize_missing(model, missing, target_dtype, place)
    model.tie_weights()
    if quantization is not None:
        model = quantization.after_load(model)  # quantization on load
    _report(cls, directory, missing, unexpected, mismatched, model)
    if offload is not None or len({str(d) for d in device_map.values()}) > 1:
        model = _dispatch(model, device_map, offload)
    elif device_map:
        model.to(next(iter(device_map.values())))  # moves the (small) buffers to the weights' device
    model.eval()
    _attach_generation_config(model, directory)
    if output_loading_info:
        return model, {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}
    return model


def _attach_generation_config(model: Any, directory: Path) -> None:
    """A generative model loaded from a folder with ``generation_config.json`` decodes with those settings."""
    from modelcore.generation.configuration import GENERATION_CONFIG_NAME, GenerationConfig

    if hasattr(model, "generate") and (directory / GENERATION_CONFIG_NAME).is_file():
        model.generation_config = GenerationConfig.from_pretrained(directory)


# ------------------------------------------------------------------- config
def _load_config(
    cls: type[PreTrainedModel],
    directory: Path,
    config: PretrainedConfig | None,
    overrides: dict[str, Any],
    attn_implementation: str | None,
) -> PretrainedConfig:
    if attn_implementation is not None:
        overrides = {**overrides, "attn_implementation": attn_implementation}
    if config is None:
        return cls.config_class.from_pretrained(directory, **overrides)
    if not isinstance(config, cls.config_class):
        raise TypeError(f"{cls.__name__} expects a {cls.config_class.__name__}, got {type(config).__name__}")
    if not overrides:
        return config
    return type(config).from_dict(config.to_dict(), **{"attn_implementation": config.attn_implementation, **overrides})


def _quantization_plan(config: PretrainedConfig, requested: Any) -> Any:
    """modelcore.quantization's plan when the checkpoint is quantized or quantization was asked for, else None."""
    if requested is None and getattr(config, "quantization_config", None) is None:
        return None
    from modelcore.quantization.loading import plan_for_loading

    return plan_for_loading(config, requested)


# ------------------------------------------------------------------- names
def _expected_tensors(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers the checkpoint should provide (tied targets excluded)."""
    tied = set(model._tied_weights_keys) if model.config.tie_word_embeddings else set()
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in tied}


def _key_renamer(model: PreTrainedModel, stored: list[str]) -> Callable[[str], str]:
    """Map checkpoint names to model names: legacy LayerNorm names, base <-> head prefixes."""
    prefix = model.base_model_prefix + "."
    model_keys = set(model.state_dict())
    stored_has_prefix = any(k.startswith(prefix) for k in stored)
    model_has_prefix = any(k.startswith(prefix) for k in model_keys)

    def rename(name: str) -> str:
        for pattern, new in _LEGACY_NAMES:
            name = pattern.sub(new, name)
        if model_has_prefix and not stored_has_prefix and prefix + name in model_keys:
            return prefix + name  # bare-model checkpoint into a model with a head
        if stored_has_prefix and not model_has_prefix and name.startswith(prefix):
            return name[len(prefix) :]  # checkpoint with a head into the bare model
        return name

    return rename


def _check_dtype_kind(
    path: Path, stored_name: str, stored: torch.dtype, cls: type[PreTrainedModel], name: str, target: torch.Tensor
) -> None:
    """Refuse a stored tensor whose kind (floating point or not) is not what the model uses it as.

    Floating-point tensors are converted to the model's dtype on load; integers and booleans are
    not, and casting between the two kinds would turn bits into other numbers silently.
    """
    if stored.is_floating_point == target.is_floating_point():
        return
    kind = "floating-point" if target.is_floating_point() else "integer/boolean"
    raise CheckpointError(
        f"{path}: tensor {stored_name!r} is stored as {stored}, but {cls.__name__} uses {name!r} as a {kind} "
        f"tensor ({target.dtype}); refusing to cast it (the file does not belong to this model, or is corrupt)"
    )


def _tied_targets(model: PreTrainedModel, source: str) -> list[str]:
    if not model.config.tie_word_embeddings:
        return []
    return [target for target, src in model._tied_weights_keys.items() if src == source]


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=module._parameters[attr].requires_grad)
    else:
        module._buffers[attr] = tensor


def _initialize_missing(
    model: PreTrainedModel, missing: list[str], dtype: torch.dtype, place: Callable[[str], Any]
) -> None:
    """Materialize what the checkpoint lacked and run the family's init on the modules holding it."""
    if not missing:
        return
    modules: dict[str, nn.Module] = {}
    for name in missing:
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        old = module._parameters.get(attr)
        old = old if old is not None else module._buffers[attr]
        device = place(name)
        device = "cpu" if device == "disk" else device
        _set_tensor(
            model, name, torch.empty(old.shape, dtype=dtype if old.is_floating_point() else old.dtype, device=device)
        )
        modules[module_name] = module
    with torch.no_grad():
        for module_name, module in modules.items():
            keep = {  # loaded siblings survive the module's init
                k: v.detach().clone()
                for k, v in module.named_parameters(recurse=False)
                if f"{module_name}.{k}".lstrip(".") not in missing
            }
            model._init_weights(module)
            for k, v in keep.items():
                getattr(module, k).copy_(v)


def _report(
    cls: type[PreTrainedModel],
    directory: Path,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
    model: PreTrainedModel,
) -> None:
    def ignorable(patterns: list[str], names: list[str]) -> list[str]:
        return [n for n in names if not any(re.search(p, n) for p in patterns)]

    tied = list(model._tied_weights_keys) if model.config.tie_word_embeddings else []
    unexpected[:] = ignorable(cls._keys_to_ignore_on_load_unexpected + [re.escape(t) for t in tied], unexpected)
    missing[:] = ignorable(cls._keys_to_ignore_on_load_missing, missing)
    if unexpected:
        logger.warning("%s: weights not used by %s: %s", directory, cls.__name__, _abbrev(unexpected))
    if missing:
        logger.warning(
            "%s: weights of %s not in the checkpoint, newly initialized (train before use): %s",
            directory,
            cls.__name__,
            _abbrev(missing),
        )
    if mismatched:
        logger.warning("%s: shape mismatch, re-initialized: %s", directory, _abbrev(mismatched))


def _abbrev(names: list[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (f" ... (+{len(names) - limit})" if len(names) > limit else "")


def _progress(files: CheckpointFiles) -> Iterator[tuple[Path, Any]]:
    from tqdm.auto import tqdm

    return iter(tqdm(files.iter_files(), total=len(files.files), desc="Loading shards", disable=len(files.files) < 2))


# ------------------------------------------------------------------ devices
def _resolve_device_map(
    model: PreTrainedModel,
    device_map: str | dict[str, Any] | None,
    max_memory: dict[str | int, int | str] | None,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """Normalize ``device_map`` to {module prefix: device | "disk"}."""
    if device_map is None:
        return {}
    if isinstance(device_map, dict):
        return {k: _device(v) for k, v in device_map.items()}
    if device_map in _AUTO_MAPS:
        from accelerate import infer_auto_device_map
        from accelerate.utils import get_balanced_memory

        if device_map != "sequential" and torch.cuda.device_count() > 1:
            max_memory = get_balanced_memory(
                model, max_memory, no_split_module_classes=model._no_split_modules, dtype=dtype
            )
        model.tie_weights()  # accelerate finds tied weights by shared parameters, and warns when it finds none
        inferred = infer_auto_device_map(
            model, max_memory=max_memory, no_split_module_classes=model._no_split_modules, dtype=dtype
        )
        return {k: _device(v) for k, v in inferred.items()}
    return {"": _device(device_map)}


def _device(value: Any) -> torch.device | str:
    if value == "disk":
        return "disk"
    try:
        return torch.device(value)  # ints are CUDA ordinals, as in accelerate
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device_map value {value!r} is not a device, 'cpu' or 'disk'") from err


def _placer(device_map: dict[str, Any]) -> Callable[[str], Any]:
    if not device_map:
        return lambda name: torch.device("cpu")
    prefixes = sorted(device_map, key=len, reverse=True)

    def place(name: str) -> Any:
        for prefix in prefixes:
            if prefix == "" or name == prefix or name.startswith(prefix + "."):
                return device_map[prefix]
        raise ValueError(f"device_map has no entry covering {name!r} (add one for it or a parent module, or '')")

    return place


class _DiskOffload:
    """Weights mapped to "disk": written in accelerate's offload format, loaded back on use."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self._tmp = None if folder else tempfile.TemporaryDirectory(prefix="modelcore-offload-")
        self.folder = str(folder or self._tmp.name)
        os.makedirs(self.folder, exist_ok=True)
        self.index: dict[str, Any] = {}

    def add(self, name: str, tensor: torch.Tensor, also_as: list[str]) -> None:
        from accelerate.utils import offload_weight

        for key in [name, *also_as]:  # a tied weight is looked up under each of its names
            offload_weight(tensor, key, self.folder, index=self.index)


def _dispatch(model: PreTrainedModel, device_map: dict[str, Any], offload: _DiskOffload | None) -> PreTrainedModel:
    from accelerate import dispatch_model
    from accelerate.utils import save_offload_index

    accelerate_map = {k: ("disk" if v == "disk" else str(v)) for k, v in device_map.items()}
    if offload is not None:
        save_offload_index(offload.index, offload.folder)
        model._offload_tmpdir = offload._tmp  # keep the temp folder alive as long as the model
        logger.info("%d tensors offloaded to disk in %s (read back layer by layer)", len(offload.index), offload.folder)
    _install_offload_notice_filter()
    token = _dispatching.set(True)
    try:
        return dispatch_model(model, device_map=accelerate_map, offload_dir=offload.folder if offload else None)
    finally:
        _dispatching.reset(token)


# accelerate warns that offloaded parameters sit on the meta device: true of every disk offload, which the user asked
# for and our INFO line above reports; the filter drops that one message while modelcore dispatches in this context.
_OFFLOAD_NOTICE = "Some parameters are on the meta device because they were offloaded"
_dispatching: contextvars.ContextVar[bool] = contextvars.ContextVar("modelcore_dispatching", default=False)


class _OffloadNoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_dispatching.get() and record.getMessage().startswith(_OFFLOAD_NOTICE))


def _install_offload_notice_filter() -> None:
    accelerate_logger = logging.getLogger("accelerate.big_modeling")
    if not any(isinstance(existing, _OffloadNoticeFilter) for existing in accelerate_logger.filters):
        accelerate_logger.addFilter(_OffloadNoticeFilter())
