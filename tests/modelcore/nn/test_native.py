"""modelcore's native matrix-vector kernel: torch's results on every shape, the build cached per CPU, and a clear
fallback where it cannot be built."""

from __future__ import annotations

import ctypes
import logging
import stat
from pathlib import Path

import pytest
import torch

from modelcore.nn import native

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernel is not built")


def misaligned(weight: torch.Tensor, floats: int) -> torch.Tensor:
    """``weight`` copied to a storage offset of ``floats`` floats (as a tensor memory-mapped from a file may be)."""
    storage = torch.empty(weight.numel() + floats)
    view = storage[floats:].view(weight.shape)
    view.copy_(weight)
    return view


@needs_native
@pytest.mark.parametrize("rows", [1, 2, 3, 7])
@pytest.mark.parametrize(("out_features", "in_features"), [(1000, 768), (37, 83), (8, 16), (5, 3), (4096, 2048)])
@pytest.mark.parametrize("offset", [0, 1, 8, 15])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_torch_linear(rows: int, out_features: int, in_features: int, offset: int, bias: bool) -> None:
    generator = torch.Generator().manual_seed(rows * 1000 + out_features + offset)
    weight = misaligned(torch.randn(out_features, in_features, generator=generator), offset)
    b = torch.randn(out_features, generator=generator) if bias else None
    x = torch.randn(rows, 1, in_features, generator=generator)  # (B, T, C): rows of a decode step
    out = native.linear(x, weight, b)
    assert out.shape == (rows, 1, out_features) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, b), rtol=1e-5, atol=1e-4)


