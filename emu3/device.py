"""The one place that decides which device runs, and what that implies for dtypes and kernels.

Everything else asks this module (``is_ascend()``, ``default_compute_dtype()``) instead of reading
``device_target`` itself, so a model file never branches on hardware directly.
"""

import os

import mindspore as ms

_SUPPORTED = ("Ascend", "CPU")
_selected = None


def _ascend_available() -> bool:
    try:
        return bool(ms.device_context.ascend.is_available())
    except Exception:  # older or CPU-only builds may not expose the query at all
        return False


def select_device(target: str = None) -> str:
    """Select and initialise the device once: ``target`` > $EMU3_DEVICE > Ascend when present > CPU."""
    global _selected
    target = target or os.environ.get("EMU3_DEVICE") or ("Ascend" if _ascend_available() else "CPU")
    if target not in _SUPPORTED:
        raise ValueError(f"unknown device {target!r}; choose one of {_SUPPORTED} (or unset EMU3_DEVICE)")
    if _selected is None:
        ms.set_device(target)
        if target == "CPU":
            # Pynative's asynchronous op launching thrashes on a few CPU cores: launching synchronously made a
            # VQ reconstruction 2x and an LLM forward 6-8x faster here. Graph mode is unaffected.
            ms.runtime.launch_blocking()
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
    """Whether to call the device's Conv2D kernel. MindSpore's CPU Conv2D is ~100x slower than an im2col
    (``ops.unfold``) + matmul formulation of the same convolution (measured: 0.97 s vs 12.6 ms for a
    4x64x64x64 3x3 conv under jit), so the CPU uses that; Ascend's Conv2D is the fast path there."""
    return is_ascend()
