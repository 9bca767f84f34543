"""Read and write the safetensors format directly.

Format: an 8-byte little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the
tensor bytes. Reading parses and checks the whole header up front, at least as strictly as the
reference implementation: a truncated, corrupt or ambiguous file (duplicate keys, overlapping
tensors, stray bytes) fails with the file and tensor named, before any tensor is read. A tensor
is then either a copy-on-write view of the memory-mapped file (``mmap=True``: no copy, pages read
on first touch), or, when it must be converted or moved, read with one positioned read straight
into its new storage.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from modelcore.errors import ModelcoreError, SafetensorsError
from modelcore.serialization.atomic import atomic_path

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation refuses larger headers too
_MAX_SIZE = 2**64 - 1  # sizes and offsets are u64 in the reference implementation


def _is_size(value: Any) -> bool:
    """A JSON non-negative integer that fits in 64 bits (``True`` is not one)."""
    return type(value) is int and 0 <= value <= _MAX_SIZE


def strict_json(raw: bytes, path: str | os.PathLike, what: str, error: type[Exception]) -> Any:
    """Parse ``raw`` as UTF-8 JSON, refusing duplicate keys, NaN/Infinity and unpaired surrogates.

    Args:
        raw: the bytes read from ``path``.
        path: the file, named in errors.
        what: what the bytes are ("safetensors header", "index"), named in errors.
        error: the exception type to raise (it takes one message).

    Returns:
        The parsed value.
    """

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            _check_encodable(key, path, what, error)
            if key in result:
                raise error(f"{path}: {what} has the key {key!r} twice; refusing an ambiguous file")
            result[key] = value
        return result

    def no_constant(name: str) -> Any:
        raise error(f"{path}: {what} holds {name}, which is not JSON")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(
            f"{path}: {what} is not valid UTF-8 (byte {err.start}: {raw[err.start : err.start + 1]!r})"
        ) from err
    try:
        value = json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except json.JSONDecodeError as err:
        raise error(f"{path}: {what} is not valid JSON ({err})") from err
    except ModelcoreError:
        raise  # raised by the hooks above, already naming the file
    except ValueError as err:  # an integer literal too long to convert
        raise error(f"{path}: {what} cannot be read as JSON ({err})") from err
    except RecursionError as err:
        raise error(f"{path}: {what} is nested too deeply to be read") from err
    _check_strings(value, path, what, error)
    return value


def _check_encodable(text: str, path: str | os.PathLike, what: str, error: type[Exception]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise error(f"{path}: {what} holds a string with an unpaired surrogate ({text!r}); not valid Unicode") from err


def _check_strings(value: Any, path: str | os.PathLike, what: str, error: type[Exception]) -> None:
    """Every string value (keys are checked while parsing) must be valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_encodable(item, path, what, error)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class SafetensorsFile:
    """One safetensors file with a validated header; tensors are read on demand.

    Use as a context manager, or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self._mmap: mmap.mmap | None = None
        try:
            self._entries, self.metadata, self._data_start = self._parse_header()
        except BaseException:
            self._file.close()
            raise

    def _parse_header(self) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
        """Parse and check the whole header, as strictly as the reference implementation (or more).

        Refused, naming the file (and the tensor): a header that is not UTF-8 JSON, duplicate keys,
        an entry that is not ``{"dtype", "shape", "data_offsets"}`` with an known dtype, a shape of
        non-negative ints and two non-negative int offsets spanning exactly the shape's bytes;
        tensors that overlap, leave gaps between them, or do not start right after the header and
        end at the end of the file (stray bytes would shift every tensor).
        """
        size = os.fstat(self._file.fileno()).st_size
        prefix = self._file.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{self.path}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER or 8 + header_len > size:
            raise SafetensorsError(
                f"{self.path}: truncated or corrupt safetensors file (header of {header_len} bytes, file of {size})"
            )
        header = strict_json(self._file.read(header_len), self.path, "safetensors header", SafetensorsError)
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: safetensors header is not a JSON object")
        metadata = self._parse_metadata(header.pop("__metadata__", None))
        entries = {name: self._parse_entry(name, entry) for name, entry in header.items()}
        data_start = 8 + header_len
        self._check_layout(entries, size - data_start, data_start)
        return entries, metadata, data_start

    def _parse_metadata(self, metadata: Any) -> dict[str, str]:
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            raise SafetensorsError(
                f"{self.path}: __metadata__ must be an object of strings, got {type(metadata).__name__}"
            )
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise SafetensorsError(
                    f"{self.path}: __metadata__ must map strings to strings; {key!r} holds a {type(value).__name__}"
                )
        return metadata

    def _parse_entry(self, name: str, entry: Any) -> dict[str, Any]:
        """One tensor's header entry, checked: ``{"dtype": str, "shape": [int], "data_offsets": [begin, end]}``."""
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise SafetensorsError(f"{where}: header entry must be an object, got {type(entry).__name__}")
        missing = [key for key in ("dtype", "shape", "data_offsets") if key not in entry]
        if missing:
            raise SafetensorsError(f"{where}: header entry lacks {missing}: {entry!r}"[:500])
        dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise SafetensorsError(f"{where}: unknown dtype {dtype_name!r} (known: {', '.join(DTYPES)})"[:500])
        if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
            raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, got {shape!r}"[:500])
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(o) for o in offsets):
            raise SafetensorsError(
                f"{where}: data_offsets must be two non-negative integers [begin, end], got {offsets!r}"[:500]
            )
        begin, end = offsets
        if end < begin:
            raise SafetensorsError(f"{where}: data_offsets [{begin}, {end}] end before they begin")
        nbytes = math.prod(shape) * DTYPES[dtype_name].itemsize
        if nbytes > _MAX_SIZE or end - begin != nbytes:
            raise SafetensorsError(
                f"{where}: spans {end - begin} bytes but shape {shape} of {dtype_name} needs {nbytes}"
            )
        return {"dtype": dtype_name, "shape": shape, "data_offsets": [begin, end]}

    def _check_layout(self, entries: dict[str, dict[str, Any]], data_size: int, data_start: int) -> None:
        """The tensors must tile the data exactly: from right after the header to the end of the file."""
        ordered = sorted(entries.items(), key=lambda item: (*item[1]["data_offsets"], item[0]))
        for name, entry in ordered:
            if entry["data_offsets"][1] > data_size:
                raise SafetensorsError(
                    f"{self.path}: truncated file: tensor {name!r} needs bytes up to "
                    f"{data_start + entry['data_offsets'][1]}, file has {data_start + data_size}"
                )
        covered, previous = 0, None
        for name, entry in ordered:
            begin, end = entry["data_offsets"]
            if begin < covered:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r} (bytes {begin}-{end}) overlaps tensor {previous!r} "
                    f"(which ends at {covered}); refusing a file whose tensors share bytes"
                )
            if begin > covered:
                after = f"after tensor {previous!r}" if previous is not None else "before the first tensor"
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r} starts at {begin}, leaving a gap of {begin - covered} bytes {after}"
                )
            covered, previous = end, name
        if data_size > covered:
            raise SafetensorsError(
                f"{self.path}: {data_size - covered} bytes that no tensor covers (between the header and the data, "
                f"or after the last tensor{'' if previous is None else f' {previous!r}'}); refusing a file whose "
                "tensors would be read shifted"
            )

    # --------------------------------------------------------------- queries
    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def dtype(self, name: str) -> torch.dtype:
        return DTYPES[self._entries[name]["dtype"]]

    def shape(self, name: str) -> torch.Size:
        return torch.Size(self._entries[name]["shape"])

    def nbytes(self, name: str) -> int:
        begin, end = self._entries[name]["data_offsets"]
        return end - begin

    def read(
        self, name: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu", mmap: bool = False
    ) -> torch.Tensor:
        """Read one tensor; convert to ``dtype`` (if given) and move to ``device``.

        With ``mmap=True`` and nothing to convert or move, the tensor is a copy-on-write view of
        the memory-mapped file: no read at all until its pages are touched, and writes to it never
        reach the file. Otherwise the bytes land directly in a new tensor's storage (one
        positioned read); a conversion costs one tensor's worth of extra memory, transiently.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        stored = DTYPES[entry["dtype"]]
        converts = dtype is not None and stored.is_floating_point and dtype != stored
        if mmap and torch.device(device).type == "cpu":
            view = self._mapped(entry, stored)
            if not converts:
                return view
            converted = view.to(dtype)
            self._release(entry)  # the source pages are no longer needed: keep them out of RSS
            return converted
        tensor = torch.empty(entry["shape"], dtype=stored)
        if tensor.numel():
            begin, _ = entry["data_offsets"]
            self._file.seek(self._data_start + begin)
            buffer = tensor.view(-1).view(torch.uint8).numpy()
            if self._file.readinto(buffer) != buffer.nbytes:
                raise SafetensorsError(f"{self.path}: truncated file while reading tensor {name!r}")
        if dtype is not None and tensor.is_floating_point() and dtype != tensor.dtype:
            tensor = tensor.to(dtype)
        return tensor if torch.device(device).type == "cpu" else tensor.to(device)

    def _mapped(self, entry: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
        shape = entry["shape"]
        count = math.prod(shape)
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        if self._mmap is None:
            self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY)  # private, copy-on-write
        begin, _ = entry["data_offsets"]
        # frombuffer keeps the map alive for as long as any tensor views it.
        return torch.frombuffer(self._mmap, dtype=dtype, count=count, offset=self._data_start + begin).view(shape)

    def _release(self, entry: dict[str, Any]) -> None:
        """Drop the mapped pages of a tensor that was copied out (they were only read, never written)."""
        begin, end = entry["data_offsets"]
        page = mmap.PAGESIZE
        start = (self._data_start + begin) // page * page
        stop = self._data_start + end
        if self._mmap is not None and stop > start and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def close(self) -> None:
        self._file.close()  # an open map (if any) outlives the descriptor; tensors keep it alive

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_file(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file."""
    with SafetensorsFile(path) as f:
        return {name: f.read(name, device=device) for name in f.keys()}


def save_file(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` as a safetensors file, atomically (temp file, then rename)."""
    with atomic_path(Path(path)) as tmp:
        write_safetensors(tensors, tmp, metadata)


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` in place, streaming one tensor at a time.

    Tensors may live on any device and need not be contiguous; each is copied to CPU only while
    it is written. Two names sharing storage are written twice (callers drop tied duplicates).
    """
    raw = header_bytes(tensors, metadata)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for chunk in _tensor_bytes(tensors.values()):
            f.write(chunk)


def header_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The JSON header :func:`write_safetensors` writes for ``tensors``, padded with spaces to 8 bytes."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in DTYPE_NAMES:
            raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store")
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8)  # pad so the data starts 8-byte aligned


def file_size(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> int:
    """The size in bytes of the file :func:`write_safetensors` writes for ``tensors``."""
    return 8 + len(header_bytes(tensors, metadata)) + sum(t.numel() * t.element_size() for t in tensors.values())


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> Iterator[memoryview]:
    for tensor in tensors:
        if tensor.numel() == 0:
            continue
        cpu = tensor.detach().to("cpu").contiguous()
        yield memoryview(cpu.view(-1).view(torch.uint8).numpy())
