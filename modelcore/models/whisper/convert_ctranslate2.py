"""Convert a Whisper model in CTranslate2 format to the Hugging Face layout.

CTranslate2 (the engine behind faster-whisper) stores a model as a folder with ``model.bin``,
``config.json`` (decoding settings: ``suppress_ids``, ``suppress_ids_begin``, ``lang_ids``,
``alignment_heads``), ``tokenizer.json`` and ``vocabulary.txt``. ``model.bin`` is CTranslate2's own binary
format, little-endian throughout (``src/models/model.cc`` in CTranslate2)::

    uint32 binary_version                 (5 or 6 here)
    string spec_name, uint32 spec_revision  ("WhisperSpec", 3)
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank], uint8 dtype, uint32 n_bytes, n_bytes of data
    uint32 n_aliases, then per alias: string alias, string variable     (e.g. the tied projection)

where a string is ``uint16 length`` then ``length`` bytes ending in NUL, and dtype is 0 float32, 1 int8,
2 int16, 3 int32, 4 float16, 5 bfloat16. Nothing in it is executable; this module reads it with ``struct`` and
``numpy.frombuffer`` and checks every length against the file's size.

Weight names map to Hugging Face's ``WhisperForConditionalGeneration`` as follows (N a layer index)::

    encoder/conv{1,2}/{weight,bias}                  -> model.encoder.conv{1,2}.{weight,bias}
    encoder/position_encodings/encodings             -> model.encoder.embed_positions.weight
    {enc}/layer_N/self_attention/linear_0 (fused qkv) -> ...layers.N.self_attn.{q,k,v}_proj (k has no bias:
                                                         CTranslate2 stores zeros there, checked)
    {enc}/layer_N/self_attention/linear_1            -> ...layers.N.self_attn.out_proj
    {enc}/layer_N/self_attention/layer_norm/{gamma,beta} -> ...layers.N.self_attn_layer_norm.{weight,bias}
    decoder/layer_N/attention/linear_0 (q)           -> model.decoder.layers.N.encoder_attn.q_proj
    decoder/layer_N/attention/linear_1 (fused kv)    -> model.decoder.layers.N.encoder_attn.{k,v}_proj
    decoder/layer_N/attention/linear_2               -> model.decoder.layers.N.encoder_attn.out_proj
    decoder/layer_N/attention/layer_norm             -> model.decoder.layers.N.encoder_attn_layer_norm
    {enc}/layer_N/ffn/linear_{0,1}                   -> ...layers.N.fc{1,2}
    {enc}/layer_N/ffn/layer_norm                     -> ...layers.N.final_layer_norm
    {enc}/layer_norm                                 -> ...{encoder,decoder}.layer_norm
    decoder/embeddings/weight                        -> model.decoder.embed_tokens.weight (proj_out tied to it)
    decoder/position_encodings/encodings             -> model.decoder.embed_positions.weight

Scalars (``num_heads``, ``activation``, ``pre_norm``, ...) give the configuration; they are checked against
what Whisper is (pre-norm, exact GELU, no embedding scale).

The output folder holds ``config.json`` and ``generation_config.json`` (Hugging Face's WhisperConfig and
generation fields: the suppressed tokens, ``forced_decoder_ids`` = ``<|notimestamps|>`` for English-only
models), ``model.safetensors`` (float32 by default; CTranslate2 ships float16, so the cast is exact),
``tokenizer.json`` with ``tokenizer_config.json`` and ``special_tokens_map.json``, and
``preprocessor_config.json`` (the 80-bin log-mel feature extractor). transformers loads it as is.

CLI: ``python -m modelcore.models.whisper.convert_ctranslate2 SRC DST [--dtype float16]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from modelcore.errors import CheckpointError

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = (5, 6)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 bfloat16: see _array
_GELU = 3  # CTranslate2's ActivationType::GELU (exact, erf-based)
NO_TIMESTAMPS = "<|notimestamps|>"
_MULTILINGUAL_VOCAB = 51865  # the English-only checkpoints (tiny.en ... medium.en) have 51864 tokens, large-v3 51866


@dataclass(frozen=True)
class Ct2Model:
    """The contents of a ``model.bin``: the spec name and every variable (aliases resolved to their target)."""

    spec: str
    variables: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------- reading model.bin
class _Reader:
    """Bounds-checked little-endian reads; every error names the file and what was being read."""

    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self.f, self.path, self.size = f, path, size

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise CheckpointError(
                f"{self.path}: truncated or corrupt CTranslate2 file: {what} needs {n} bytes at offset "
                f"{self.f.tell()}, the file has {self.size}"
            )
        return self.f.read(n)

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", f"{what} length")
        raw = self.take(length, what)
        if not raw.endswith(b"\0"):
            raise CheckpointError(f"{self.path}: {what} at offset {self.f.tell() - length} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as error:
            raise CheckpointError(f"{self.path}: {what} is not UTF-8 ({error})") from None


def read_ctranslate2_model(path: str | os.PathLike) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (binary versions 5 and 6) into numpy arrays.

    Args:
        path: the ``model.bin`` file.

    Returns:
        A :class:`Ct2Model`; aliases (``decoder/projection/weight``) appear as names of the same array.

    Raises:
        CheckpointError: an unsupported version or dtype, a truncated file, a duplicate or dangling name.
    """
    path = Path(path)
    size = path.stat().st_size
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        reader = _Reader(f, path, size)
        (version,) = reader.unpack("I", "binary version")
        if version not in SUPPORTED_VERSIONS:
            raise CheckpointError(
                f"{path}: CTranslate2 binary version {version} is not supported (supported: {SUPPORTED_VERSIONS}); "
                "re-export the model with ctranslate2 4.x"
            )
        spec = reader.string("spec name")
        reader.unpack("I", "spec revision")
        (count,) = reader.unpack("I", "variable count")
        for index in range(count):
            name = reader.string(f"name of variable {index}")
            if name in variables:
                raise CheckpointError(f"{path}: variable {name!r} appears twice")
            variables[name] = _read_variable(reader, name)
        (aliases,) = reader.unpack("I", "alias count")
        for index in range(aliases):
            alias, target = reader.string(f"alias {index}"), reader.string(f"target of alias {index}")
            if target not in variables:
                raise CheckpointError(f"{path}: alias {alias!r} points to a missing variable {target!r}")
            variables[alias] = variables[target]
        if f.tell() != size:
            raise CheckpointError(f"{path}: {size - f.tell()} unexpected trailing bytes after the aliases")
    return Ct2Model(spec=spec, variables=variables)


