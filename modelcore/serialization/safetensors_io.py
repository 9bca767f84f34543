"""Read and write the safetensors format directly.

Format: an 8-byte little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the
tensor bytes. Reading parses and checks the whole header up front (a truncated or corrupt file
fails with the file and tensor named). A tensor is then either a copy-on-write view of the
memory-mapped file (``mmap=True``: no copy, pages read on first touch), or, when it must be
converted or moved, read with one positioned read straight into its new storage.
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

from modelcore.errors import SafetensorsError
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
        size = os.fstat(self._file.fileno()).st_size
        prefix = self._file.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{self.path}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER or 8 + header_len > size:
            raise SafetensorsError(
                f"{self.path}: truncated or corrupt safetensors file (header of {header_len} bytes, file of {size})"
            )
        try:
            header = json.loads(self._file.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SafetensorsError(f"{self.path}: safetensors header is not valid JSON ({err})") from err
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: safetensors header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        data_start = 8 + header_len
        data_size = size - data_start
        for name, entry in header.items():
            try:
                dtype = DTYPES[entry["dtype"]]
                shape = [int(d) for d in entry["shape"]]
                begin, end = (int(o) for o in entry["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise SafetensorsError(f"{self.path}: tensor {name!r} has a malformed header entry: {entry!r}") from err
            nbytes = math.prod(shape) * dtype.itemsize
            if end - begin != nbytes or begin < 0:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r} spans {end - begin} bytes but shape {shape} of {entry['dtype']} "
                    f"needs {nbytes}"
                )
            if end > data_size:
                raise SafetensorsError(
                    f"{self.path}: truncated file: tensor {name!r} needs bytes up to {data_start + end}, "
                    f"file has {size}"
                )
        return header, metadata, data_start

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
    raw += b" " * (-len(raw) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for chunk in _tensor_bytes(tensors.values()):
            f.write(chunk)


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> Iterator[memoryview]:
    for tensor in tensors:
        if tensor.numel() == 0:
            continue
        cpu = tensor.detach().to("cpu").contiguous()
        yield memoryview(cpu.view(-1).view(torch.uint8).numpy())
