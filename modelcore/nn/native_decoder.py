"""A pre-norm decoder layer's decode step in native code, for models that chose the native kernel.

Once the matrix-vector products read the weights at the memory's speed (``native.py``), what is left of a decode
step at batch 1 is the rest of each layer: two norms, rotary positions, attention over the cache, the gated
activation and two residual adds, some fifty torch ops a layer at a few microseconds each (about a quarter of a
step of a 100M Llama; benchmarks/README.md). ``decoder_step`` runs a whole layer as two calls into
``kernels/gemv.c`` (norm, q/k/v products and rotation; then attention, output product, norm, gated MLP), with the
cache append in between done by the model's own cache (``DynamicCache`` or ``StaticCache``), so the cache code and
its layout stay the cache's.

It applies to the layers of Llama-like models (RMSNorm, rotary "rotate half" positions, grouped-query attention,
a SiLU-gated MLP, optional biases) where all of these hold, else it returns None and the layer runs its torch ops:

* a ``packed_decoding`` scope is active and its model chose the native kernel for all seven of the layer's
  linear layers (plain ``nn.Linear`` with no hooks, fp32, on a CPU: ``packed_linear``);
* the norms are plain ``RMSNorm`` with fp32 weights, no module of the layer has hooks (nor are global module
  hooks set), the layer is in eval mode, the activation is SiLU;
* the call: fewer than ``MIN_ROWS`` sequences of one new token each, fp32, no autograd, not compiling, a cache,
  no attention weights asked for.

The result is the torch layer's up to float rounding (the sums run in another order); tests compare both, and
greedy tokens, on several shapes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import nn

from modelcore.nn import native
from modelcore.nn.norms import RMSNorm
from modelcore.nn.packed_linear import MIN_ROWS, active_scope

_SIZES = ("hidden", "heads", "kv_heads", "head_dim", "intermediate")
_SCALARS = ("eps_attention", "eps_mlp", "scaling")
_ADDRESSES = ("norm_attention", "norm_mlp", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "wg", "bg", "wu", "bu")
_ADDRESSES += ("wd", "bd")


class _Layer(ctypes.Structure):
    """``modelcore_decoder_layer`` of ``kernels/gemv.c``: a layer's sizes and its weights' addresses."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in _SIZES),
        *((name, ctypes.c_float) for name in _SCALARS),
        *((name, ctypes.c_void_p) for name in _ADDRESSES),
    ]


@dataclass
class _Plan:
    layer: _Layer
    tensors: tuple[torch.Tensor, ...]  # kept alive while the plan is; the norms' weights are checked per call
    norms: tuple[nn.Parameter, nn.Parameter]
    sizes: tuple[int, int, int, int, int]  # hidden, heads, kv_heads, head_dim, intermediate


_INELIGIBLE = object()  # a layer's plan when the layer does not qualify


def decoder_step(
    layer: nn.Module,
    attention: nn.Module,
    mlp: nn.Module,
    norms: tuple[nn.Module, nn.Module],
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor | None,
    cache,
    cache_position: torch.Tensor | None,
) -> torch.Tensor | None:
    """The layer's output (B, 1, C) for one new token per sequence, or None where the native path does not apply.

    Args:
        layer: the decoder layer (its plan is kept per model packing, keyed by it).
        attention: its self-attention, with ``q_proj``/``k_proj``/``v_proj``/``o_proj``, ``layer_idx``,
            ``head_dim``, ``scaling`` and ``config.num_attention_heads``/``num_key_value_heads``.
        mlp: its MLP, with ``gate_proj``/``up_proj``/``down_proj`` and ``config.hidden_act``.
        norms: (before attention, before the MLP).
        hidden: (B, 1, C) the residual stream; not changed.
        position_embeddings: cos, sin (B|1, 1, hs).
        mask: None (every cached position) or a (B|1, 1, 1, S) boolean mask, True where a key may be read.
        cache: the model's cache; its ``update`` appends this step's keys and values.
        cache_position: passed to ``cache.update``.
    """
    if torch.compiler.is_compiling():  # a compiled graph keeps the torch ops (and reads no ContextVar)
        return None
    scope = active_scope()
    if (
        scope is None
        or not scope.native
        or cache is None
        or hidden.dtype != torch.float32
        or hidden.dim() != 3
        or hidden.shape[1] != 1
        or hidden.shape[0] >= MIN_ROWS
        or torch.is_grad_enabled()
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    ):
        return None
    plan = scope.decoder_plans.get(layer)
    if plan is None or (plan is not _INELIGIBLE and not _current(plan, norms)):
        plan = _plan(scope.native, layer, attention, mlp, norms) or _INELIGIBLE
        scope.decoder_plans[layer] = plan
    if plan is _INELIGIBLE:
        return None
    functions = native.decoder_layer_functions()
    cos, sin = position_embeddings
    if functions is None or not _rope_fits(cos, sin, hidden.shape[0], plan.sizes[3]):
        return None
    if mask is not None and not (
        mask.dtype == torch.bool
        and mask.dim() == 4
        and mask.shape[0] in (1, hidden.shape[0])
        and mask.shape[1:3] == (1, 1)
    ):
        return None
    attention_in, attention_out_mlp = functions
    c, heads, kv_heads, hd, inter = plan.sizes
    b, nq, nk, threads = hidden.shape[0], heads * hd, kv_heads * hd, torch.get_num_threads()

    out = hidden.reshape(b, c).clone()  # the new residual stream, written in place by the C code
    qkv = torch.empty(b * (nq + 2 * nk))  # q (B, nq), k and v (B, nk): each contiguous
    q, k, v = qkv[: b * nq], qkv[b * nq : b * (nq + nk)], qkv[b * (nq + nk) :]
    scratch = torch.empty(b * (nq + c + 2 * inter))
    xn, attn = scratch[: b * c], scratch[b * c : b * (c + nq)]
    gate, up = scratch[b * (c + nq) : b * (c + nq + inter)], scratch[b * (c + nq + inter) :]
    cos, sin = cos.contiguous(), sin.contiguous()
    rope_stride = cos.stride(0) if cos.shape[0] > 1 else 0
    layer_address = ctypes.addressof(plan.layer)
    attention_in(
        layer_address, out.data_ptr(), b, cos.data_ptr(), sin.data_ptr(), rope_stride,
        xn.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), threads,
    )  # fmt: skip
    keys, values = cache.update(
        k.view(b, 1, kv_heads, hd).transpose(1, 2),
        v.view(b, 1, kv_heads, hd).transpose(1, 2),
        attention.layer_idx,
        cache_position,
    )  # (B, nkv, S, hs) each
    if any(t.dtype != torch.float32 or t.stride(-1) != 1 or t.shape[0] != b for t in (keys, values)):
        raise RuntimeError(
            f"the cache returned keys/values the native decoder cannot read: {keys.dtype}, {tuple(keys.shape)}, "
            f"strides {keys.stride()} (fp32, last dimension contiguous, {b} rows expected)"
        )
    s = keys.shape[-2]
    if mask is None:
        mask_address, mask_strides = None, (0, 0)
    else:
        if mask.shape[-1] != s:
            raise RuntimeError(f"mask covers {mask.shape[-1]} positions, the cache {s}")
        mask_address = mask.data_ptr()
        mask_strides = (mask.stride(0) if mask.shape[0] > 1 else 0, mask.stride(-1))
    scores = torch.empty(threads * s)
    attention_out_mlp(
        layer_address, out.data_ptr(), b, q.data_ptr(),
        keys.data_ptr(), keys.stride(0), keys.stride(1), keys.stride(2),
        values.data_ptr(), values.stride(0), values.stride(1), values.stride(2),
        s, mask_address, *mask_strides,
        attn.data_ptr(), xn.data_ptr(), gate.data_ptr(), up.data_ptr(), scores.data_ptr(), threads,
    )  # fmt: skip
    return out.view(b, 1, c)