def _read_variable(reader: _Reader, name: str) -> np.ndarray:
    (rank,) = reader.unpack("B", f"rank of {name!r}")
    shape = reader.unpack(f"{rank}I", f"shape of {name!r}") if rank else ()
    dtype_id, n_bytes = reader.unpack("BI", f"dtype of {name!r}")
    data = reader.take(n_bytes, f"data of {name!r}")
    return _array(reader.path, name, dtype_id, shape, data)


def _array(path: Path, name: str, dtype_id: int, shape: tuple[int, ...], data: bytes) -> np.ndarray:
    """The bytes of one variable as an array of ``shape`` (bfloat16 widened to float32 exactly)."""
    if dtype_id == 5:  # bfloat16: the high half of a float32
        dtype, itemsize = None, 2
    elif dtype_id in _DTYPES:
        dtype, itemsize = _DTYPES[dtype_id], np.dtype(_DTYPES[dtype_id]).itemsize
    else:
        raise CheckpointError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
    expected = int(np.prod(shape, dtype=np.int64)) * itemsize
    if expected != len(data):
        raise CheckpointError(f"{path}: variable {name!r} of shape {shape} needs {expected} bytes, holds {len(data)}")
    if dtype is None:
        widened = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return widened.view(np.float32).reshape(shape)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


