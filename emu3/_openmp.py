"""Have MindSpore's OpenMP threads wait passively — imported by ``emu3/__init__`` before anything else.

Why: on CPU, MindSpore's native kernels run on OpenMP threads (libgomp), which by default spin for a while after
each parallel region, and the fused kernels of graph-kernel fusion (``emu3.device.FusedJit``) run on MindSpore's
own thread pool, which spins too. On a machine with few cores the two pools then take turns stealing each other's
cores: a batch-8 decode step with fusion measured 2.3x *slower* than without it, and the same step with passive
OpenMP threads 5% faster (batch 1: 8-12% faster). libgomp reads ``OMP_WAIT_POLICY`` once, when it is loaded, so
the policy is set when ``emu3`` is imported and removed once MindSpore is loaded (``emu3.device`` does that):
OpenMP runtimes loaded later in the process (PyTorch ships its own) keep their defaults. Importing ``emu3`` does
not import MindSpore itself (the tokenizer's modules work without it).

``PASSIVE_OPENMP`` tells whether MindSpore's OpenMP runtime is known to wait passively; fusion is only used then.
Nothing happens if the user chose a policy (``OMP_WAIT_POLICY`` set) or if an OpenMP runtime is already loaded
(e.g. MindSpore or PyTorch imported before ``emu3``): the policy can no longer be changed then.
"""

import os
import sys


def _openmp_loaded():
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line or "libiomp" in line for line in maps)
    except OSError:  # not Linux: assume the worst
        return True


def _choose_passive_openmp():
    """(whether MindSpore's OpenMP threads will wait passively, whether this module set the policy)."""
    chosen = os.environ.get("OMP_WAIT_POLICY")
    if chosen is not None:
        return chosen.strip().upper() == "PASSIVE", False
    if "mindspore" in sys.modules or _openmp_loaded():
        return False, False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True, True


PASSIVE_OPENMP, _policy_set_here = _choose_passive_openmp()


def mindspore_loaded():
    """Called once MindSpore (so its libgomp) is loaded: drop the policy this module set, so that OpenMP runtimes
    loaded later in the process (PyTorch ships its own) keep their default."""
    global _policy_set_here
    if _policy_set_here:
        os.environ.pop("OMP_WAIT_POLICY", None)
        _policy_set_here = False
