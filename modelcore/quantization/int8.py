"""``int8_dynamic``: CPU inference with int8 weights and dynamically quantized int8 activations.

Each Linear becomes an ``Int8DynamicLinear``: weights rounded to int8 with one symmetric scale
per output channel; at run time the activations of each call are quantized to uint8 with one
scale and zero point (so no calibration data is needed) and multiplied in torch's fbgemm/oneDNN
int8 kernels (``torch.ops.quantized.linear_dynamic``), which fuse the quantization of the
input, the int8 matmul and the rescaling. It is CPU-only.

Stored layout, plain safetensors that any reader can use (the fbgemm packed weight is not):
``<layer>.weight`` int8 (out, in), ``<layer>.weight_scale`` float32 (out,), ``<layer>.bias``.
The kernel's packed copy is built from them on the first call. (torch marks its quantized-tensor
API deprecated in favour of torchao; ``torch.ao.quantization.quantize_dynamic`` gives the same
kernels. The benchmark compares torchao's int8 path: see benchmarks/README.md.)
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from modelcore.quantization.base import Quantizer
from modelcore.quantization.config import Int8DynamicConfig

_INT8_MAX = 127


class Int8DynamicLinear(nn.Module):
    """``y = x W^T + b`` with W in int8 (per-output-channel scales) and x quantized per call.

    Args:
        in_features, out_features: as ``nn.Linear``.
        bias: whether there is a (full-precision) bias.
        reduce_range: quantize activations to 7 bits (see ``Int8DynamicConfig``).
        device: where the (empty) buffers are made; ``"meta"`` for a model that a checkpoint fills.
    """

    quantized_by: ClassVar[str] = "int8_dynamic"

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, reduce_range: bool = True, device: Any = None
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.reduce_range = reduce_range
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.empty(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None
        self._packed: Any = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, reduce_range: bool = True) -> Int8DynamicLinear:
        """Quantize ``linear``'s weight (symmetric, per output channel); its bias is kept as is."""
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, reduce_range, device="meta")
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / _INT8_MAX  # (out,)
        module.weight = torch.round(weight / scale[:, None]).clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8)
        module.weight_scale = scale
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return module

    def reset_packed(self) -> None:
        """Drop the kernel's packed weight (rebuilt on the next call); needed after the buffers change."""
        self._packed = None

    def _pack(self) -> Any:
        scales = self.weight_scale.double()
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        bias = None if self.bias is None else self.bias.detach().float()
        with warnings.catch_warnings():  # torch's quantized tensors are deprecated; the kernels are what we use
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor, torch.quantize_per_channel.*")
            qweight = torch._make_per_channel_quantized_tensor(self.weight.cpu(), scales.cpu(), zero_points, 0)
            return torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("int8_dynamic runs on the CPU only (torch's int8 kernels are CPU kernels)")
        if self._packed is None:
            self._packed = self._pack()
        out = torch.ops.quantized.linear_dynamic(x.float(), self._packed, self.reduce_range)  # (..., out)
        return out.to(x.dtype)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.reset_packed()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"reduce_range={self.reduce_range}"
        )


class Int8DynamicQuantizer(Quantizer):
    """Per-channel int8 weights, per-call int8 activations, fbgemm kernels (CPU)."""

    name = "int8_dynamic"
    config_class = Int8DynamicConfig
    config: Int8DynamicConfig

    @classmethod
    def default_config(cls, **options: Any) -> Int8DynamicConfig:
        return Int8DynamicConfig(**options)

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        if linear.weight.device.type != "cpu":
            raise ValueError("int8_dynamic quantizes for the CPU; load the model on the CPU first")
        return Int8DynamicLinear.from_linear(linear, self.config.reduce_range).train(linear.training)

    def empty_linear(self, linear: nn.Linear) -> nn.Module:
        return Int8DynamicLinear(
            linear.in_features, linear.out_features, linear.bias is not None, self.config.reduce_range, device="meta"
        )

    def load_linear(self, module: nn.Module, pieces: dict[str, torch.Tensor]) -> None:
        pieces = dict(pieces)
        weight, scale = pieces.pop("weight", None), pieces.pop("weight_scale", None)
        if weight is None or scale is None:
            raise ValueError("an int8_dynamic layer needs 'weight' and 'weight_scale'")
        if pieces:
            raise ValueError(f"unexpected pieces for an int8_dynamic layer: {sorted(pieces)}")
        if weight.dtype != torch.int8 or tuple(weight.shape) != (module.out_features, module.in_features):
            raise ValueError(
                f"'weight' is {weight.dtype} {tuple(weight.shape)}, expected torch.int8 "
                f"{(module.out_features, module.in_features)}"
            )
        if tuple(scale.shape) != (module.out_features,):
            raise ValueError(f"'weight_scale' has shape {tuple(scale.shape)}, expected {(module.out_features,)}")
        module.weight = weight
        module.weight_scale = scale.float()
        module.reset_packed()