def _current(plan: _Plan, norms: tuple[nn.Module, nn.Module]) -> bool:
    """The norms still hold the weights the plan points at (the linear layers are checked by the scope)."""
    return norms[0].weight is plan.norms[0] and norms[1].weight is plan.norms[1]


def _rope_fits(cos: torch.Tensor, sin: torch.Tensor, rows: int, head_dim: int) -> bool:
    return (
        cos.dtype == sin.dtype == torch.float32
        and cos.shape == sin.shape
        and cos.dim() == 3
        and cos.shape[0] in (1, rows)
        and cos.shape[1] == 1
        and cos.shape[2] == head_dim
    )


def _plan(
    chosen: frozenset[nn.Module], layer: nn.Module, attention: nn.Module, mlp: nn.Module, norms: tuple[nn.Module, ...]
) -> _Plan | None:
    """The layer's sizes and weight addresses for the C code, or None when the layer does not qualify."""
    linears = [getattr(attention, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    if any(linear not in chosen for linear in linears):  # chosen: plain nn.Linear, fp32, no hooks (packed_linear)
        return None
    if any(type(norm) is not RMSNorm for norm in norms) or layer.training:
        return None
    if any(m._forward_hooks or m._forward_pre_hooks for m in (layer, attention, mlp, *norms)):
        return None
    config = getattr(attention, "config", None)
    if config is None or getattr(config, "hidden_act", None) != "silu":
        return None
    heads, kv_heads, hd = config.num_attention_heads, config.num_key_value_heads, attention.head_dim
    q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj = linears
    c, inter = q_proj.in_features, gate_proj.out_features
    if (
        hd % 2
        or heads % kv_heads
        or q_proj.out_features != heads * hd
        or k_proj.out_features != kv_heads * hd
        or v_proj.out_features != kv_heads * hd
        or o_proj.in_features != heads * hd
        or o_proj.out_features != c
        or up_proj.out_features != inter
        or down_proj.in_features != inter
        or down_proj.out_features != c
    ):
        return None
    norm_weights = [norm.weight for norm in norms]
    if any(not native.eligible(w[None]) or w.shape != (c,) for w in norm_weights):
        return None
    tensors = [w.detach() for w in norm_weights]
    addresses = [w.data_ptr() for w in tensors]
    for linear in linears:
        tensors += [linear.weight.detach()] + ([] if linear.bias is None else [linear.bias.detach()])
        addresses += [linear.weight.data_ptr(), None if linear.bias is None else linear.bias.data_ptr()]
    layer_struct = _Layer(
        c, heads, kv_heads, hd, inter,
        norms[0].variance_epsilon, norms[1].variance_epsilon, attention.scaling,
        *addresses,
    )  # fmt: skip
    return _Plan(layer_struct, tuple(tensors), (norm_weights[0], norm_weights[1]), (c, heads, kv_heads, hd, inter))
