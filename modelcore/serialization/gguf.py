"""GGUF checkpoints (llama.cpp's one-file format), dequantized on load.

A GGUF file holds key/value metadata (``general.architecture``, ``llama.block_count``, the tokenizer's
vocabulary, ...) and tensors under llama.cpp's names (``blk.0.attn_q.weight``), most of them
block-quantized (Q4_1, Q8_0, Q4_K, ...). Both are read with the ``gguf`` package (the optional extra
``modelcore[gguf]``), imported on first use:

* :func:`gguf_config_dict` turns the metadata into a Hugging Face ``config.json`` dict;
* :class:`GGUFFile` reads the tensors with the interface of ``SafetensorsFile`` (``keys``, ``shape``,
  ``dtype``, ``read``) under Hugging Face names, dequantizing each on read and undoing the row
  permutation llama.cpp's converter applies to the query and key projections. ``from_pretrained``'s
  loader fills a model from it one tensor at a time, as from a safetensors shard.

Only the Llama architecture is mapped (llama.cpp writes Llama, SmolLM, TinyLlama, Mistral, ... as
``llama``); per-frequency rotary factors (``rope_freqs.weight``, Llama 3.1+) and mixtures of experts
are refused rather than loaded wrong.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelcore.serialization.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"

# llama.cpp metadata key (after "<arch>.") -> LlamaConfig field
_LLAMA_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.key_length": "head_dim",
    "rope.freq_base": "rope_theta",
    "vocab_size": "vocab_size",
}
_LLAMA_REQUIRED = ("embedding_length", "block_count", "feed_forward_length", "attention.head_count")
_TOKEN_ID_KEYS = {
    "bos_token_id": "tokenizer.ggml.bos_token_id",
    "eos_token_id": "tokenizer.ggml.eos_token_id",
    "pad_token_id": "tokenizer.ggml.padding_token_id",
}
# general.file_type -> the dtype ``dtype="auto"`` loads (llama.cpp's LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_BF16);
# any quantized file type dequantizes to float32
_FILE_TYPE_DTYPES = {0: "float32", 1: "float16", 32: "bfloat16"}

# llama.cpp tensor name -> Hugging Face Llama name (".weight" / ".bias" carried over)
_LLAMA_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LLAMA_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_GLOBAL_TENSOR = re.compile(r"(\w+)\.(weight|bias)")


class GGUFError(CheckpointError):
    """A GGUF file is corrupt or describes something modelcore cannot load; the message names the file and key."""


# ------------------------------------------------------------------ reading
def import_gguf() -> Any:
    """The ``gguf`` package, or an ImportError that says how to install it."""
    try:
        import gguf
    except ImportError as err:
        raise ImportError(
            "reading GGUF files needs the 'gguf' package: pip install 'modelcore[gguf]' (or pip install gguf)"
        ) from err
    return gguf


def open_gguf(path: str | os.PathLike) -> Any:
    """Parse a GGUF file's header, metadata and tensor index (tensor data stays memory-mapped).

    Parsing a file with a large vocabulary takes seconds, so the last two files parsed are kept; a file
    changed on disk since (size or modification time) is parsed again.

    Args:
        path: the ``.gguf`` file.

    Returns:
        A ``gguf.GGUFReader``.

    Raises:
        GGUFError: the file is not GGUF (wrong magic bytes), or is truncated or corrupt.
    """
    path = Path(path)
    stat = path.stat()
    return _cached_reader(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _cached_reader(path: str, mtime_ns: int, size: int) -> Any:
    gguf = import_gguf()
    with open(path, "rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the reader raises ValueError/IndexError/... for a short or damaged file
        raise GGUFError(f"{path}: truncated or corrupt GGUF file ({size} bytes): {err}") from err
    logger.debug("parsed GGUF %s: %d metadata keys, %d tensors", path, len(reader.fields), len(reader.tensors))
    return reader


_MISSING = object()


def field_value(reader: Any, key: str, default: Any = _MISSING) -> Any:
    """One metadata value as plain Python (str, int, float, bool or a list of them).

    Args:
        reader: from :func:`open_gguf`.
        key: a metadata key, e.g. ``"llama.block_count"``.
        default: returned when the key is absent; without one, an absent key is an error.

    Raises:
        GGUFError: the key is absent and no default was given.
    """
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise GGUFError(f"{_path_of(reader)}: metadata key {key!r} is missing")
        return default
    value = field.contents()
    gguf = import_gguf()
    if field.types and field.types[-1] == gguf.GGUFValueType.FLOAT32:
        # float32 in the file: give the shortest decimal that round-trips (1e-05, not 9.999999747378752e-06)
        value = [_short_float(v) for v in value] if isinstance(value, list) else _short_float(value)
    return value


def _short_float(value: float) -> float:
    return float(str(np.float32(value)))


def _path_of(reader: Any) -> str:
    return str(getattr(reader.data, "filename", None) or "<GGUF file>")  # reader.data is the file's np.memmap


# ------------------------------------------------------------------- config
def gguf_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for the model a GGUF file holds.

    Args:
        path: the ``.gguf`` file.

    Returns:
        ``{"model_type": "llama", "architectures": [...], "hidden_size": ..., ...}``, ready for
        ``LlamaConfig.from_dict``. ``tie_word_embeddings`` is True when the file has no ``output.weight``
        (llama.cpp then uses the embedding matrix as the output head).

    Raises:
        GGUFError: naming the file and key, for an architecture other than Llama, missing required
            metadata, or a feature that is not mapped (mixture of experts, per-frequency rope factors).
    """
    reader = open_gguf(path)
    architecture = field_value(reader, "general.architecture")
    if architecture != "llama":
        raise GGUFError(
            f"{path}: general.architecture is {architecture!r}; modelcore loads GGUF files of architecture 'llama' only"
        )
    return _llama_config(reader, Path(path), architecture)


