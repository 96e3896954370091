"""AdamW's in-place CPU kernel (train/kernels/adamw_inplace.cc) against the portable update, and how it is built.

Its agreement with torch.optim.AdamW itself is tests/train/test_step_parity.py's (the trainer's default on the CPU
is this kernel)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mindspore import Parameter, Tensor

from native_kernels import needs_kernel
from emu3 import native
from train import KERNELS_DIR, optim
from train.optim import AdamW
from train.step import ClippedUpdate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A weight large enough for the kernel's threads, a bias and a norm weight (no decay for those two).
SHAPES = {"proj.weight": (300, 200), "proj.bias": (300,), "input_layernorm.weight": (200,)}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(Tensor(rng.standard_normal(shape).astype(np.float32)), name=name)
            for name, shape in SHAPES.items()]


def _train(inplace, compiled, steps=3):
    params = _params()
    optimizer = AdamW(params, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-6, inplace=inplace)
    update = ClippedUpdate(optimizer, max_grad_norm=1.0, compiled=compiled)
    rng = np.random.default_rng(1)
    for step in range(steps):
        grads = [Tensor(rng.standard_normal(p.shape).astype(np.float32) * 3) for p in params]
        update(1e-2 * (step + 1), 1.0, grads)
    state = {name: p.asnumpy() for name, p in optimizer.state().items()}
    state.update({p.name: p.asnumpy() for p in params})
    return optimizer, state


@needs_kernel("adamw_inplace", KERNELS_DIR)
@pytest.mark.parametrize("compiled", [True, False], ids=["graph", "pynative"])
def test_inplace_kernel_equals_portable_update(compiled):
    inplace_optimizer, inplace = _train(True, compiled)
    portable_optimizer, portable = _train(False, compiled)
    assert inplace_optimizer.inplace and not portable_optimizer.inplace
    assert set(inplace) == set(portable) and len(inplace) == 2 * len(SHAPES) + 1 + len(SHAPES)
    initial = {p.name: p.asnumpy() for p in _params()}
    for name, value in portable.items():  # the same operations in the same order: the same bits
        np.testing.assert_array_equal(inplace[name], value, err_msg=name)
        if name in initial:  # the parameters did move, by the update's size
            assert np.abs(value - initial[name]).max() > 1e-3
    assert inplace["step"] == 3


@needs_kernel("adamw_inplace", KERNELS_DIR)
def test_the_trainers_default_on_the_cpu_is_the_kernel(monkeypatch):
    assert AdamW(_params()).inplace
    monkeypatch.setenv("EMU3_INPLACE_ADAMW", "0")
    assert not AdamW(_params()).inplace


def test_low_precision_parameters_keep_the_portable_update():
    params = [Parameter(Tensor(np.ones((4, 4), np.float16)), name="w")]
    assert not AdamW(params).inplace
    with pytest.raises(ValueError, match="fp32 parameters on the CPU"):
        AdamW(params, inplace=True)


def test_without_a_compiler_the_update_falls_back_and_says_why(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EMU3_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    monkeypatch.setattr(optim, "_INPLACE_KERNEL", None)
    with pytest.raises(native.NativeKernelUnavailable, match="no-such-compiler-xyz"):
        native.library("adamw_inplace", KERNELS_DIR)
    optimizer = AdamW(_params())
    assert not optimizer.inplace
    assert "without its in-place CPU kernel" in capsys.readouterr().err
    with pytest.raises(native.NativeKernelUnavailable):
        AdamW(_params(), inplace=True)


def test_a_failed_build_names_the_compiler_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("EMU3_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # runs, exits 1
    with pytest.raises(native.NativeKernelUnavailable, match="false could not build"):
        native.library("adamw_inplace", KERNELS_DIR)
    assert os.listdir(tmp_path / "native") == []


@needs_kernel("adamw_inplace", KERNELS_DIR)
def test_the_library_is_built_once_per_machine_and_source(monkeypatch, tmp_path):
    monkeypatch.setenv("EMU3_CACHE_DIR", str(tmp_path))
    path = native.library("adamw_inplace", KERNELS_DIR)
    built = os.path.getmtime(path)
    assert native.library("adamw_inplace", KERNELS_DIR) == path and os.path.getmtime(path) == built
    monkeypatch.setattr(native, "_cpu_signature", lambda: "another cpu")
    other = native.library("adamw_inplace", KERNELS_DIR)
    assert other != path and sorted(os.listdir(tmp_path / "native")) == sorted(
        [os.path.basename(path), os.path.basename(other)])


@needs_kernel("adamw_inplace", KERNELS_DIR)
def test_processes_building_at_once_share_one_whole_library(tmp_path):
    """msrun's ranks start together on an empty cache: each builds beside the final name and renames into place."""
    code = ("from emu3 import native; from train import KERNELS_DIR; "
            "print(native.library('adamw_inplace', KERNELS_DIR))")
    env = dict(os.environ, EMU3_CACHE_DIR=str(tmp_path), PYTHONPATH=REPO)
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(3)]
    paths = {run.communicate(timeout=300)[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs) and len(paths) == 1
    assert os.listdir(tmp_path / "native") == [os.path.basename(paths.pop())]  # no temporaries left
