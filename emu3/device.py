"""The one place that decides which device runs, and what that implies for dtypes and kernels.

Everything else asks this module (``is_ascend()``, ``default_compute_dtype()``) instead of reading
``device_target`` itself, so a model file never branches on hardware directly.
"""

import contextlib
import importlib.util
import os
import warnings

import mindspore as ms
from mindspore import log as ms_log

from ._openmp import PASSIVE_OPENMP, mindspore_loaded

mindspore_loaded()

_SUPPORTED = ("Ascend", "CPU")
_selected = None


def _ascend_available() -> bool:
    # On a machine without Ascend the query itself logs three warnings about missing plugin libraries: the
    # answer is what we want, so they are muted.
    logger = ms_log._get_logger()  # pylint: disable=protected-access
    muted, logger.disabled = logger.disabled, True
    try:
        return bool(ms.device_context.ascend.is_available())
    except Exception:  # older or CPU-only builds may not expose the query at all
        return False
    finally:
        logger.disabled = muted


def select_device(target: str = None) -> str:
    """Select and initialise the device once: ``target`` > $EMU3_DEVICE > Ascend when present > CPU."""
    global _selected
    target = target or os.environ.get("EMU3_DEVICE") or ("Ascend" if _ascend_available() else "CPU")
    if target not in _SUPPORTED:
        raise ValueError(f"unknown device {target!r}; choose one of {_SUPPORTED} (or unset EMU3_DEVICE)")
    if _selected is None:
        ms.set_device(target)
        if target == "CPU":
            # Pynative's asynchronous op launching thrashes on a few CPU cores (its launch thread competes with
            # the compute threads); launching synchronously is several times faster.
            ms.runtime.launch_blocking()
            # A compiled graph called under autodiff (a training step) still goes through the host pipeline's
            # queue: a thread runs the graph while the caller waits for it in a busy loop, and on 2 cores the
            # waiting takes a core from the kernels (the 56 M model's training step: 1.05 -> 0.64 s). Dispatch
            # in the calling thread instead. MindSpore reads the variable once, when the first task is queued.
            os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")
        # A graph that fails to compile dumps rank_0/om/analyze_fail.ir under $MS_OM_PATH, by default the user's
        # working directory; put it in the cache instead (the error message names the file wherever it is).
        os.environ.setdefault("MS_OM_PATH", os.path.join(cache_root(), "graphs"))
        _selected = target
    elif _selected != target:
        raise RuntimeError(f"device already initialised as {_selected}; MindSpore cannot switch to {target} in one process")
    return _selected


def device_target() -> str:
    return _selected or select_device()


def is_ascend() -> bool:
    return device_target() == "Ascend"


def default_compute_dtype():
    """bf16 on Ascend (how the released models are run); fp32 on CPU, whose bf16 matmul/gather kernels don't exist."""
    return ms.bfloat16 if is_ascend() else ms.float32


def native_conv2d() -> bool:
    """Whether to call the device's Conv2D kernel. MindSpore's CPU Conv2D is orders of magnitude slower than
    an im2col (``ops.unfold``) + matmul formulation of the same convolution (``tests/nn/test_conv.py`` checks
    they agree), so the CPU uses that; Ascend's Conv2D is the fast path there."""
    return is_ascend()


# ---- operator fusion for the hot, fixed-shape graphs -------------------------------------------------------------


def operator_fusion() -> bool:
    """Whether ``FusedJit`` graphs are compiled with MindSpore's graph-kernel fusion (AKG), which merges chains of
    elementwise ops into single generated kernels.

    ``$EMU3_OPERATOR_FUSION``: "0" never, "1" always (CPU), unset: on the CPU when AKG's compiler can run (it
    needs the ``decorator`` package) and MindSpore's OpenMP threads wait passively (``emu3._openmp``; with
    spinning threads, fused kernels made decode steps slower, not faster). Ascend compiles its own fusion.
    """
    setting = os.environ.get("EMU3_OPERATOR_FUSION", "").strip()
    if setting not in ("", "0", "1"):
        raise ValueError(f"EMU3_OPERATOR_FUSION must be 0, 1 or unset, got {setting!r}")
    if setting == "0" or is_ascend():
        return False
    if importlib.util.find_spec("decorator") is None:
        return False
    return setting == "1" or PASSIVE_OPENMP


