"""Pre-norm decoder layers' decode step in native code, for models that chose the native kernel.

Once the matrix-vector products read the weights at the memory's speed (``native.py``), what is left of a decode
step at batch 1 is the rest of each layer: two norms, rotary positions, attention over the cache, the gated
activation and two residual adds, some fifty torch ops a layer at a few microseconds each, and the interpreter
between them running with its caches just flushed by the weights streaming through (together about a quarter of a
step of a 100M Llama; benchmarks/README.md). ``decoder_step`` runs a stack of layers (a model's whole stack, or
one layer) in one call into ``kernels/gemv.c``. The keys and values go into the model's own cache
(``DynamicCache`` or ``StaticCache``): its ``append_slots`` makes room for the new position and the C code writes
it there, so the cache's layout and bookkeeping stay the cache's.

It applies to the layers of Llama-like models (RMSNorm, rotary "rotate half" positions, grouped-query attention,
a SiLU-gated MLP, optional biases) where all of these hold, else it returns None and the caller runs its torch ops:

* a ``packed_decoding`` scope is active and its model chose the native kernel for all seven linear layers of
  every layer given (plain ``nn.Linear`` with no hooks, fp32, on a CPU: ``packed_linear``);
* the norms are plain ``RMSNorm`` with fp32 weights, no module of a layer has hooks (nor are global module
  hooks set), the layers are in eval mode, the activation is SiLU, all layers have the same sizes (checked when
  the stack's plan is made and again at the first step with each new cache, i.e. each ``generate`` call);
* the call: fewer than ``MIN_ROWS`` sequences of one new token each, fp32, no autograd, not compiling, a cache
  with room for the new position, no attention weights or hidden states asked for.

The model's final norm can come in the same call (``final_norm``). The result is the torch layers' up to float
rounding (the sums run in another order, exp is a vector polynomial within 1 ulp); tests compare both, and greedy
tokens, on several shapes, masks, caches and thread counts.
"""

from __future__ import annotations

import array
import ctypes
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from modelcore.nn import native
from modelcore.nn.norms import RMSNorm
from modelcore.nn.packed_linear import MIN_ROWS, PackedWeights, active_scope

_INTEGERS = ("hidden", "heads", "kv_heads", "head_dim", "intermediate", "tiled")
_SCALARS = ("eps_attention", "eps_mlp", "scaling")
_ADDRESSES = ("norm_attention", "norm_mlp", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "wg", "bg", "wu", "bu")
_ADDRESSES += ("wd", "bd")

# (attention, mlp, (norm before attention, norm before the MLP)) of a decoder layer
LayerParts = Callable[[nn.Module], tuple[nn.Module, nn.Module, tuple[nn.Module, nn.Module]]]


class _Layer(ctypes.Structure):
    """``modelcore_decoder_layer`` of ``kernels/gemv.c``: a layer's sizes and its weights' addresses."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in _INTEGERS),
        *((name, ctypes.c_float) for name in _SCALARS),
        *((name, ctypes.c_void_p) for name in _ADDRESSES),
    ]


@dataclass
class _Plan:
    """One layer's part of a stack: its struct, the tensors behind its addresses, and what is checked per call."""

    layer: _Layer
    tensors: tuple[torch.Tensor, ...]  # kept alive while the plan is; the norms' weights are checked per call
    norms: tuple[nn.Parameter, nn.Parameter]
    sizes: tuple[int, int, int, int, int]  # hidden, heads, kv_heads, head_dim, intermediate
    layer_idx: int  # the layer's slot in the cache


@dataclass
class _StackPlan:
    plans: list[_Plan]
    layers: ctypes.Array  # of _Layer, in order (read-only in C: shared by threads decoding with the model)
    sizes: tuple[int, int, int, int, int]
    layer_indices: tuple[int, ...]  # the layers' slots in the cache
    final: tuple[nn.Parameter, float] | None  # the final norm's weight and eps, where the C code applies it
    # the caches it was checked for (each thread decoding with the model has its own: no check per step)
    checked: weakref.WeakSet = field(default_factory=weakref.WeakSet)


@dataclass
class _Ineligible:
    """The plan of a stack that does not qualify (looked at again with the next cache)."""

    checked: weakref.WeakSet = field(default_factory=weakref.WeakSet)


