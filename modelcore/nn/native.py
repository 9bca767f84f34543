"""modelcore's own CPU kernel for decoding, compiled from C on first use (``kernels/gemv.c``).

Decoding one token per sequence reads every weight once per step, so its speed is the speed at which a kernel
streams weights from memory. On some CPUs torch's kernels for one input row stream at about half the memory
bandwidth (an AMD EPYC, Zen 4: the generic fp32 kernel 12 GB/s and oneDNN's packed weight 23 GB/s, where
``torch.sum`` reads 34 GB/s; benchmarks/README.md). ``kernels/gemv.c`` has two products: one reads the weight
in place (row-major, a block of rows at a time with the next block requested ahead), the other a tiled copy made
once (:func:`tiled_copies`: each thread's rows one sequential stream) at the rate ``torch.sum`` reads memory at
every bandwidth the Zen 4 VM shows, where the row-major read falls to 0.81-0.85 of it at the highest.

It is built the way ``torch.compile`` builds its CPU code: the system C compiler (``$CC``, else ``cc``/``gcc``),
``-O3 -march=native -fopenmp``, into ``<modelcore cache>/kernels/``, keyed by the source, the compiler, the
flags and this CPU (a library built for another CPU is never loaded), written to a temporary name and renamed.
The OpenMP runtime is the one torch already loaded, so the kernel uses torch's threads. A library that fails to
build or to load, or whose result differs from ``torch.nn.functional.linear`` on a check at load time, leaves
the kernel unavailable (logged once) and decoding uses torch's kernels. ``MODELCORE_NATIVE_KERNELS=0`` turns
it off. ``packed_linear`` decides per model, by timing, whether it is used (``packed_linear.py``); for the
layers of a model that chose it, ``native_decoder`` runs a whole decoder layer's decode step through the same
library (the norms, rotary positions, attention and gated MLP between the products).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import math
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from modelcore.assets import cache_dir

logger = logging.getLogger(__name__)

ENV_SWITCH = "MODELCORE_NATIVE_KERNELS"
SOURCE = Path(__file__).with_name("kernels") / "gemv.c"
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC")
LIBRARIES = ("-lm",)  # after the source: expf, sqrtf
SYMBOL = "modelcore_gemv_f32"
TILE_ROWS, TILE_COLUMNS = 2, 16  # a tiled copy's tiles (TILE_ROWS and LANES in kernels/gemv.c)
COMPILE_TIMEOUT_S = 120


def switched_on(variable: str) -> bool:
    """False when the environment variable ``variable`` says ``0``, ``false``, ``no`` or ``off``; True otherwise
    (unset included). The on/off switches of the decoding kernels (here and in ``packed_linear``)."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


def enabled() -> bool:
    """False when ``MODELCORE_NATIVE_KERNELS`` turns the native kernel off."""
    return switched_on(ENV_SWITCH)


def available() -> bool:
    """True when the kernel is enabled and built (the first call builds or loads it)."""
    return enabled() and _kernel() is not None


def eligible(weight: torch.Tensor) -> bool:
    """Whether ``weight`` (a linear layer's, shape (out, in)) can go through the kernel: contiguous fp32 on CPU."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.layout == torch.strided
        and weight.dim() == 2
        and weight.is_contiguous()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear(x, weight, bias)`` through the native kernel, for a few rows of fp32 ``x``.

    Args:
        x: (..., in_features) float32; any number of rows, meant for 1 to 3 (one token per sequence).
        weight: (out_features, in_features), :func:`eligible`.
        bias: (out_features,) float32, or None.

    Returns:
        (..., out_features) float32.

    Raises:
        RuntimeError: when the kernel is not :func:`available`.
        ValueError: on a dtype, device or shape the kernel does not take.
    """
    kernel = _kernel() if enabled() else None
    if kernel is None:
        raise RuntimeError(f"modelcore's native kernel is not available (see the log, or {ENV_SWITCH})")
    if not eligible(weight) or x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(
            f"native linear takes float32 CPU tensors and a contiguous 2-D weight; got x {x.dtype} on {x.device}, "
            f"weight {tuple(weight.shape)} {weight.dtype} on {weight.device} (contiguous: {weight.is_contiguous()})"
        )
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"native linear: x has {x.shape[-1]} features, the weight takes {in_features}")
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (out_features,) or not bias.is_contiguous()):
        raise ValueError(f"native linear: bias must be contiguous float32 of shape ({out_features},)")
    return unchecked_linear(x, weight, bias)


