"""Our safetensors reader/writer against the reference `safetensors` package."""

from __future__ import annotations

import json
import struct

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from modelcore.serialization.safetensors_io import SafetensorsError, SafetensorsFile, load_file, save_file

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool, torch.float64]


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {f"t.{d}".replace("torch.", ""): (torch.randn(3, 5, generator=g) * 10).to(d) for d in DTYPES}
    out["scalar"] = torch.tensor(3.5)
    out["empty"] = torch.empty(0, 4)
    out["strided"] = torch.arange(24.0).reshape(4, 6).t()  # not contiguous
    return out


def test_our_files_read_by_reference_and_back(tmp_path):
    tensors = _tensors()
    save_file(tensors, tmp_path / "a.safetensors", metadata={"k": "v"})
    ref = safetensors.torch.load_file(tmp_path / "a.safetensors")
    ours = load_file(tmp_path / "a.safetensors")
    for name, t in tensors.items():
        assert torch.equal(ref[name], t) and torch.equal(ours[name], t), name
        assert ours[name].dtype == t.dtype
    with SafetensorsFile(tmp_path / "a.safetensors") as f:
        assert f.metadata == {"format": "pt", "k": "v"}


def test_reference_files_read_by_us(tmp_path):
    tensors = {k: v.contiguous() for k, v in _tensors().items()}
    safetensors.torch.save_file(tensors, tmp_path / "b.safetensors")
    ours = load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(ours[k], v) for k, v in tensors.items())


def test_read_with_dtype_conversion(tmp_path):
    save_file({"w": torch.randn(4, 4), "i": torch.arange(3)}, tmp_path / "c.safetensors")
    with SafetensorsFile(tmp_path / "c.safetensors") as f:
        assert f.read("w", dtype=torch.bfloat16).dtype == torch.bfloat16
        assert f.read("i", dtype=torch.bfloat16).dtype == torch.int64  # integers keep their dtype


