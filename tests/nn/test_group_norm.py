"""The GroupNorm CPU kernel (emu3/kernels/group_norm.cc) against ops.group_norm: output and the gradients of the
input, weight and bias, in graph and pynative mode; the switch that keeps the portable kernel."""

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from emu3.nn.layers import GroupNorm
from native_kernels import assert_note_names_the_missing_compiler, needs_kernel, without_compiler
from emu3.nn import cpu_kernels


def _layer_and_input(shape, offset, seed=0):
    rng = np.random.default_rng(seed)
    layer = GroupNorm(4, shape[1])
    layer.weight.set_data(Tensor(rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)))
    layer.bias.set_data(Tensor(rng.standard_normal(shape[1]).astype(np.float32)))
    x = (rng.standard_normal(shape) * 2 + offset).astype(np.float32)
    upstream = rng.standard_normal(shape).astype(np.float32)
    return layer, Tensor(x), Tensor(upstream)


def _outputs(layer, x, upstream, compiled):
    def objective(t):
        return (layer(t) * upstream).sum()

    def forward(t):  # a new function per call: a compiled one keeps the kernel choice it was traced with
        return layer(t)

    grad = ms.value_and_grad(objective, grad_position=0, weights=(layer.weight, layer.bias))
    forward = ms.jit(forward) if compiled else forward
    _, (dx, (dweight, dbias)) = (ms.jit(grad) if compiled else grad)(x)
    return [forward(x).asnumpy(), dx.asnumpy(), dweight.asnumpy(), dbias.asnumpy()]


@needs_kernel("group_norm")
@pytest.mark.parametrize("compiled", [True, False], ids=["graph", "pynative"])
@pytest.mark.parametrize("shape, offset", [((2, 8, 5, 7), 0.0), ((3, 12, 4, 4, 3), 50.0)], ids=["4d", "5d-offset"])
def test_kernel_equals_portable_group_norm(compiled, shape, offset):
    layer, x, upstream = _layer_and_input(shape, offset)
    portable = _outputs(layer, x, upstream, compiled)
    cpu_kernels.use_group_norm_kernel(layer)
    assert layer.kernel is not None
    fused = _outputs(layer, x, upstream, compiled)
    for name, ours, theirs in zip(("output", "input gradient", "weight gradient", "bias gradient"), fused, portable):
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * scale, err_msg=name)


@needs_kernel("group_norm")
def test_kernel_matches_float64_group_norm():
    """Against the definition in float64: mean and biased variance over each (sample, group)."""
    layer, x, _ = _layer_and_input((2, 8, 6, 6), 10.0)
    cpu_kernels.use_group_norm_kernel(layer)
    values = x.asnumpy().astype(np.float64).reshape(2, 4, -1)
    normed = (values - values.mean(-1, keepdims=True)) / np.sqrt(values.var(-1, keepdims=True) + layer.eps)
    expected = normed.reshape(2, 8, 6, 6) * layer.weight.asnumpy()[:, None, None] + layer.bias.asnumpy()[:, None, None]
    np.testing.assert_allclose(layer(x).asnumpy(), expected, rtol=0, atol=1e-5)


def test_switch_keeps_the_portable_group_norm(monkeypatch):
    monkeypatch.setenv("EMU3_GROUP_NORM_KERNEL", "0")
    layer = GroupNorm(4, 8)
    cpu_kernels.use_group_norm_kernel(layer)
    assert layer.kernel is None


def test_no_compiler_keeps_the_portable_group_norm_and_says_why(monkeypatch, tmp_path, capsys):
    without_compiler(monkeypatch, tmp_path)
    layer = GroupNorm(4, 8)
    cpu_kernels.use_group_norm_kernel(layer)
    assert layer.kernel is None
    assert_note_names_the_missing_compiler(capsys, "GroupNorm runs without its CPU kernel")