def unchecked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`linear` for callers that checked the kernel, the tensors and the shapes once (a decoding scope):
    a call costs about 3 us here instead of 9, which is 0.5 ms of each decoded token of an 85-layer model."""
    return _product(_kernel(), weight, x, bias, weight.shape[0])


def _product(
    function: Any, weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """x W^T (+ bias) through ``function`` (the row-major or the tiled product) on ``weight`` (either layout)."""
    in_features = x.shape[-1]
    out = torch.empty(*x.shape[:-1], out_features, dtype=torch.float32)
    rows = x.numel() // in_features if in_features else 0
    if rows and out_features:
        x = x.contiguous()
        function(
            weight.data_ptr(),
            x.data_ptr(),
            None if bias is None else bias.data_ptr(),
            out.data_ptr(),
            rows,
            out_features,
            in_features,
            torch.get_num_threads(),
        )
    return out


def tiled_copies(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of linear layers' ``weights`` ((out, in), contiguous fp32, CPU) in the tiled layout the kernel reads
    fastest, in one new anonymous memory region that the OS is asked to back with transparent huge pages
    (``madvise(MADV_HUGEPAGE)``), each starting on a 64-byte line. The region lives as long as any of the copies.

    A copy is (ceil(out / TILE_ROWS), ceil(in / TILE_COLUMNS), TILE_ROWS, TILE_COLUMNS), zero-padded: tiles of
    ``TILE_ROWS`` rows by ``TILE_COLUMNS`` columns in row order, so that a thread's share of the rows is one
    sequential stream (``kernels/gemv.c``). On the Zen 4 VM measured the kernel reads it at the rate ``torch.sum``
    reads memory at every bandwidth the VM shows, 1.2-1.3x the row-major weight at the highest; and huge pages read
    7-11% faster than a memory-mapped checkpoint's 4 KB pages (fewer TLB misses, each a two-level page walk in a
    VM; benchmarks/README.md). Read them with :func:`unchecked_tiled_linear`.
    """
    shapes = [_tiled_shape(weight) for weight in weights]
    sizes = [math.prod(shape) * 4 for shape in shapes]
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += -(-size // 64) * 64
    region = mmap.mmap(-1, max(total, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        with contextlib.suppress(OSError):  # a kernel without transparent huge pages: a plain anonymous copy
            region.madvise(advice)
    raw = torch.frombuffer(region, dtype=torch.uint8)  # holds the region
    copies = []
    for weight, shape, offset, size in zip(weights, shapes, offsets, sizes, strict=True):
        copy = raw[offset : offset + size].view(torch.float32).view(shape)
        out_features, in_features = weight.shape
        tiles, chunks = shape[:2]
        if (out_features, in_features) != (tiles * TILE_ROWS, chunks * TILE_COLUMNS):  # a padded edge
            padded = weight.new_zeros(tiles * TILE_ROWS, chunks * TILE_COLUMNS)
            padded[:out_features, :in_features] = weight
            weight = padded
        copy.copy_(weight.view(tiles, TILE_ROWS, chunks, TILE_COLUMNS).transpose(1, 2))
        copies.append(copy)
    return copies


def _tiled_shape(weight: torch.Tensor) -> tuple[int, int, int, int]:
    out_features, in_features = weight.shape
    return -(-out_features // TILE_ROWS), -(-in_features // TILE_COLUMNS), TILE_ROWS, TILE_COLUMNS


def unchecked_tiled_linear(
    x: torch.Tensor, tiled: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """:func:`unchecked_linear` on a copy from :func:`tiled_copies` of an (out_features, x.shape[-1]) weight."""
    return _product(_library().modelcore_gemv_tiled_f32, tiled, x, bias, out_features)


def transparent_huge_pages() -> bool:
    """Whether this system gives anonymous memory transparent huge pages on request (Linux, mode ``always`` or
    ``madvise``)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as setting:
            mode = setting.read()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


@torch.library.custom_op(
    "modelcore::native_linear", mutates_args=(), schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor"
)
def compiled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`unchecked_linear` as a torch operator, so that a ``torch.compile``d graph calls the kernel (inductor
    fuses the ops around it; a Python call would break the graph). Forward only, like the kernel."""
    return unchecked_linear(x, weight, bias)


@compiled_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The loaded library with its functions' signatures set, its matrix-vector product checked; or None (why is
    logged once)."""
    try:
        library = ctypes.CDLL(str(_build()))
        gemv = getattr(library, SYMBOL)
        tiled = library.modelcore_gemv_tiled_f32
        stack = library.modelcore_decoder_stack_f32
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as error:
        logger.info("modelcore's native decoding kernel is unavailable, torch's kernels are used: %s", error)
        return None
    pointer, int64 = ctypes.c_void_p, ctypes.c_int64
    gemv.argtypes = tiled.argtypes = [pointer] * 4 + [int64] * 3 + [ctypes.c_int]
    # (layers, caches, count, h, m, cos, sin, rope_stride, mask, mask_sb, mask_ss, final_norm, final_eps, scratch,
    # threads)
    stack.argtypes = [pointer, pointer, int64, pointer, int64, pointer, pointer, int64, pointer, int64, int64]
    stack.argtypes += [pointer, ctypes.c_float, pointer, ctypes.c_int]
    argmax = library.modelcore_argmax_f32
    argmax.argtypes = [pointer, int64, int64, pointer]
    for function in (gemv, tiled, stack, argmax):
        function.restype = None
    if not _agrees_with_torch(gemv, tiled):
        logger.warning("modelcore's native decoding kernel (%s) disagrees with torch on a check; not used", library)
        return None
    return library


@functools.cache
def _kernel():
    """The loaded and checked matrix-vector product, or None."""
    library = _library()
    return None if library is None else getattr(library, SYMBOL)


def argmax(scores: torch.Tensor) -> torch.Tensor | None:
    """``scores.max(dim=-1).indices`` (the first maximum of each row, a NaN counting as the maximum) for (rows, n)
    fp32 CPU scores, or None when the native kernel is off or unavailable or the scores are another kind. For
    greedy decoding: torch's reduction costs 80-200 us a token there (cache misses on its own code right after the
    weights streamed through), this a few."""
    library = _library() if enabled() else None
    if (
        library is None
        or scores.dtype != torch.float32
        or scores.device.type != "cpu"
        or scores.dim() != 2
        or scores.shape[1] == 0
    ):
        return None
    scores = scores.contiguous()
    out = torch.empty(scores.shape[0], dtype=torch.long)
    library.modelcore_argmax_f32(scores.data_ptr(), scores.shape[0], scores.shape[1], out.data_ptr())
    return out


def decoder_stack_function() -> Any | None:
    """The C function of a stack of decoder layers' decode step (``modelcore_decoder_stack_f32``, see
    ``kernels/gemv.c``), or None when the native kernel is off or unavailable. For ``native_decoder``."""
    library = _library() if enabled() else None
    return None if library is None else library.modelcore_decoder_stack_f32


def _agrees_with_torch(gemv, tiled) -> bool:
    """Both products (row-major and tiled) against ``torch.nn.functional.linear``, on a shape with a partial block,
    a partial tile and a partial vector, for 1 and 3 input rows."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(37, 83, generator=generator)
    bias = torch.randn(37, generator=generator)
    x = torch.randn(3, 83, generator=generator)
    (copy,) = tiled_copies([weight])
    for rows in (1, 3):
        expected = torch.nn.functional.linear(x[:rows], weight, bias)
        for function, source in ((gemv, weight), (tiled, copy)):
            out = torch.empty(rows, 37)
            function(source.data_ptr(), x.data_ptr(), bias.data_ptr(), out.data_ptr(), rows, 37, 83, 2)
            if not torch.allclose(out, expected, rtol=1e-4, atol=1e-4):
                return False
    return True


def _build() -> Path:
    """The compiled library for this source, compiler, flags and CPU: from the cache, else compiled into it."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC, or install cc/gcc)")
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=True
    ).stdout
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(FLAGS + LIBRARIES).encode(), _cpu_identity()]))
    target = cache_dir() / "kernels" / f"gemv-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so")
    os.close(handle)
    try:
        start = time.perf_counter()
        result = subprocess.run(
            [compiler, *FLAGS, str(SOURCE), *LIBRARIES, "-o", temporary],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {SOURCE}: {result.stderr.strip()[-2000:]}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    logger.info("Built modelcore's native decoding kernel in %.1f s: %s", time.perf_counter() - start, target)
    return target


def _cpu_identity() -> bytes:
    """What ``-march=native`` depends on: the CPU's model and feature flags (Linux), else the platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(("model name", "flags", "Features", "CPU part"))]
        if lines:
            return "".join(sorted(set(lines))).encode()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".encode()