@pytest.mark.parametrize("keep", [4, 20, -1])
def test_truncated_file_names_file_and_tensor(tmp_path, keep):
    path = tmp_path / "trunc.safetensors"
    save_file({"a": torch.zeros(10), "b": torch.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(SafetensorsError, match="trunc.safetensors") as err:
        SafetensorsFile(path)
    if keep == -1:
        assert "'b'" in str(err.value)


def test_garbage_header_is_reported(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((16).to_bytes(8, "little") + b"{this is not js}" + b"\0" * 8)
    with pytest.raises(SafetensorsError, match="not valid JSON"):
        SafetensorsFile(path)


def test_failed_write_leaves_previous_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3)}, path)
    with pytest.raises(TypeError):
        save_file({"a": torch.zeros(3), "bad": torch.zeros(2, dtype=torch.complex64)}, path)
    assert torch.equal(load_file(path)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


# ------------------------------------------------------------------ strict parsing, against the reference
def _file(header: dict | bytes, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _entry(dtype: str = "F32", shape: list | None = None, offsets: list | None = None) -> dict:
    return {"dtype": dtype, "shape": shape if shape is not None else [2], "data_offsets": offsets or [0, 8]}


DATA = struct.pack("<4f", 1, 2, 3, 4)
TWO = {"a": _entry(offsets=[0, 8]), "b": _entry(offsets=[8, 16])}

# name -> (file bytes, what our message must name besides the file)
MALFORMED = {
    "stray bytes after the header": (_file(TWO, b"\0" * 8 + DATA), "8 bytes that no tensor covers"),
    "bytes after the last tensor": (_file(TWO, DATA + b"zz"), "2 bytes that no tensor covers"),
    "gap between tensors": (_file({"a": _entry(), "b": _entry(offsets=[12, 20])}, DATA + b"1234"), "'b'"),
    "overlapping tensors": (_file({"a": _entry(), "b": _entry()}, DATA[:8]), "overlaps"),
    "zero-size tensor inside another": (
        _file({"a": _entry(shape=[0], offsets=[4, 4]), "b": _entry()}, DATA[:8]),
        "'a'",
    ),
    "end before begin": (_file({"a": _entry(shape=[0], offsets=[8, 0]), "b": _entry()}, DATA[:8]), "'a'"),
    "duplicate tensor key": (
        _file(
            b'{"a":' + json.dumps(_entry()).encode() + b',"a":' + json.dumps(_entry(offsets=[8, 16])).encode() + b"}",
            DATA,
        ),
        "'a' twice",
    ),
    "duplicate field": (
        _file(b'{"a":{"dtype":"F32","shape":[2],"shape":[2],"data_offsets":[0,8]}}', DATA[:8]),
        "twice",
    ),
    "boolean in shape": (_file({"a": _entry(shape=[True, 2])}, DATA[:8]), "'a'"),
    "float in shape": (_file({"a": _entry(shape=[2.0])}, DATA[:8]), "'a'"),
    "negative shape": (_file({"a": _entry(shape=[-2])}, DATA[:8]), "'a'"),
    "shape past 64 bits": (_file({"a": _entry(shape=[2**64])}, DATA[:8]), "'a'"),
    "shape overflowing 64 bits": (_file({"a": _entry(shape=[2**32, 2**32], offsets=[0, 0])}, b""), "'a'"),
    "float offsets": (_file({"a": _entry(offsets=[0.0, 8])}, DATA[:8]), "'a'"),
    "three offsets": (_file({"a": _entry(offsets=[0, 8, 8])}, DATA[:8]), "'a'"),
    "unknown dtype": (_file({"a": _entry(dtype="F33")}, DATA[:8]), "'a'"),
    "lower-case dtype": (_file({"a": _entry(dtype="f32")}, DATA[:8]), "'a'"),
    "entry not an object": (_file({"a": [1]}, DATA[:8]), "'a'"),
    "entry lacks offsets": (_file({"a": {"dtype": "F32", "shape": [2]}}, DATA[:8]), "'a'"),
    "metadata value not a string": (_file({"__metadata__": {"x": 1}, "a": _entry()}, DATA[:8]), "__metadata__"),
    "metadata not a map": (_file({"__metadata__": [], "a": _entry()}, DATA[:8]), "__metadata__"),
    "NaN literal": (_file(b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', DATA[:8]), "NaN"),
    "unpaired surrogate": (_file(b'{"\\ud800":' + json.dumps(_entry()).encode() + b"}", DATA[:8]), "surrogate"),
    "NUL padding": (_file(json.dumps(TWO).encode() + b"\0", DATA), "not valid JSON"),
    "UTF-16 header": (_file(json.dumps(TWO).encode("utf-16"), DATA), "not valid UTF-8"),
    "top level array": (_file(b"[]", b""), "not a JSON object"),
    "empty header, stray data": (_file(b"{}", b"abc"), "3 bytes that no tensor covers"),
}

# valid variants that other writers produce: both readers take them, with the same values
WELL_FORMED = {
    "space padding": _file(json.dumps(TWO).encode() + b"    ", DATA),
    "leading whitespace": _file(b" \n" + json.dumps(TWO).encode(), DATA),
    "keys not in offset order": _file({"b": _entry(offsets=[8, 16]), "a": _entry(offsets=[0, 8])}, DATA),
    "zero-size tensors at the ends": _file(
        {"z": _entry(shape=[0], offsets=[0, 0]), "a": _entry(), "y": _entry(shape=[0], offsets=[8, 8])}, DATA[:8]
    ),
    "null metadata": _file({"__metadata__": None, **TWO}, DATA),
    "unknown entry field": _file({"a": {**_entry(), "x": 1}}, DATA[:8]),
    "no tensors": _file(b"{}", b""),
}


def _reference_loads(path) -> dict[str, torch.Tensor]:
    with safe_open(path, "pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_files_the_reference_refuses_we_refuse_naming_file_and_tensor(tmp_path, case):
    blob, named = MALFORMED[case]
    path = tmp_path / "odd.safetensors"
    path.write_bytes(blob)
    with pytest.raises(Exception):  # noqa: B017 - the reference raises its own SafetensorError
        _reference_loads(path)
    with pytest.raises(SafetensorsError) as err:
        load_file(path)
    assert str(path) in str(err.value) and named in str(err.value)


@pytest.mark.parametrize("case", list(WELL_FORMED))
def test_files_the_reference_accepts_we_read_alike(tmp_path, case):
    path = tmp_path / "fine.safetensors"
    path.write_bytes(WELL_FORMED[case])
    ours, ref = load_file(path), _reference_loads(path)
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