def cache_root() -> str:
    """``$EMU3_CACHE_DIR``, default ``$XDG_CACHE_HOME/emu3-mindspore`` or ``~/.cache/emu3-mindspore``."""
    return os.environ.get("EMU3_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "emu3-mindspore")


def kernel_cache_dir() -> str:
    """Where fused kernels are compiled to and reloaded from across runs: ``cache_root()/kernels``."""
    return os.path.join(cache_root(), "kernels")


# AKG's generated transposes returned garbage (NaN) in the vision tokenizer's decode graph (a 64x64 image; see
# tests/tokenizer/test_vq_parity.py): transposes stay MindSpore's own kernels, the elementwise chains are fused.
# In a training step (tests/train/test_step_parity.py) AKG's exp and log, approximations, put a fused
# cross-entropy off by 5e-6 (relative; MindSpore's kernels and PyTorch agree to 1e-7), and its broadcast Select
# (the embedding's "no gradient to padding rows") dropped the gradients of random other rows, differently from
# run to run: those stay MindSpore's kernels too.
FUSION_FLAGS = "--disable_cluster_ops=Transpose,Exp,Log,Select"


@contextlib.contextmanager
def _graph_kernel_fusion():
    """Compile what runs inside with graph-kernel fusion on (the flag is read when a graph compiles)."""
    cache = kernel_cache_dir()
    os.makedirs(cache, exist_ok=True)
    # Read by AKG's compiler process (started at the first fused compile) and by MindSpore loading its kernels.
    os.environ.setdefault("MS_COMPILER_CACHE_PATH", cache)
    # AKG reads its bundled tiling repository only from under this path (by default the working directory).
    os.environ.setdefault("AKG_WHITE_LIST_PATH", os.path.join(os.path.dirname(ms.__file__), "_akg"))
    previous = ms.get_context("enable_graph_kernel"), ms.get_context("graph_kernel_flags")
    cwd = os.getcwd()
    logger = ms_log._get_logger()  # pylint: disable=protected-access
    muted = logger.disabled
    # The two settings warn that they are deprecated (for jit_level="O1" and $MS_DEV_GRAPH_KERNEL_FLAGS), but on
    # CPU "O1" does not fuse (2.10), and the variable would also reach graphs compiled without fusion.
    logger.disabled = True
    try:
        ms.set_context(enable_graph_kernel=True, graph_kernel_flags=FUSION_FLAGS)
        os.chdir(cache)  # AKG's compiler writes a log file into its working directory
        yield
    finally:
        os.chdir(cwd)
        ms.set_context(enable_graph_kernel=previous[0], graph_kernel_flags=previous[1])
        logger.disabled = muted


_LOW_PRECISION = (ms.float16, ms.bfloat16)


def has_low_precision_parameters(cell) -> bool:
    """Whether any parameter of ``cell`` is fp16/bf16 (its graphs are then compiled without fusion, see FusedJit)."""
    return any(p.dtype in _LOW_PRECISION for p in cell.get_parameters())


class FusedJit:
    """``mindspore.jit(fn)`` whose graphs compile with operator fusion where ``operator_fusion()`` says so.

    For graphs that run many times at the same shapes. The LLM's decode step on CPU is hundreds of small kernels
    around its matmuls, each costing runtime overhead besides its work; fusing the elementwise chains (RMSNorm,
    RoPE, SwiGLU, residual adds) removes many of them. The vision tokenizer's graphs keep far fewer full-size
    intermediates when GroupNorm/SiLU/residual chains are fused (less time, a third of the memory), and the
    optimizer update of training is one long elementwise chain. Fused kernels take longer to compile the first
    time for a new shape (then they load from ``kernel_cache_dir()``), so a graph whose shape changes with every
    input (an LLM prefill) is better compiled without. Measured figures: docs/design.md.

    Graphs in fp16/bf16 are compiled without fusion: AKG on CPU fails on them (printing pages of its compiler's
    stack before the fallback below catches it). ``low_precision`` says whether the graph is one; by default it
    is read from the parameters of the cell ``fn`` is a method of, and any fp16/bf16 tensor argument counts too.
    """

    def __init__(self, fn, low_precision=None):
        self.fn = fn
        self.jitted = ms.jit(fn)
        self._compiled = set()
        if low_precision is None:
            cell = getattr(fn, "__self__", None)
            low_precision = isinstance(cell, ms.nn.Cell) and has_low_precision_parameters(cell)
        self.low_precision = low_precision

    def __call__(self, *args):
        signature = tuple((tuple(a.shape), a.dtype) if hasattr(a, "shape") else a for a in args)
        if signature in self._compiled:
            return self.jitted(*args)
        low = self.low_precision or any(getattr(a, "dtype", None) in _LOW_PRECISION for a in args)
        out = self._compile_fused(args) if operator_fusion() and not low else self.jitted(*args)
        self._compiled.add(signature)  # compiled now, either way
        return out

    def _compile_fused(self, args):
        """First call with fusion; if the fusion toolchain fails (no writable cache, an AKG compile error), warn
        and compile without it — a slower graph rather than no result. Errors of the graph itself recur."""
        try:
            with _graph_kernel_fusion():
                return self.jitted(*args)
        except (OSError, RuntimeError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            warnings.warn(f"operator fusion could not compile this graph ({reason}); compiling it without fusion. "
                          "Set EMU3_OPERATOR_FUSION=0 to skip fusion.", RuntimeWarning, stacklevel=3)
            self.jitted = ms.jit(self.fn)  # a fresh compile
            return self.jitted(*args)
