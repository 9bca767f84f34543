"""Graph fusions for onnxruntime's CPU provider, applied to a ``torch.onnx.export(dynamo=True)`` graph.

onnxruntime's own BERT optimizer (``onnxruntime.transformers.optimizer``) matches the graphs of the
old TorchScript exporter; on a dynamo export it fuses LayerNorm and GELU but never attention, so
each layer keeps its MatMul-Softmax-MatMul chain and an int8 model cannot use ``QAttention``.
onnxscript's fusions (``optimize_for_ort``) are written for dynamo graphs and turn the exported
``scaled_dot_product_attention`` into ``com.microsoft.MultiHeadAttention``; two of their next
steps stop short on our graphs, and the passes here unblock them:

1. The exporter reads the sequence length for the mask's ``Expand`` from ``Shape(query)``. That
   extra use of the query projection keeps ``MultiHeadAttention`` from absorbing the projection's
   bias, and so from becoming one packed-QKV ``Attention``. ``Shape(x @ W + b)`` reads the same
   leading dimensions as ``Shape(x)``, so the shape is taken from ``x`` instead.
2. The packed ``Attention`` then gets the padding mask as a float bias (B, 1, T, S) built by
   ``Where``/``Expand``. onnxruntime's ``QAttention`` (what int8 quantization makes of ``Attention``)
   has no input for such a bias, only ``mask_index``; a bias that is just the 0/1 padding mask of a
   graph input is replaced by that mask as ``mask_index`` (B, S) int32, which is also the cheaper
   form for the fp32 kernel.
3. Two of onnxscript's fusions are undone: onnxruntime 1.32's CPU kernels for them are slower
   than the standard operators they replace (2 threads, MiniLM sizes: ``SkipLayerNormalization``
   3.0 ms against 0.35 ms for ``Add`` + 0.55 ms for ``LayerNormalization`` on 32x64x384;
   ``BiasGelu`` 2.0 ms against 1.6 ms for ``Gelu`` on 32x64x1536, whose bias then folds into the
   preceding int8 MatMul). onnxruntime would fuse them again when it loads the graph, so the graph
   names the session-level fusions to disable in its metadata (``ORT_DISABLED_OPTIMIZERS_KEY``),
   which ``OrtModel`` applies.

Everything else (the attention fusions up to ``MultiHeadAttention``, constant folding) is onnxscript's.
Effect on the fine-tuned MiniLM, int8, 32 x 64, 2 threads (benchmarks/README.md, "ONNX export"):
214 ms for the plain export, 199 with ``QAttention``, 158 with pass 3, 127 with denormals flushed
(``onnx_export.ORT_SESSION_CONFIG``); eager fp32 takes 260-290 ms.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from modelcore.exporters.modeling_ort import ORT_DISABLED_OPTIMIZERS_KEY  # comma-separated onnxruntime optimizer names

logger = logging.getLogger(__name__)

_MS_DOMAIN = "com.microsoft"
_REFUSIONS = ("SkipLayerNormFusion", "BiasGeluFusion")  # what would undo pass 3 at load time
_MASKED_BELOW = -1e4  # a bias at or below this is a "may not attend" (onnxruntime's own mask filter is -1e4)


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Raise the named loggers (``""`` is the root one) to WARNING for a while: the ONNX tools log every rewrite at INFO."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def optimize_onnx(source: str | Path, destination: str | Path) -> dict[str, int]:
    """Fuse attention, normalizations and activations of an exported model for onnxruntime (CPU).

    Args:
        source: the exported ``model.onnx`` (its ``.onnx.data`` next to it).
        destination: where the fused model goes; its weights go to ``<name>.data`` beside it.

    Returns:
        The number of each fusion applied (``{"attention": 6, "skip_layer_normalization": 12, ...}``).
    """
    import onnx_ir as ir
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter.ort_fusions import optimize_for_ort
    from onnxscript.rewriter.ort_fusions.attention import fuse_attention
    from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias

    model = ir.load(str(source))
    with quiet_logs("onnxscript", "onnx_ir"):
        model, counts = optimize_for_ort(model)
        counts = {name: n for name, n in counts.items() if n}
        if counts.get("mha1", 0) + counts.get("mha2", 0):
            counts["shape_of_projection"] = _read_shapes_before_projections(model.graph)
            counts["mha_bias"] = counts.get("mha_bias", 0) + fuse_mha_bias(model)
            counts["attention"] = counts.get("attention", 0) + fuse_attention(model)
            counts["attention_mask_index"] = _padding_bias_to_mask_index(model.graph)
        counts["split_slow_fusions"] = _split_slow_fusions(model.graph)
        # Large limits: the packed QKV weights are Concats of initializers that must fold into one.
        optimize(model, input_size_limit=1 << 40, output_size_limit=1 << 40)
    model.metadata_props[ORT_DISABLED_OPTIMIZERS_KEY] = ",".join(_REFUSIONS)
    destination = Path(destination)
    ir.save(model, str(destination), external_data=destination.name + ".data")
    counts = {name: n for name, n in counts.items() if n}
    logger.info("fused for onnxruntime: %s", counts)
    return counts


def _projection_input(value):
    """``x`` when ``value`` is ``x @ W + b`` with a constant 2-D ``W`` and a 1-D ``b``, else None."""
    add = value.producer()
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    for i in (0, 1):
        matmul, bias = add.inputs[i].producer(), add.inputs[1 - i]
        if matmul is None or matmul.op_type != "MatMul" or bias.shape is None or len(bias.shape) != 1:
            continue
        x, weight = matmul.inputs
        if weight.const_value is not None and len(weight.shape) == 2 and x.shape is not None:
            return x
    return None


def _read_shapes_before_projections(graph) -> int:
    """Pass 1: ``Shape(x @ W + b)[start:end]`` -> ``Shape(x)[start:end]`` when it reads no projected dim."""
    rewired = 0
    for node in graph:
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx"):
            continue
        x = _projection_input(node.inputs[0])
        if x is None:
            continue
        start = node.attributes.get_int("start", 0)
        end = node.attributes.get_int("end", None)
        if end is not None and start >= 0 and 0 <= end <= len(x.shape) - 1:
            node.replace_input_with(0, x)
            rewired += 1
    return rewired


def _padding_mask_source(bias):
    """The 2-D 0/1 graph value behind a bias ``Expand?(Where(Unsqueeze(Cast?(mask)), 0, -big))``, else None."""
    import onnx_ir as ir

    node = bias.producer()
    if node is not None and node.op_type == "Expand":
        node = node.inputs[0].producer()
    if node is None or node.op_type != "Where":
        return None
    condition, keep, drop = node.inputs
    keep_value, drop_value = _scalar(keep), _scalar(drop)
    if keep_value != 0.0 or drop_value is None or drop_value > _MASKED_BELOW:
        return None
    unsqueeze = condition.producer()
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or _ints(unsqueeze.inputs[1]) != [1, 2]:
        return None
    mask = unsqueeze.inputs[0]
    cast = mask.producer()
    if cast is not None and cast.op_type == "Cast" and cast.attributes.get_int("to") == ir.DataType.BOOL:
        mask = cast.inputs[0]
    if mask.shape is None or len(mask.shape) != 2 or not mask.is_graph_input():
        return None
    return mask


def _padding_bias_to_mask_index(graph) -> int:
    """Pass 2: an ``Attention`` whose bias is only the padding mask takes it as ``mask_index`` instead."""
    import onnx_ir as ir

    replaced = 0
    as_int32: dict[str, ir.Value] = {}
    for node in list(graph):
        if node.op_type != "Attention" or node.domain != _MS_DOMAIN or len(node.inputs) < 6:
            continue
        inputs = list(node.inputs) + [None] * (7 - len(node.inputs))
        if inputs[3] is not None or inputs[4] is not None or inputs[6] is not None or inputs[5] is None:
            continue  # already has a mask_index, a past, or no bias
        mask = _padding_mask_source(inputs[5])
        if mask is None:
            continue
        if mask.name not in as_int32:
            cast = ir.node("Cast", [mask], attributes={"to": ir.DataType.INT32}, name=f"{mask.name}_as_int32")
            graph.insert_before(node, cast)
            as_int32[mask.name] = cast.outputs[0]
        node.resize_inputs(4)
        node.replace_input_with(3, as_int32[mask.name])
        sizes = node.attributes.get_ints("qkv_hidden_sizes")
        if sizes is not None and len(set(sizes)) == 1:  # QAttention has no qkv_hidden_sizes; equal sizes need none
            node.attributes.pop("qkv_hidden_sizes")
        replaced += 1
    return replaced


def _split_slow_fusions(graph) -> int:
    """Pass 3: ``SkipLayerNormalization`` -> ``Add``s + ``LayerNormalization``; ``BiasGelu`` -> ``Add`` + ``Gelu``."""
    import onnx_ir as ir

    opset = graph.opset_imports.get("", 0)
    split = 0
    for node in list(graph):
        if node.domain != _MS_DOMAIN or node.op_type not in ("SkipLayerNormalization", "BiasGelu"):
            continue
        if node.outputs[0].is_graph_output() or any(out.uses() or out.is_graph_output() for out in node.outputs[1:3]):
            continue  # a graph output, or mean / inverse std deviation are read: keep the fused kernel
        new: list[ir.Node] = []
        if node.op_type == "BiasGelu":
            x, bias = node.inputs
            summed = ir.node("Add", [x, bias])
            gelu = (
                ir.node("Gelu", summed.outputs) if opset >= 20 else ir.node("Gelu", summed.outputs, domain=_MS_DOMAIN)
            )
            new, result, total = [summed, gelu], gelu.outputs[0], None
        else:
            x, skip, gamma, beta, bias = (list(node.inputs) + [None] * 5)[:5]
            if bias is not None:  # the projection's bias first, so it folds into the MatMul before it
                new.append(ir.node("Add", [x, bias]))
                x = new[-1].outputs[0]
            new.append(ir.node("Add", [x, skip]))
            total = new[-1].outputs[0]
            epsilon = node.attributes.get_float("epsilon", 1e-12)
            norm_inputs = [total, gamma] + ([beta] if beta is not None else [])
            new.append(ir.node("LayerNormalization", norm_inputs, attributes={"axis": -1, "epsilon": epsilon}))
            result = new[-1].outputs[0]
        for created in new:
            graph.insert_before(node, created)
        ir.convenience.replace_all_uses_with(node.outputs[0], result)
        if len(node.outputs) > 3 and total is not None:
            ir.convenience.replace_all_uses_with(node.outputs[3], total)  # input + skip + bias, when read
        graph.remove(node, safe=True)
        split += 1
    return split


def _scalar(value) -> float | None:
    const = value.const_value
    if const is None:
        return None
    array = np.asarray(const.numpy())
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _ints(value) -> list[int] | None:
    const = value.const_value
    return None if const is None else [int(v) for v in np.asarray(const.numpy()).reshape(-1)]