def _llama_config(reader: Any, path: Path, prefix: str) -> dict[str, Any]:
    missing = [f"{prefix}.{key}" for key in _LLAMA_REQUIRED if f"{prefix}.{key}" not in reader.fields]
    if missing:
        raise GGUFError(f"{path}: metadata key(s) {', '.join(missing)} missing; cannot build the model's config")
    if field_value(reader, f"{prefix}.expert_count", 0):
        raise GGUFError(f"{path}: {prefix}.expert_count > 0 (a mixture of experts); not supported")
    tensor_names = {tensor.name for tensor in reader.tensors}
    if "rope_freqs.weight" in tensor_names:
        raise GGUFError(
            f"{path}: tensor 'rope_freqs.weight' (per-frequency rope factors, Llama 3.1+ rope scaling) is not supported"
        )
    config: dict[str, Any] = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu"}
    for key, name in _LLAMA_KEYS.items():
        value = field_value(reader, f"{prefix}.{key}", None)
        if value is not None:
            config[name] = _one_value(value, path, f"{prefix}.{key}")
    if "vocab_size" not in config:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        if tokens is not None:
            config["vocab_size"] = len(tokens.data)
        elif embedding is not None:
            config["vocab_size"] = int(embedding.shape[1])  # GGUF shapes are innermost first: (C, V)
    rope_dims = field_value(reader, f"{prefix}.rope.dimension_count", None)
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if rope_dims is not None and rope_dims != head_dim:
        raise GGUFError(
            f"{path}: {prefix}.rope.dimension_count={rope_dims} differs from the head size {head_dim} "
            "(partial rotary embeddings); not supported for llama"
        )
    rope_scaling = _rope_scaling(reader, path, prefix)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    for name, key in _TOKEN_ID_KEYS.items():
        value = field_value(reader, key, None)
        if value is not None:
            config[name] = value
    config["tie_word_embeddings"] = "output.weight" not in tensor_names
    config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
    config["mlp_bias"] = "blk.0.ffn_up.bias" in tensor_names
    config["dtype"] = _FILE_TYPE_DTYPES.get(field_value(reader, "general.file_type", None), "float32")
    return config


def _one_value(value: Any, path: Path, key: str) -> Any:
    """A per-layer list that llama.cpp writes for some keys must hold one value for a Llama config."""
    if not isinstance(value, list):
        return value
    if len(set(value)) != 1:
        raise GGUFError(f"{path}: {key} differs between layers ({value}); not supported for llama")
    return value[0]


