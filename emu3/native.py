"""C++ kernels for the CPU, compiled on first use and cached.

Where MindSpore's CPU graph has no kernel that does a job in one pass (the vision tokenizer's GroupNorm and im2col:
``emu3/kernels/``, installed by ``emu3/nn/cpu_kernels.py``; the training suite's in-place AdamW update and the
loss's cross-entropy: ``train/kernels/``), a few lines of C++ do, called as MindSpore "aot" Custom ops. They are
built with the machine's C++ compiler (``$CXX``, else ``g++``/``c++``), tuned to its CPU (``-march=native``), into
``emu3.device.cache_root()/native/`` under a name that hashes the source, the compiler, the flags and the CPU, so a
cache shared between machines never hands one machine another's build.
Without a compiler the callers fall back to MindSpore's own kernels (slower; the same results, bit for bit for
AdamW, to fp32 rounding for the others), and say why.
"""

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

KERNELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
# -ffp-contract=off: no fused multiply-adds, so the kernels round as MindSpore's separate kernels do.
# -fno-math-errno: sqrt need not set errno, so GCC vectorises it (vsqrtps rounds exactly as sqrtss does); without it
# the AdamW kernel's loop stays scalar: 16 ms instead of 6.5 for 16 M parameters (measured).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC", "-std=c++14")


class NativeKernelUnavailable(RuntimeError):
    """A kernel could not be built here; the message says why."""


def _compiler():
    chosen = os.environ.get("CXX")
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise NativeKernelUnavailable(f"$CXX={chosen!r} is not an executable on PATH")
        return found
    found = shutil.which("g++") or shutil.which("c++")
    if not found:
        raise NativeKernelUnavailable("no C++ compiler (install g++, or set $CXX)")
    return found


def _cpu_signature():
    """What ``-march=native`` compiles for: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def library(name, kernels_dir=KERNELS_DIR):
    """The path of ``{kernels_dir}/{name}.cc`` (default: ``emu3/kernels/``) built as a shared library (compiled now
    if not in the cache)."""
    from emu3.device import cache_root

    source = os.path.join(kernels_dir, f"{name}.cc")
    with open(source, "rb") as f:
        code = f.read()
    compiler = _compiler()
    key = hashlib.sha256(b"\0".join([code, compiler.encode(), " ".join(FLAGS).encode(),
                                     _cpu_signature().encode(), platform.machine().encode()])).hexdigest()[:16]
    out_dir = os.path.join(cache_root(), "native")
    path = os.path.join(out_dir, f"{name}-{key}.so")
    if os.path.isfile(path):
        return path
    os.makedirs(out_dir, exist_ok=True)
    # Built beside its final name and renamed into place: processes building at once (msrun ranks) never load a
    # half-written library.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        try:
            result = subprocess.run([compiler, *FLAGS, source, "-o", tmp], capture_output=True, text=True)
        except OSError as e:
            raise NativeKernelUnavailable(f"{compiler} could not be run: {e}") from None
        if result.returncode:
            raise NativeKernelUnavailable(f"{os.path.basename(compiler)} could not build {source}: "
                                          f"{result.stderr.strip()[-500:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def library_or_note(name, without, kernels_dir=KERNELS_DIR):
    """``library(name, kernels_dir)``, or None after a one-line note on stderr: ``without`` (what now runs without
    it), and why."""
    try:
        return library(name, kernels_dir)
    except NativeKernelUnavailable as e:
        print(f"note: {without}: {e}", file=sys.stderr, flush=True)
        return None


def cpu_kernel(name, switch, without, kernels_dir=KERNELS_DIR):
    """The path of ``library(name, kernels_dir)`` for a kernel that replaces MindSpore's on the CPU, or None: on
    another device, when the environment variable ``switch`` is "0", or (after a note on stderr saying ``without``
    and why) when it cannot be built here."""
    from emu3.device import device_target

    if device_target() != "CPU" or os.environ.get(switch, "1").strip() == "0":
        return None
    return library_or_note(name, without, kernels_dir)