# ---------------------------------------------------------------------------------------------- name mapping
def _scalar(model: Ct2Model, name: str, where: Path) -> int:
    if name not in model.variables:
        raise CheckpointError(f"{where}: variable {name!r} is missing")
    return int(model.variables[name].reshape(-1)[0])


def _layer_count(variables: dict[str, np.ndarray], stack: str) -> int:
    indices = {int(m.group(1)) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    if indices != set(range(len(indices))):
        raise CheckpointError(f"{stack} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def hf_state_dict(model: Ct2Model, where: Path) -> dict[str, torch.Tensor]:
    """Hugging Face Whisper weights from a CTranslate2 WhisperSpec, with fused projections split.

    Args:
        model: the parsed ``model.bin``.
        where: the file, for error messages.

    Returns:
        ``{hf_name: tensor}`` in the stored dtype; ``proj_out.weight`` is left out (tied to the embedding).

    Raises:
        CheckpointError: a missing variable, a quantized (integer) weight, a fused projection of the wrong
            size, or a nonzero key bias.
    """
    v = model.variables
    used: set[str] = set()
    scales = sorted(name for name in v if name.endswith("_scale"))
    if scales:
        raise CheckpointError(
            f"{where}: a quantized CTranslate2 model ({scales[0]!r} and {len(scales) - 1} more scales); only float16 "
            "and float32 models convert exactly: re-export it with quantization='float16'"
        )

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise CheckpointError(f"{where}: variable {name!r} is missing (is this a Whisper model?)")
        if not np.issubdtype(v[name].dtype, np.floating):
            raise CheckpointError(f"{where}: variable {name!r} is stored as {v[name].dtype}, not as floating point")
        used.add(name)
        return v[name]

    out: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = get(f"{src}/weight"), get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def split(src: str, dsts: Sequence[str]) -> None:
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        if weight.shape[0] % len(dsts) or bias.shape[0] != weight.shape[0]:
            raise CheckpointError(f"{where}: {src} has shape {weight.shape}, not {len(dsts)} fused projections")
        for dst, w, b in zip(dsts, np.split(weight, len(dsts)), np.split(bias, len(dsts)), strict=True):
            out[f"{dst}.weight"] = w
            if dst.endswith("k_proj"):  # Whisper's keys have no bias; CTranslate2 fused a zero one
                if np.any(b != 0):
                    raise CheckpointError(f"{where}: {src}/bias holds a nonzero key bias, which Whisper does not have")
            else:
                out[f"{dst}.bias"] = b

    for stack in ("encoder", "decoder"):
        prefix = f"model.{stack}"
        for i in range(_layer_count(v, stack)):
            src, dst = f"{stack}/layer_{i}", f"{prefix}.layers.{i}"
            split(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if stack == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                split(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        norm(f"{stack}/layer_norm", f"{prefix}.layer_norm")
        out[f"{prefix}.embed_positions.weight"] = get(f"{stack}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    projection = v.get("decoder/projection/weight")
    if projection is not None and not np.array_equal(projection, out["model.decoder.embed_tokens.weight"]):
        raise CheckpointError(f"{where}: decoder/projection/weight differs from the embedding; Whisper ties them")
    unused = sorted(n for n, a in v.items() if n not in used and a.ndim > 1 and n != "decoder/projection/weight")
    if unused:
        raise CheckpointError(f"{where}: weights this converter does not know: {unused[:5]}")
    return {name: torch.from_numpy(array.copy()) for name, array in out.items()}


# ---------------------------------------------------------------------------------------------- configuration
def hf_config(model: Ct2Model, decoding: dict[str, Any], vocab: dict[str, int], where: Path) -> dict[str, Any]:
    """Hugging Face ``config.json`` fields for the converted model.

    Args:
        model: the parsed ``model.bin`` (sizes and scalar settings).
        decoding: CTranslate2's ``config.json`` (``suppress_ids``, ``suppress_ids_begin``, ``lang_ids``, ...).
        vocab: token -> id of the tokenizer (for the special tokens).
        where: the source folder, for error messages.
    """
    v = model.variables
    checks = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/activation": _GELU}
    for name, expected in checks.items():
        if name in v and _scalar(model, name, where) != expected:
            raise CheckpointError(f"{where}: {name} is {_scalar(model, name, where)}, Whisper needs {expected}")
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    english_only = vocab_size < _MULTILINGUAL_VOCAB
    eos, start = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    forced = [[1, vocab[NO_TIMESTAMPS]]] if english_only else [[1, None], [2, vocab["<|transcribe|>"]]]
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": int(vocab_size),
        "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
        "d_model": int(d_model),
        "encoder_layers": _layer_count(v, "encoder"),
        "decoder_layers": _layer_count(v, "decoder"),
        "num_hidden_layers": _layer_count(v, "encoder"),
        "encoder_attention_heads": _scalar(model, "encoder/num_heads", where),
        "decoder_attention_heads": _scalar(model, "decoder/num_heads", where),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "use_cache": True,
        "is_encoder_decoder": True,
        "tie_word_embeddings": True,
        "bos_token_id": start,
        "decoder_start_token_id": start,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "suppress_tokens": [int(i) for i in decoding.get("suppress_ids", [])],
        "begin_suppress_tokens": [int(i) for i in decoding.get("suppress_ids_begin", [220, eos])],
        "forced_decoder_ids": forced,
        "max_length": int(v["decoder/position_encodings/encodings"].shape[0]),
        "dtype": "float32",
    }


def hf_generation_config(config: dict[str, Any], decoding: dict[str, Any], vocab: dict[str, int]) -> dict[str, Any]:
    """``generation_config.json``: what transformers' Whisper ``generate`` reads (no timestamps by default)."""
    english_only = config["forced_decoder_ids"] == [[1, vocab[NO_TIMESTAMPS]]]
    generation = {
        "bos_token_id": config["bos_token_id"],
        "decoder_start_token_id": config["decoder_start_token_id"],
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["pad_token_id"],
        "max_length": config["max_target_positions"],
        "suppress_tokens": config["suppress_tokens"],
        "begin_suppress_tokens": config["begin_suppress_tokens"],
        "forced_decoder_ids": config["forced_decoder_ids"],
        "no_timestamps_token_id": vocab[NO_TIMESTAMPS],
        "prev_sot_token_id": vocab.get("<|startofprev|>"),
        "is_multilingual": not english_only,
        "return_timestamps": False,
        "max_initial_timestamp_index": 50,
    }
    if decoding.get("alignment_heads"):
        generation["alignment_heads"] = decoding["alignment_heads"]
    if not english_only:
        generation["lang_to_id"] = {t: vocab[t] for t in vocab if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)}
        generation["task_to_id"] = {"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]}
    return generation


def preprocessor_config(num_mel_bins: int) -> dict[str, Any]:
    """``preprocessor_config.json`` of Hugging Face's WhisperFeatureExtractor and WhisperProcessor."""
    return {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": num_mel_bins,
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }


def tokenizer_files(max_length: int) -> dict[str, str]:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` for a Whisper ``tokenizer.json``."""
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    specials["pad_token"] = "<|endoftext|>"
    config = {
        **specials,
        "tokenizer_class": "WhisperTokenizer",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "errors": "replace",
    }
    return {
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(specials, indent=2) + "\n",
    }


# ---------------------------------------------------------------------------------------------- the conversion
def convert(src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Write the Hugging Face layout of the CTranslate2 Whisper folder ``src`` into ``dst``.

    The folder is built next to ``dst`` and renamed into place, so ``dst`` is either complete or absent.

    Args:
        src: a CTranslate2 folder with ``model.bin``, ``config.json`` and ``tokenizer.json``.
        dst: the folder to create.
        dtype: ``"float32"`` (default, what transformers' Whisper checkpoints use) or ``"float16"`` (as stored).
        overwrite: replace an existing ``dst``.

    Returns:
        ``dst``.

    Raises:
        FileNotFoundError: a required file is missing from ``src``.
        FileExistsError: ``dst`` exists and ``overwrite`` is False.
        CheckpointError: ``model.bin`` is not a Whisper model this converter knows (the message names the part).
    """
    src, dst = Path(src), Path(dst)
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    for name in ("model.bin", "tokenizer.json"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name}: missing; is {src} a CTranslate2 Whisper folder?")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
    model = read_ctranslate2_model(src / "model.bin")
    if model.spec != "WhisperSpec":
        raise CheckpointError(f"{src / 'model.bin'}: spec {model.spec!r} is not a Whisper model (WhisperSpec)")
    decoding = _read_json(src / "config.json") if (src / "config.json").is_file() else {}
    vocab = _vocabulary(src / "tokenizer.json")
    state = hf_state_dict(model, src / "model.bin")
    torch_dtype = getattr(torch, dtype)
    state = {name: tensor.to(torch_dtype) if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    config = hf_config(model, decoding, vocab, src)
    config["dtype"] = dtype

    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        _write_folder(staging, src, state, config, decoding, vocab)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Converted %s (%d tensors, %s) into %s", src, len(state), dtype, dst)
    return dst


def _write_folder(
    folder: Path,
    src: Path,
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    decoding: dict[str, Any],
    vocab: dict[str, int],
) -> None:
    from safetensors.torch import save_file

    folder.chmod(0o755)  # mkdtemp makes it 0700
    save_file({k: t.contiguous() for k, t in state.items()}, str(folder / "model.safetensors"), {"format": "pt"})
    (folder / "model.safetensors").chmod(0o644)
    texts = {
        "config.json": config,
        "generation_config.json": hf_generation_config(config, decoding, vocab),
        "preprocessor_config.json": preprocessor_config(config["num_mel_bins"]),
    }
    for name, data in texts.items():
        (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(src / "tokenizer.json", folder / "tokenizer.json")
    for name, text in tokenizer_files(config["max_target_positions"]).items():
        (folder / name).write_text(text)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _vocabulary(tokenizer_json: Path) -> dict[str, int]:
    """token -> id over the BPE vocabulary and the added (special) tokens."""
    data = _read_json(tokenizer_json)
    vocab = dict(data.get("model", {}).get("vocab", {}))
    vocab.update({token["content"]: token["id"] for token in data.get("added_tokens", [])})
    for needed in ("<|endoftext|>", "<|startoftranscript|>", NO_TIMESTAMPS):
        if needed not in vocab:
            raise CheckpointError(f"{tokenizer_json}: token {needed!r} is missing; not a Whisper tokenizer")
    return vocab


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m modelcore.models.whisper.convert_ctranslate2",
        description="Convert a CTranslate2 Whisper folder (model.bin) to the Hugging Face layout.",
    )
    parser.add_argument("src", help="CTranslate2 folder (model.bin, config.json, tokenizer.json), or an asset name")
    parser.add_argument("dst", help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    src = Path(args.src)
    if not src.exists():
        from modelcore import assets

        if args.src in assets.CATALOG:
            src = assets.fetch(args.src)
    try:
        convert(src, args.dst, dtype=args.dtype, overwrite=args.overwrite)
    except (OSError, CheckpointError, ValueError) as error:
        logger.error("error: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


CONVERTED_FORMAT = "v1"  # bump when the converter's output changes, so cached conversions are redone


def converted_asset(name: str = "whisper-tiny-en") -> Path:
    """The Hugging Face folder of a CTranslate2 Whisper asset, converted once into the modelcore cache.

    The conversion is staged and renamed into place, so a reader sees a whole folder; a finished one is reused.
    """
    from modelcore import assets

    dest = assets.cache_dir() / "converted" / f"{name}-hf-{CONVERTED_FORMAT}"
    if (dest / "model.safetensors").is_file():
        return dest
    return convert(assets.fetch(name), dest, overwrite=True)