def _rope_scaling(reader: Any, path: Path, prefix: str) -> dict[str, Any] | None:
    kind = field_value(reader, f"{prefix}.rope.scaling.type", None)
    factor = field_value(reader, f"{prefix}.rope.scaling.factor", None)
    if kind is None and field_value(reader, f"{prefix}.rope.scale_linear", None) is not None:  # older files
        kind, factor = "linear", field_value(reader, f"{prefix}.rope.scale_linear")
    if kind in (None, "none") or factor in (None, 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        scaling = {"rope_type": "yarn", "factor": factor}
        original = field_value(reader, f"{prefix}.rope.scaling.original_context_length", None)
        if original is not None:
            scaling["original_max_position_embeddings"] = original
        return scaling
    raise GGUFError(f"{path}: {prefix}.rope.scaling.type {kind!r} is not supported (linear, yarn)")


# ------------------------------------------------------------------ tensors
def hf_tensor_name(gguf_name: str) -> str | None:
    """The Hugging Face Llama name of a llama.cpp tensor name, or None for a name with no counterpart.

    ``token_embd.weight`` -> ``model.embed_tokens.weight``; ``blk.3.attn_q.weight`` ->
    ``model.layers.3.self_attn.q_proj.weight``; ``output.weight`` -> ``lm_head.weight``.
    """
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match:
        layer, part, kind = match.groups()
        mapped = _LLAMA_LAYER_NAMES.get(part)
        return f"model.layers.{layer}.{mapped}.{kind}" if mapped else None
    match = _GLOBAL_TENSOR.fullmatch(gguf_name)
    if match and match.group(1) in _LLAMA_GLOBAL_NAMES:
        return f"{_LLAMA_GLOBAL_NAMES[match.group(1)]}.{match.group(2)}"
    return None


def unpermute_rope_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of query/key projection rows.

    llama.cpp rotates interleaved pairs (rows 0,1 of a head form one rotary pair), Hugging Face rotates
    halves (rows i and i + hs/2). Its converter therefore permutes each head's rows from
    ``(2, hs/2)`` to ``(hs/2, 2)`` order; this applies the inverse. Works on weights ``(nh*hs, C)`` and
    biases ``(nh*hs,)``.

    Args:
        weight: the stored tensor, rows grouped by head.
        num_heads: heads in this projection (query heads for q, key/value heads for k).

    Returns:
        The tensor with rows in Hugging Face order (same shape).
    """
    rows = weight.shape[0]
    head_size = rows // num_heads
    return weight.reshape(num_heads, head_size // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


class GGUFFile:
    """The tensors of a GGUF file under Hugging Face names, dequantized on read.

    Has the reader interface of ``SafetensorsFile`` (``keys``, ``__contains__``, ``shape``, ``dtype``,
    ``read``, ``close``), so the checkpoint loader treats a GGUF file as one shard. Tensors without a
    Hugging Face counterpart keep their llama.cpp name (the loader then reports them as unused).

    Args:
        path: the ``.gguf`` file.

    Raises:
        GGUFError: the file is unreadable, not a Llama model, or holds a tensor type that the ``gguf``
            package cannot dequantize (the message names the tensor and type).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._reader = open_gguf(self.path)
        config = gguf_config_dict(self.path)
        heads = config["num_attention_heads"]
        self._heads = {"q_proj": heads, "k_proj": config.get("num_key_value_heads") or heads}
        supported = _dequantizable_types()
        self._tensors: dict[str, Any] = {}
        for tensor in self._reader.tensors:
            if supported is not None and tensor.tensor_type not in supported:
                raise GGUFError(
                    f"{self.path}: tensor {tensor.name!r} is stored as {tensor.tensor_type.name}, which the gguf "
                    f"package cannot dequantize (supported: {', '.join(sorted(t.name for t in supported))})"
                )
            self._tensors[hf_tensor_name(tensor.name) or tensor.name] = tensor

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> torch.Size:
        return torch.Size(int(d) for d in reversed(self._tensors[name].shape.tolist()))  # GGUF: innermost first

    def dtype(self, name: str) -> torch.dtype:
        """The dtype a tensor is read as by default: float16/bfloat16 when stored so, float32 otherwise."""
        return {"F16": torch.float16, "BF16": torch.bfloat16}.get(self._tensors[name].tensor_type.name, torch.float32)

    def read(
        self, name: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu", mmap: bool = True
    ) -> torch.Tensor:
        """Dequantize one tensor into a new torch tensor.

        Args:
            name: a Hugging Face name from :meth:`keys`.
            dtype: the floating dtype to return; None gives :meth:`dtype`.
            device: where the tensor goes.
            mmap: ignored (a dequantized tensor is always a new copy); kept for the reader interface.

        Returns:
            The tensor, q/k projection rows in Hugging Face order.
        """
        tensor = self._tensors.get(name)
        if tensor is None:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        gguf = import_gguf()
        try:
            array = gguf.dequantize(tensor.data, tensor.tensor_type)
        except (NotImplementedError, ValueError) as err:
            raise GGUFError(
                f"{self.path}: cannot dequantize tensor {tensor.name!r} ({tensor.tensor_type.name}): {err}"
            ) from err
        # F32 data is a read-only view of the file: copy it; dequantized blocks are fresh arrays already
        result = torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)
        result = result.reshape(self.shape(name))
        projection = name.rsplit(".", 2)[-2] if name.startswith("model.layers.") else ""
        if projection in self._heads:
            result = unpermute_rope_rows(result, self._heads[projection])
        return result.to(device=device, dtype=dtype or self.dtype(name))

    def close(self) -> None:
        """Nothing to release: the parsed file is kept in :func:`open_gguf`'s small cache."""

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dequantizable_types() -> set[Any] | None:
    """Tensor types ``gguf.dequantize`` handles; None when this gguf version does not say (then checked on read)."""
    gguf = import_gguf()
    traits = getattr(gguf.quants, "_type_traits", None)
    if traits is None:
        return None
    return {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, *traits}
