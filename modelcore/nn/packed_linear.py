"""Linear layers through weights prepacked by oneDNN, or through modelcore's native kernel, for decoding on a CPU.

A decode step multiplies a few rows (one new token per sequence) by every weight matrix. From 4 rows up,
the generic fp32 GEMM reorders the weight into its blocked layout on every call and runs well below the
memory bandwidth; a weight reordered once (``torch.ops.mkldnn._reorder_linear_weight``, the layout
``torch.compile`` uses on CPU) is read at close to full speed, for any row count (figures in
benchmarks/README.md). With 1 to 3 rows it depends on the CPU: on the Intel Xeon measured the generic
kernel is slightly faster (0.92-0.95x), on an AMD EPYC (Zen 4) the packed weight is twice as fast, and
modelcore's own matrix-vector kernel (``native.py``: C compiled on first use, reading the weight in place)
faster still. So the first packing of a model times one row through each kernel, and ``MIN_ROWS`` rows through
the generic and packed ones, on the model's own weights (up to 64 MB of them, a few passes, some tens of
milliseconds). 1-3 rows go through the native kernel when it is the fastest and clearly faster than the generic
one (``SINGLE_ROW_GAIN``), else through the packed weights under the same rule; from ``MIN_ROWS`` rows the
packed weights are used unless they are slower there (``MANY_ROWS_SLOWDOWN``: then not at all, and the copy is
dropped). ``MODELCORE_PACKED_MIN_ROWS`` sets the row count instead (fewer rows then take the generic kernel).
bf16 weights are packed too where oneDNN has bf16 kernels on the CPU
(``torch.ops.mkldnn._is_mkldnn_bf16_supported()``): on the Zen 4, twice the generic bf16 speed at 1 and 8 rows.
The native kernel takes fp32 only.

``packed_decoding(model)`` is the scope ``generate`` opens around its decoding: it packs the model's eligible
``nn.Linear`` weights (once; the copy and the decisions are kept for the model's next calls) and makes
``linear(module, x)``, which the model calls instead of ``module(x)``, use them. The scope lives in a
``ContextVar``, so threads that share one model each see only their own call's scope; the model itself is never
changed. A weight changed since it was packed (training, ``load_state_dict``) is packed again.

Eligible: a plain ``nn.Linear`` (quantized and adapter-wrapped layers keep their own forward) with no hooks and an
fp32 (or bf16, see above) CPU weight; packed when it has at least ``MIN_WEIGHT_ELEMENTS`` weights (small matrices
gain nothing), through the native kernel at any size (the key/value projections of a small grouped-query model are
below that size, and ``native_decoder`` needs every projection of a layer). Under ``torch.compile`` (a compiled
forward over the static cache) the packed weights are not used (inductor chooses its own kernels), but layers whose
model chose the native kernel at its packing call it as the operator ``modelcore::native_linear`` for 1-3 rows; the
choice is a constant of the compiled graph. The packed copy costs as much memory as the weights; it is made only
when the machine has twice that available (the native kernel needs no copy, and is still timed without one). Where
the native kernel is chosen, it reads a tiled copy of those weights (``native.tiled_copies``: a sequential stream
a thread, in transparent huge pages where the system gives them), made with the same memory rule;
``MODELCORE_NATIVE_COPY=0`` makes it read the weights in place. ``MODELCORE_PACKED_DECODING=0`` turns both
off, ``MODELCORE_NATIVE_KERNELS=0`` the native kernel (both are read at a model's packing), and
``release_packed_weights(model)`` frees the copy and the decisions.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from modelcore.nn import native

logger = logging.getLogger(__name__)

MIN_ROWS = 4  # from 4 input rows up the packed weight is faster than the generic kernel (benchmarks/README.md)
MIN_WEIGHT_ELEMENTS = 1 << 17
ENV_SWITCH = "MODELCORE_PACKED_DECODING"
ENV_MIN_ROWS = "MODELCORE_PACKED_MIN_ROWS"  # packed from this many input rows up, without timing (an integer >= 1)
ENV_NATIVE_COPY = "MODELCORE_NATIVE_COPY"  # "0": the native kernel reads the weights in place (no tiled copy)
SINGLE_ROW_GAIN = 0.8  # 1-3 rows go through the native kernel or packed weights at most 0.8x the generic time
MANY_ROWS_SLOWDOWN = 1.1  # else from MIN_ROWS rows, unless MIN_ROWS rows take over 1.1x the generic time there
CALIBRATION_BYTES = 64 << 20  # weights timed at the first packing: more than a CPU's caches hold
CALIBRATION_PASSES = 3  # each kernel's best of this many passes, interleaved

_active: contextvars.ContextVar[PackedWeights | None] = contextvars.ContextVar("packed_weights", default=None)
_packed_by_model: weakref.WeakKeyDictionary[nn.Module, PackedWeights] = weakref.WeakKeyDictionary()
_packing_lock = threading.Lock()


@dataclass(frozen=True)
class PackedWeights:
    """The packed weights of one model's linear layers, with what each was packed from."""

    packed: dict[nn.Linear, torch.Tensor]
    sources: dict[nn.Linear, tuple[int, int]]  # module -> (weight data_ptr, weight _version) at packing
    min_rows: int = MIN_ROWS  # inputs of at least this many rows go through the packed weights
    native: frozenset[nn.Linear] = frozenset()  # layers whose fewer rows go through modelcore's native kernel
    # the tiled copies the native kernel reads instead of those layers' weights (where it made them)
    native_weights: dict[nn.Linear, torch.Tensor] = field(default_factory=dict, compare=False)
    # a stack of decoder layers (a tuple) -> its plan for native_decoder (made at its first decode step under these
    # weights)
    decoder_plans: dict[tuple[nn.Module, ...], object] = field(default_factory=dict, compare=False)

    def is_current(self, modules: list[nn.Linear]) -> bool:
        """True when ``modules`` are exactly the ones looked at when packing and none of their weights changed."""
        return len(modules) == len(self.sources) and all(
            self.sources.get(module) == _weight_state(module) for module in modules
        )


def linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, through the weight packed by the enclosing ``packed_decoding`` scope when there is one.

    Under ``torch.compile`` (the static-cache path), 1-3 rows of a layer whose model chose the native kernel at its
    packing go through it as the operator ``modelcore::native_linear``; everything else is left to inductor."""
    if torch.compiler.is_compiling():
        if (
            not torch.is_grad_enabled()
            and not torch.compiler.is_exporting()  # an exported graph (ONNX, torch.export) keeps aten ops only
            and _chose_native(module)
            and x.dtype == torch.float32
            and x.numel() < MIN_ROWS * x.shape[-1]
        ):
            return torch.ops.modelcore.native_linear(x, module.weight, module.bias)
    elif not torch.is_grad_enabled():  # the packed and native kernels have no backward
        scope = _active.get()
        if scope is not None:
            if x.numel() >= scope.min_rows * x.shape[-1]:
                packed = scope.packed.get(module)
                if packed is not None and x.dtype == packed.dtype:
                    return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "none", [], "")
            elif module in scope.native and x.dtype == torch.float32 and x.numel() < MIN_ROWS * x.shape[-1]:
                copy = scope.native_weights.get(module)  # checked at packing
                if copy is not None:
                    return native.unchecked_tiled_linear(x, copy, module.bias, module.out_features)
                return native.unchecked_linear(x, module.weight, module.bias)
    return module(x)


def active_scope() -> PackedWeights | None:
    """The packed weights of the enclosing ``packed_decoding`` scope in this thread, or None."""
    return _active.get()


@torch.compiler.assume_constant_result
def _chose_native(module: nn.Module) -> bool:
    """Whether ``module``'s model chose the native kernel at its last packing; a constant of a compiled graph (so
    this runs when a graph is traced, not per call)."""
    with _packing_lock:
        return any(module in kept.native for kept in _packed_by_model.values())


@contextlib.contextmanager
def packed_decoding(model: nn.Module) -> Iterator[PackedWeights | None]:
    """Within this scope, ``linear`` calls of ``model``'s layers use packed weights (from ``min_rows`` input rows).

    Args:
        model: the model about to decode.

    Yields:
        the packed weights in use, or None where packing does not apply (then nothing changes).
    """
    weights = _packed_weights(model)
    token = _active.set(weights)
    try:
        yield weights
    finally:
        _active.reset(token)


def release_packed_weights(model: nn.Module) -> None:
    """Free the packed copy kept for ``model`` (the next batched decode packs again)."""
    with _packing_lock:
        _packed_by_model.pop(model, None)


def _packed_weights(model: nn.Module) -> PackedWeights | None:
    if not isinstance(model, nn.Module) or not _applies():
        return None
    candidates = [module for module in model.modules() if _plain(module)]
    modules = [module for module in candidates if module.weight.numel() >= MIN_WEIGHT_ELEMENTS]  # worth packing
    if not modules:
        return None
    with _packing_lock:
        kept = _packed_by_model.get(model)
        if kept is not None and kept.is_current(candidates):
            return kept if kept.packed or kept.native else None  # empty: timed and found slower here
        _packed_by_model.pop(model, None)  # the old copy goes before the new one is made
        needed = sum(module.weight.numel() * module.weight.element_size() for module in modules)
        available = _available_memory()
        packed = {}
        if available is not None and 2 * needed > available:
            logger.info(
                "Decoding without packed weights: packing needs %.0f MB and %.0f MB are available",
                needed / 1e6,
                available / 1e6,
            )
        else:
            with torch.no_grad():
                packed = {module: torch.ops.mkldnn._reorder_linear_weight(module.weight) for module in modules}
        # the native kernel reads any size in place (small projections too: the k/v of a small GQA model)
        in_place = [module for module in candidates if _native_eligible(module)] if native.available() else []
        if not packed and not in_place:
            return None  # nothing to time: the next call looks at the memory again
        rows, use_native = _decide(modules, packed, in_place)
        sources = {module: _weight_state(module) for module in candidates}
        if rows is None:  # slower than the generic kernel here: the copy goes, the decision stays with the model
            packed, rows = {}, sys.maxsize
        copies = _native_copies(in_place) if use_native else {}
        weights = PackedWeights(packed, sources, rows, frozenset(in_place) if use_native else frozenset(), copies)
        _packed_by_model[model] = weights
        logger.debug(
            "Decoding %d linear layers: %d packed (%.0f MB) from %s input rows, %d native below that",
            len(modules), len(packed), needed / 1e6, rows if packed else "no", len(weights.native),
        )  # fmt: skip
        return weights if packed or use_native else None


def _native_copies(modules: list[nn.Linear]) -> dict[nn.Linear, torch.Tensor]:
    """Tiled copies of ``modules``' weights for the native kernel (``native.tiled_copies``: one sequential stream a
    thread, in transparent huge pages where the system gives them; 1.2-1.3x the row-major read at this VM's highest
    bandwidth), where twice their size of memory is available and ``MODELCORE_NATIVE_COPY`` is not ``0``; else
    none (the kernel reads the weights in place, row-major)."""
    if not native.switched_on(ENV_NATIVE_COPY):
        return {}
    needed = sum(module.weight.numel() * module.weight.element_size() for module in modules)
    available = _available_memory()
    if available is None or 2 * needed > available:
        logger.info(
            "The native kernel reads the weights in place: a tiled copy needs %.0f MB, %s MB are available",
            needed / 1e6, "unknown" if available is None else f"{available / 1e6:.0f}",
        )  # fmt: skip
        return {}
    with torch.no_grad():
        copies = native.tiled_copies([module.weight.detach() for module in modules])
    logger.info(
        "The native kernel reads a tiled copy of %d weights (%.0f MB, %s)", len(modules), needed / 1e6,
        "in transparent huge pages" if native.transparent_huge_pages() else "without huge pages on this system",
    )  # fmt: skip
    return dict(zip(modules, copies, strict=True))


def _decide(
    modules: list[nn.Linear], packed: dict[nn.Linear, torch.Tensor], in_place: list[nn.Linear]
) -> tuple[int | None, bool]:
    """(min_rows, native): from how many input rows the packed weights are used (None: never), and whether fewer
    rows go through the native kernel (``in_place``: the layers it can take).

    ``MODELCORE_PACKED_MIN_ROWS`` sets min_rows without timing (fewer rows then take the generic kernel). Else one
    row is timed through each kernel on the model's own weights: the native kernel takes 1 to ``MIN_ROWS - 1``
    rows when it is the fastest and at most ``SINGLE_ROW_GAIN`` of the generic kernel's time; else the packed
    weights take every row count when one row through them is at most ``SINGLE_ROW_GAIN`` of the generic time.
    Otherwise packed from ``MIN_ROWS`` rows, unless ``MIN_ROWS`` rows through them take more than
    ``MANY_ROWS_SLOWDOWN`` times the generic kernel's time (never)."""
    setting = os.environ.get(ENV_MIN_ROWS, "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"{ENV_MIN_ROWS}={setting!r}: expected an integer >= 1 (input rows)")
        return int(setting), False
    timed, size = [], 0
    for module in modules:  # the model's own weights, enough of them to come from memory rather than a cache
        timed.append(module)
        size += module.weight.numel() * module.weight.element_size()
        if size >= CALIBRATION_BYTES:
            break
    kernels = ["generic"]
    if packed:
        kernels.append("packed")
    if in_place and set(timed) <= set(in_place):
        kernels.append("native")

    cases = [(1, kernel) for kernel in kernels] + ([(MIN_ROWS, "generic"), (MIN_ROWS, "packed")] if packed else [])
    best = _time(timed, packed, cases)
    one_row = {kernel: best[1, kernel] for kernel in kernels}
    fastest = min(one_row, key=one_row.__getitem__)
    use_native = fastest == "native" and one_row["native"] <= SINGLE_ROW_GAIN * one_row["generic"]
    if not packed:
        rows = None
    elif not use_native and one_row["packed"] <= SINGLE_ROW_GAIN * one_row["generic"]:
        rows = 1
    elif best[MIN_ROWS, "packed"] <= MANY_ROWS_SLOWDOWN * best[MIN_ROWS, "generic"]:
        rows = MIN_ROWS
    else:
        rows = None
    logger.info(
        "Decoding kernels timed on %.0f MB of weights, 1 row: %s ms; %d rows generic / packed: %s ms. "
        "Native kernel: %s; packed weights: %s",
        size / 1e6, " / ".join(f"{kernel} {seconds * 1e3:.2f}" for kernel, seconds in one_row.items()), MIN_ROWS,
        " / ".join(f"{best.get((MIN_ROWS, kernel), float('nan')) * 1e3:.2f}" for kernel in ("generic", "packed")),
        f"below {MIN_ROWS} rows" if use_native else "unused", "never" if rows is None else f"from {rows} rows",
    )  # fmt: skip
    return rows, use_native


def _time(
    timed: list[nn.Linear], packed: dict[nn.Linear, torch.Tensor], cases: list[tuple[int, str]]
) -> dict[tuple[int, str], float]:
    """Seconds of the best of ``CALIBRATION_PASSES`` passes of each case (rows, kernel) through ``timed``'s
    weights, the cases interleaved so that a change of the machine's speed meets them all."""

    def one_pass(rows: int, kernel: str) -> float:
        inputs = [torch.ones(rows, module.in_features, dtype=module.weight.dtype) for module in timed]
        start = time.perf_counter()
        for module, x in zip(timed, inputs, strict=True):
            if kernel == "packed":
                torch.ops.mkldnn._linear_pointwise(x, packed[module], module.bias, "none", [], "")
            elif kernel == "native":
                native.unchecked_linear(x, module.weight, module.bias)
            else:
                torch.nn.functional.linear(x, module.weight, module.bias)
        return time.perf_counter() - start

    best: dict[tuple[int, str], float] = {}
    with torch.no_grad():
        for _ in range(CALIBRATION_PASSES):
            for case in cases:
                best[case] = min(best.get(case, float("inf")), one_pass(*case))
    return best


def _applies() -> bool:
    if not native.switched_on(ENV_SWITCH):
        return False
    if torch.compiler.is_compiling():
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _plain(module: nn.Module) -> bool:
    """A plain ``nn.Linear`` with no hooks and a CPU weight of a dtype these kernels take (any size)."""
    if type(module) is not nn.Linear or module._forward_hooks or module._forward_pre_hooks:
        return False
    weight = module.weight
    return (
        weight.device.type == "cpu"
        and weight.dtype in _packable_dtypes()
        and weight.layout == torch.strided
        and (module.bias is None or module.bias.dtype == weight.dtype)
    )


def _native_eligible(module: nn.Linear) -> bool:
    return native.eligible(module.weight) and (module.bias is None or module.bias.is_contiguous())


@functools.cache
def _packable_dtypes() -> tuple[torch.dtype, ...]:
    """fp32, and bf16 where oneDNN has bf16 kernels on this CPU (AVX512-BF16 or AMX); asked once per process."""
    bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return (torch.float32, torch.bfloat16) if bf16 is not None and bf16() else (torch.float32,)


def _weight_state(module: nn.Linear) -> tuple[int, int]:
    try:
        version = module.weight._version
    except RuntimeError:  # an inference tensor keeps no version counter (and cannot change outside inference mode)
        version = -1
    return module.weight.data_ptr(), version


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes; None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
