"""Our safetensors reader/writer against the reference `safetensors` package."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

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