def untiled(copy: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The (out_features, in_features) weight a tiled copy holds."""
    tiles, chunks, rows, columns = copy.shape
    return copy.transpose(1, 2).reshape(tiles * rows, chunks * columns)[:out_features, :in_features]


@needs_native
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7])
@pytest.mark.parametrize(
    ("out_features", "in_features"), [(1000, 768), (37, 83), (8, 16), (5, 3), (1, 17), (4096, 2048)]
)
@pytest.mark.parametrize("bias", [False, True])
def test_a_tiled_copy_gives_torch_linear(rows: int, out_features: int, in_features: int, bias: bool) -> None:
    """Odd row counts (a half tile), columns that are not whole vectors (the zero-padded tail), 1-7 input rows."""
    generator = torch.Generator().manual_seed(rows * 1000 + out_features)
    weight = torch.randn(out_features, in_features, generator=generator)
    b = torch.randn(out_features, generator=generator) if bias else None
    x = torch.randn(rows, 1, in_features, generator=generator)
    (copy,) = native.tiled_copies([weight])
    assert copy.shape == (-(-out_features // 2), -(-in_features // 16), 2, 16) and copy.data_ptr() % 64 == 0
    assert torch.equal(untiled(copy, out_features, in_features), weight)
    assert copy.view(copy.shape[0], -1).sum().isfinite()  # the padding is zeros, not whatever the memory held
    out = native.unchecked_tiled_linear(x, copy, b, out_features)
    assert out.shape == (rows, 1, out_features)
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, b), rtol=1e-5, atol=1e-4)


@needs_native
def test_tiled_copies_share_one_region_and_keep_their_values() -> None:
    weights = [torch.randn(7, 33), torch.randn(64, 64), torch.randn(3, 5)]
    copies = native.tiled_copies(weights)
    assert len({copy.untyped_storage().data_ptr() for copy in copies}) == 1
    for copy, weight in zip(copies, weights, strict=True):
        assert torch.equal(untiled(copy, *weight.shape), weight) and copy.data_ptr() % 64 == 0


@needs_native
def test_the_vector_exp_of_softmax_and_silu_is_within_one_ulp_of_torch() -> None:
    """The native decoder's exp (SiLU, softmax): within 1 ulp of torch.exp on [-87, 88], 0 below (-inf too), NaN
    kept; the tail of a length that is not whole vectors included."""
    function = native._library().modelcore_exp_f32
    function.argtypes, function.restype = [ctypes.c_void_p, ctypes.c_int64], None
    x = torch.cat([torch.linspace(-87, 88, 200_003), torch.randn(10_000, generator=torch.Generator().manual_seed(0))])
    specials = torch.tensor([0.0, -0.0, 1.0, -1.0, float("nan"), float("-inf"), -90.0, -1000.0])
    x = torch.cat([x, specials])
    y = x.clone()
    function(y.data_ptr(), y.numel())
    expected = torch.exp(x[: -len(specials)].double())
    ulps = (y[: -len(specials)].double() - expected).abs() / expected / 2**-23
    assert ulps.max() <= 1.0
    tail = y[-len(specials) :]
    assert tail[:4].tolist() == pytest.approx([1.0, 1.0, 2.7182817, 0.36787945])
    assert tail[4].isnan() and tail[5:].tolist() == [0.0, 0.0, 0.0]


@needs_native
def test_argmax_gives_torch_max_indices_ties_nans_and_infinities_included() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 32000, generator=generator)
    scores[1, [7, 900, 31999]] = 50.0  # a tie: the first one
    scores[2, [12, 3000]] = float("nan")  # a NaN counts as the maximum: the first NaN
    scores[3] = float("-inf")  # nothing but -inf: index 0
    scores[4, -1] = float("inf")
    scores[5, :5] = 9.0
    expected = scores.max(dim=-1).indices
    assert torch.equal(native.argmax(scores), expected) and expected[1:4].tolist() == [7, 12, 0]
    assert torch.equal(native.argmax(scores.t().contiguous().t()), expected)  # a non-contiguous view
    assert torch.equal(native.argmax(scores[:, :17]), scores[:, :17].max(dim=-1).indices)
    assert native.argmax(scores.double()) is None and native.argmax(scores[0]) is None  # other kinds: torch's


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_any_thread_count_gives_the_same_result(threads: int) -> None:
    generator = torch.Generator().manual_seed(0)
    weight, x = torch.randn(2051, 512, generator=generator), torch.randn(1, 512, generator=generator)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected = native.linear(x, weight)
        (copy,) = native.tiled_copies([weight])
        tiled = native.unchecked_tiled_linear(x, copy, None, 2051)
        torch.set_num_threads(threads)
        assert torch.equal(native.linear(x, weight), expected)  # each output sums its row alone, in one order
        assert torch.equal(native.unchecked_tiled_linear(x, copy, None, 2051), tiled)
    finally:
        torch.set_num_threads(before)


@needs_native
def test_a_non_contiguous_input_is_read_as_its_values() -> None:
    weight, x = torch.randn(64, 32), torch.randn(32, 3).t()  # (3, 32), not contiguous
    torch.testing.assert_close(native.linear(x, weight), torch.nn.functional.linear(x, weight), rtol=1e-5, atol=1e-4)


@needs_native
@pytest.mark.parametrize(
    ("x", "weight", "bias", "message"),
    [
        (torch.randn(1, 16), torch.randn(8, 16, dtype=torch.bfloat16), None, "float32"),
        (torch.randn(1, 16), torch.randn(16, 8).t(), None, "contiguous: False"),
        (torch.randn(1, 16, dtype=torch.float64), torch.randn(8, 16), None, "float64"),
        (torch.randn(1, 15), torch.randn(8, 16), None, "x has 15 features, the weight takes 16"),
        (torch.randn(1, 16), torch.randn(8, 16), torch.randn(7), r"bias must be contiguous float32 of shape \(8,\)"),
    ],
)
def test_bad_inputs_are_refused_by_name(x, weight, bias, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        native.linear(x, weight, bias)


@pytest.fixture
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty modelcore cache and a kernel not yet loaded in this process (restored afterwards)."""
    monkeypatch.setenv("MODELCORE_CACHE", str(tmp_path))
    native._kernel.cache_clear()
    native._library.cache_clear()
    yield tmp_path / "kernels"
    native._kernel.cache_clear()
    native._library.cache_clear()


@needs_native
def test_the_build_is_cached_per_cpu(fresh_build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = native._build()
    assert first.parent == fresh_build and [p.name for p in fresh_build.iterdir()] == [first.name]  # no temp left
    built = first.stat().st_mtime_ns
    assert native._build() == first and first.stat().st_mtime_ns == built  # found, not compiled again
    monkeypatch.setattr(native, "_cpu_identity", lambda: b"another CPU")
    other = native._build()
    assert other != first and other.is_file()  # a library built for one CPU is never loaded on another


def write_compiler(directory: Path, body: str) -> str:
    script = directory / "cc"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize(
    ("compiler", "reason"),
    [
        ("echo 'cc 1.0'; case \"$1\" in --version) exit 0;; esac; echo 'gemv.c:1: error: no' >&2; exit 1", "error: no"),
        ("exit 3", "returned non-zero exit status 3"),
    ],
)
def test_a_compiler_that_fails_leaves_torch_kernels_in_use(
    fresh_build: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, compiler: str, reason: str
) -> None:
    monkeypatch.setenv("CC", write_compiler(fresh_build.parent, compiler))
    with caplog.at_level(logging.INFO, logger=native.__name__):
        assert not native.available()
    assert "native decoding kernel is unavailable" in caplog.text and reason in caplog.text
    assert not fresh_build.exists() or not any(fresh_build.iterdir())  # nothing half-written left behind
    with pytest.raises(RuntimeError, match="not available"):
        native.linear(torch.randn(1, 16), torch.randn(8, 16))


@needs_native
def test_a_kernel_that_disagrees_with_torch_is_not_used(
    fresh_build: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native, "_agrees_with_torch", lambda gemv, tiled: False)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert not native.available()
    assert "disagrees with torch" in caplog.text


def test_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert not native.available()
    with pytest.raises(RuntimeError, match=native.ENV_SWITCH):
        native.linear(torch.randn(1, 16), torch.randn(8, 16))
