"""Rotary position embeddings (RoFormer, Su et al. 2021) and the context-extension variants checkpoints use.

A head of width hs is split in two halves that are rotated as pairs ``(x[i], x[i + hs/2])`` by the angle
``position * inv_freq[i]`` (the Hugging Face "rotate_half" layout, which the published Llama weights assume).
The variants differ only in how ``inv_freq`` (hs/2 frequencies) is derived, and yarn also scales cos/sin:

* ``default``: ``inv_freq[i] = theta ** (-2i / hs)``
* ``linear``: position interpolation, every frequency divided by ``factor``
* ``dynamic``: NTK-aware, ``theta`` grown with the sequence once it passes ``max_position_embeddings``
* ``llama3``: Llama 3.1/3.2 band smoothing: long wavelengths divided by ``factor``, short ones kept,
  a linear blend between ``original_max_position_embeddings / high_freq_factor`` and ``/ low_freq_factor``
* ``yarn``: per-dimension ramp between interpolation and extrapolation, plus an attention temperature
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class RopeSettings:
    """What the frequency functions need, read once from a model config."""

    dim: int  # hs, the rotated width
    theta: float
    max_position_embeddings: int
    scaling: dict[str, Any] = field(default_factory=dict)  # rope_scaling without rope_theta; {} for default

    @classmethod
    def from_config(cls, config: Any) -> RopeSettings:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(head_dim, float(config.rope_theta), config.max_position_embeddings, dict(config.rope_scaling or {}))

    @property
    def rope_type(self) -> str:
        return self.scaling.get("rope_type", self.scaling.get("type", "default"))


def _base_inv_freq(dim: int, theta: float | torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """theta ** (-2i / dim) for i < dim/2, in fp32."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
    return 1.0 / (theta**exponents)


# Each function: (settings, device, seq_len) -> (inv_freq (hs/2,) fp32, attention_scaling applied to cos/sin).
def _default(rope: RopeSettings, device: torch.device | None, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(rope.dim, rope.theta, device), 1.0


def _linear(rope: RopeSettings, device: torch.device | None, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(rope.dim, rope.theta, device) / rope.scaling["factor"], 1.0


def _dynamic(rope: RopeSettings, device: torch.device | None, seq_len: int | None) -> tuple[torch.Tensor, float]:
    # theta' = theta * (factor * L / L0 - (factor - 1)) ** (hs / (hs - 2)); theta' = theta while L <= L0.
    # Computed on fp32 tensors, as transformers does, so the frequencies agree bit for bit.
    factor, max_len = rope.scaling["factor"], rope.max_position_embeddings
    length = torch.tensor(float(max(seq_len or 0, max_len)), device=device)
    theta = rope.theta * ((factor * length / max_len) - (factor - 1)) ** (rope.dim / (rope.dim - 2))
    return _base_inv_freq(rope.dim, theta, device), 1.0


def _llama3(rope: RopeSettings, device: torch.device | None, seq_len: int | None) -> tuple[torch.Tensor, float]:
    inv_freq = _base_inv_freq(rope.dim, rope.theta, device)
    factor = rope.scaling["factor"]
    low_freq_factor, high_freq_factor = rope.scaling["low_freq_factor"], rope.scaling["high_freq_factor"]
    old_context_len = rope.scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor  # longer wavelengths: interpolate fully
    high_freq_wavelen = old_context_len / high_freq_factor  # shorter wavelengths: keep as trained

    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


def _yarn(rope: RopeSettings, device: torch.device | None, seq_len: int | None) -> tuple[torch.Tensor, float]:
    dim, base, s = rope.dim, rope.theta, rope.scaling
    original_max = s.get("original_max_position_embeddings") or rope.max_position_embeddings
    factor = s.get("factor") or rope.max_position_embeddings / original_max

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        if s.get("mscale") and s.get("mscale_all_dim"):
            attention_factor = float(mscale(factor, s["mscale"]) / mscale(factor, s["mscale_all_dim"]))
        else:
            attention_factor = mscale(factor)

    def correction_dim(num_rotations: float) -> float:
        # the dimension whose wavelength fits num_rotations times into the original context
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(s.get("beta_fast") or 32), correction_dim(s.get("beta_slow") or 1)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp

    pos_freqs = base ** (torch.arange(0, dim, 2, device=device).float() / dim)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device=device) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp  # 1: keep the trained frequency, 0: interpolate by factor
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, attention_factor


RopeInitFn = Callable[[RopeSettings, "torch.device | None", "int | None"], tuple[torch.Tensor, float]]
ROPE_INIT_FUNCTIONS: dict[str, RopeInitFn] = {
    "default": _default,
    "linear": _linear,
    "dynamic": _dynamic,
    "llama3": _llama3,
    "yarn": _yarn,
}


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the positions of a batch, from ``config.head_dim``/``rope_theta``/``rope_scaling``.

    ``inv_freq`` is a non-persistent fp32 buffer (never in a checkpoint) that stays fp32 when the model
    is cast to a lower precision. It is computed at construction on the default device, or on the CPU
    when that is ``meta``, so a model whose parameters are built on the meta device still has real
    frequencies.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.rope = RopeSettings.from_config(config)
        if self.rope.rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(f"rope_type {self.rope.rope_type!r} is not one of {sorted(ROPE_INIT_FUNCTIONS)}")
        self._init_fn = ROPE_INIT_FUNCTIONS[self.rope.rope_type]
        device = torch.get_default_device()
        if device.type == "meta":
            device = torch.device("cpu")
        inv_freq, self.attention_scaling = self._init_fn(self.rope, device, None)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RotaryEmbedding:
        # model.to(torch.bfloat16) / .half() would round the frequencies; recompute them in fp32 instead
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32 and not self.inv_freq.is_meta:
            self.inv_freq = self._init_fn(self.rope, self.inv_freq.device, None)[0]
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)``, each (B, T, hs) in ``x.dtype``, for position_ids (B|1, T)."""
        inv_freq = self.inv_freq
        if inv_freq.is_meta:  # the module was moved to meta after construction: recompute
            inv_freq = self._init_fn(self.rope, x.device, None)[0]
        if self.rope.rope_type == "dynamic":
            seq_len = int(position_ids.max()) + 1
            if seq_len > self.rope.max_position_embeddings:
                inv_freq = self._init_fn(self.rope, x.device, seq_len)[0]
        freqs = position_ids[..., None].float() * inv_freq.to(device=x.device, dtype=torch.float32)  # (B, T, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hs)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.rope.dim}, theta={self.rope.theta}, rope_type={self.rope.rope_type!r}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries (B, nh, T, hs) and keys (B, nkv, T, hs) by cos/sin (B, T, hs).

    Args:
        unsqueeze_dim: the head axis of q and k, where cos/sin get a broadcast dimension.
    """
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
