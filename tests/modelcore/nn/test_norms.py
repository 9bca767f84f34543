"""RMSNorm: the fused inference path gives the written-out arithmetic's results, bit for bit."""

from __future__ import annotations

import pytest
import torch

from modelcore.nn.norms import RMSNorm


def written_out(norm: RMSNorm, hidden: torch.Tensor) -> torch.Tensor:
    """The reference formula (transformers' LlamaRMSNorm): fp32 variance, rsqrt, cast back, times the weight."""
    x = hidden.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x.to(hidden.dtype)


@pytest.mark.parametrize("size", [64, 100, 576, 768, 2048, 4096])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 33)])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
def test_inference_in_fp32_equals_the_written_out_norm(size: int, shape: tuple[int, int], scale: float) -> None:
    generator = torch.Generator().manual_seed(size)
    norm = RMSNorm(size, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(size, generator=generator))
    hidden = torch.randn(*shape, size, generator=generator) * scale
    with torch.inference_mode():
        assert torch.equal(norm(hidden), written_out(norm, hidden))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_computes_in_fp32_and_casts_back(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    norm = RMSNorm(256).to(dtype)
    hidden = torch.randn(2, 5, 256, generator=generator).to(dtype)
    with torch.inference_mode():
        out = norm(hidden)
    assert out.dtype == dtype and torch.equal(out, written_out(norm, hidden))


def test_training_keeps_the_gradient_of_the_written_out_norm() -> None:
    generator = torch.Generator().manual_seed(0)
    norm = RMSNorm(128)
    hidden = torch.randn(4, 128, generator=generator, requires_grad=True)
    norm(hidden).square().sum().backward()
    grad = hidden.grad.clone()
    hidden.grad = None
    written_out(norm, hidden).square().sum().backward()
    assert torch.equal(hidden.grad, grad)