def decoder_step(
    layers: Sequence[nn.Module],
    parts: LayerParts,
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor | None,
    cache,
    cache_position: torch.Tensor | None,
    final_norm: nn.Module | None = None,
) -> torch.Tensor | None:
    """The output (B, 1, C) of ``layers`` in order for one new token per sequence, or None where the native path
    does not apply (then nothing was changed, the cache included: the caller runs its torch layers).

    Args:
        layers: decoder layers, each with an ``layer_idx`` on its attention (its slot in the cache).
        parts: a layer's (attention, mlp, norms): the attention with ``q_proj``/``k_proj``/``v_proj``/``o_proj``,
            ``layer_idx``, ``head_dim``, ``scaling`` and ``config``; the MLP with ``gate_proj``/``up_proj``/
            ``down_proj``; the norms before attention and before the MLP.
        hidden: (B, 1, C) the residual stream; not changed.
        position_embeddings: cos, sin (B|1, 1, hs).
        mask: None (every cached position) or a (B|1, 1, 1, S) boolean mask, True where a key may be read.
        cache: the model's cache, with ``append_slots`` (``DynamicCache``, ``StaticCache``).
        cache_position: the new token's cache position (a ``StaticCache`` needs it).
        final_norm: the model's norm after its last layer, or None. When given, the output is normed by it: in the
            same C call where it is a plain fp32 ``RMSNorm`` without hooks (right after the weights streamed
            through the caches a torch norm costs 0.2 ms in cache misses on its own code), else by calling it.
    """
    if torch.compiler.is_compiling():  # a compiled graph keeps the torch ops (and reads no ContextVar)
        return None
    scope = active_scope()
    if (
        scope is None
        or not scope.native
        or cache is None
        or not hasattr(cache, "append_slots")
        or hidden.dtype != torch.float32
        or hidden.dim() != 3
        or hidden.shape[1] != 1
        or hidden.shape[0] >= MIN_ROWS
        or torch.is_grad_enabled()
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    ):
        return None
    key = (*layers, final_norm)
    stack = scope.decoder_plans.get(key)
    if stack is None or cache not in stack.checked:  # made, or checked again, at the first step with each cache
        if not isinstance(stack, _StackPlan) or not _still_fits(stack, layers, parts, final_norm):
            stack = _stack_plan(scope, layers, parts, final_norm) or _Ineligible()
            scope.decoder_plans[key] = stack
        stack.checked.add(cache)
    if not isinstance(stack, _StackPlan):
        return None
    function = native.decoder_stack_function()
    cos, sin = position_embeddings
    b = hidden.shape[0]
    c, heads, kv_heads, hd, inter = stack.sizes
    if function is None or not _rope_fits(cos, sin, b, hd):
        return None
    if mask is not None and not (
        mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[0] in (1, b) and mask.shape[1:3] == (1, 1)
    ):
        return None

    slots = cache.append_slots(stack.layer_indices, 1, cache_position)
    if slots is None:
        return None
    # this call's modelcore_layer_cache structs (threads may share the plan), ten 8-byte fields each: the keys' and
    # values' addresses, their strides (batch, head, position), the positions S and where the new one goes
    fields, longest = array.array("q"), 0
    for keys, values, first in slots:
        if keys.dtype != torch.float32 or values.dtype != torch.float32 or keys.shape[0] != b or values.shape[0] != b:
            raise RuntimeError(
                f"the cache holds keys/values the native decoder cannot write: {keys.dtype}, {tuple(keys.shape)} "
                f"(fp32 with {b} rows expected)"
            )
        (k_sb, k_sh, k_ss, k_sd), (v_sb, v_sh, v_ss, v_sd) = keys.stride(), values.stride()
        length = keys.shape[-2]
        if k_sd != 1 or v_sd != 1:
            raise RuntimeError(f"the cache's keys/values are not contiguous in their last dimension: {keys.stride()}")
        if mask is not None and mask.shape[-1] != length:
            raise RuntimeError(f"the mask covers {mask.shape[-1]} positions, the cache {length}")
        fields.extend((keys.data_ptr(), values.data_ptr(), k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, length, first))
        longest = max(longest, length)

    threads = torch.get_num_threads()
    out = hidden.reshape(b, c).clone()  # the new residual stream, written in place by the C code
    nq, nk = heads * hd, kv_heads * hd
    scratch = torch.empty(b * (2 * nq + 2 * nk + 2 * inter) + threads * (b * c + heads // kv_heads * longest))
    cos, sin = cos.contiguous(), sin.contiguous()
    final_address, final_eps = (None, 0.0) if stack.final is None else (stack.final[0].data_ptr(), stack.final[1])
    if mask is None:
        mask_address, mask_strides = None, (0, 0)
    else:
        mask_address, mask_strides = mask.data_ptr(), (mask.stride(0) if mask.shape[0] > 1 else 0, mask.stride(-1))
    function(
        ctypes.addressof(stack.layers), fields.buffer_info()[0], len(stack.plans), out.data_ptr(), b,
        cos.data_ptr(), sin.data_ptr(), cos.stride(0) if cos.shape[0] > 1 else 0,
        mask_address, *mask_strides, final_address, final_eps, scratch.data_ptr(), threads,
    )  # fmt: skip
    out = out.view(b, 1, c)
    return final_norm(out) if final_norm is not None and stack.final is None else out


def _still_fits(
    stack: _StackPlan, layers: Sequence[nn.Module], parts: LayerParts, final_norm: nn.Module | None
) -> bool:
    """The norms still hold the weights the plans point at, and no layer or norm has been given hooks or put in
    training mode since the plan was made (the linear layers are checked by the scope, at each generate call)."""
    if stack.final is not None and (final_norm.weight is not stack.final[0] or _hooked(final_norm)):
        return False
    if stack.final is None and final_norm is not None and _plain_norm(final_norm, stack.sizes[0]) is not None:
        return False  # a norm that qualifies now (its hook removed, say)
    for plan, layer in zip(stack.plans, layers, strict=True):
        attention, mlp, norms = parts(layer)
        if norms[0].weight is not plan.norms[0] or norms[1].weight is not plan.norms[1] or layer.training:
            return False
        if any(_hooked(m) for m in (layer, attention, mlp, *norms)):
            return False
    return True


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _plain_norm(norm: nn.Module, hidden: int) -> tuple[nn.Parameter, float] | None:
    """(weight, eps) of a norm the C code can apply (a layer's or the final one): a plain ``RMSNorm`` over ``hidden``
    fp32 values, no hooks, eval mode; else None."""
    if type(norm) is not RMSNorm or _hooked(norm) or norm.training:
        return None
    weight = norm.weight
    if not native.eligible(weight[None]) or weight.shape != (hidden,):
        return None
    return weight, float(norm.variance_epsilon)


def _stack_plan(
    scope: PackedWeights, layers: Sequence[nn.Module], parts: LayerParts, final_norm: nn.Module | None
) -> _StackPlan | None:
    plans = []
    for layer in layers:
        attention, mlp, norms = parts(layer)
        plan = _plan(scope, layer, attention, mlp, norms)
        if plan is None or (plans and plan.sizes != plans[0].sizes):
            return None
        plans.append(plan)
    if not plans:
        return None
    layer_array = (_Layer * len(plans))(*(plan.layer for plan in plans))
    final = None if final_norm is None else _plain_norm(final_norm, plans[0].sizes[0])
    return _StackPlan(plans, layer_array, plans[0].sizes, tuple(plan.layer_idx for plan in plans), final)


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
    scope: PackedWeights, layer: nn.Module, attention: nn.Module, mlp: nn.Module, norms: tuple[nn.Module, ...]
) -> _Plan | None:
    """The layer's sizes and weight addresses for the C code, or None when the layer does not qualify."""
    linears = [getattr(attention, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    if any(linear not in scope.native for linear in linears):  # plain nn.Linear, fp32, no hooks (packed_linear)
        return None
    if layer.training or any(_hooked(m) for m in (layer, attention, mlp)):
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
    plain = [_plain_norm(norm, c) for norm in norms]
    if any(part is None for part in plain):
        return None
    norm_weights = [weight for weight, _ in plain]
    copies = [scope.native_weights.get(linear) for linear in linears]  # tiled copies where the scope made them
    tiled = all(copy is not None for copy in copies)
    if not tiled and any(copy is not None for copy in copies):
        return None
    tensors = [w.detach() for w in norm_weights]
    addresses = [w.data_ptr() for w in tensors]
    for linear, copy in zip(linears, copies, strict=True):
        weight = copy if tiled else linear.weight.detach()
        tensors += [weight] + ([] if linear.bias is None else [linear.bias.detach()])
        addresses += [weight.data_ptr(), None if linear.bias is None else linear.bias.data_ptr()]
    layer_struct = _Layer(
        c, heads, kv_heads, hd, inter, int(tiled),
        plain[0][1], plain[1][1], attention.scaling,
        *addresses,
    )  # fmt: skip
    sizes = (c, heads, kv_heads, hd, inter)
    return _Plan(layer_struct, tuple(tensors), (norm_weights[0], norm_weights[1]), sizes, attention.layer_idx)
