"""The unfold (im2col) CPU kernel and its gradient (emu3/kernels/unfold.cc) against ops.unfold, inside the
vision tokenizer's Conv2d: the same columns bit for bit, the same input gradient to fp32 rounding, for the
geometries Emu3's tokenizer uses (3x3 same-padding, 3x3 stride 2 without padding) and an odd one."""

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from emu3.nn.conv import Conv2d
from native_kernels import assert_note_names_the_missing_compiler, needs_kernel, without_compiler
from emu3.nn import cpu_kernels


class _Net(nn.Cell):
    def __init__(self, geometries):
        super().__init__()
        self.convs = nn.CellList([Conv2d(3, 4, k, stride=s, padding=p) for k, s, p in geometries])

    def construct(self, x):
        return [conv(x) for conv in self.convs]


GEOMETRIES = [(3, 1, 1), (3, 2, 0), ((2, 3), (1, 2), (0, 1))]


def _outputs(net, x, upstream, compiled):
    def objective(t):
        return sum((y * u).sum() for y, u in zip(net(t), upstream))

    def forward(t):  # new functions per call: a compiled graph keeps the unfold it was traced with
        return net(t)

    grad = ms.grad(objective, grad_position=0, weights=net.trainable_params())
    outs = (ms.jit(forward) if compiled else forward)(x)
    dx, dweights = (ms.jit(grad) if compiled else grad)(x)
    return [o.asnumpy() for o in outs], dx.asnumpy(), [d.asnumpy() for d in dweights]


@needs_kernel("unfold")
@pytest.mark.parametrize("compiled", [True, False], ids=["graph", "pynative"])
def test_kernel_equals_ops_unfold(compiled):
    rng = np.random.default_rng(0)
    net = _Net(GEOMETRIES)
    x = Tensor(rng.standard_normal((2, 3, 9, 11)).astype(np.float32))
    upstream = [Tensor(rng.standard_normal(y.shape).astype(np.float32)) for y in net(x)]
    portable = _outputs(net, x, upstream, compiled)
    cpu_kernels.use_unfold_kernel(net)
    assert all(conv.unfold is not None for conv in net.convs)
    fused = _outputs(net, x, upstream, compiled)
    for ours, theirs in zip(fused[0], portable[0]):
        np.testing.assert_array_equal(ours, theirs)  # the same columns, the same products
    np.testing.assert_allclose(fused[1], portable[1], rtol=0, atol=1e-6 * np.abs(portable[1]).max())
    for ours, theirs in zip(fused[2], portable[2]):
        np.testing.assert_array_equal(ours, theirs)


@needs_kernel("unfold")
def test_fold_is_the_adjoint_of_unfold():
    """<unfold(x), c> = <x, fold(c)> for random x and c, in float64 arithmetic over the fp32 values."""
    rng = np.random.default_rng(1)
    net = _Net([(3, 2, 1)])
    cpu_kernels.use_unfold_kernel(net)
    conv = net.convs[0]
    x = Tensor(rng.standard_normal((2, 3, 8, 7)).astype(np.float32))
    cols = conv.unfold(x, conv.geometry)
    c = Tensor(rng.standard_normal(cols.shape).astype(np.float32))
    folded = ms.grad(lambda t: (conv.unfold(t, conv.geometry) * c).sum())(x)
    left = (cols.asnumpy().astype(np.float64) * c.asnumpy()).sum()
    right = (x.asnumpy().astype(np.float64) * folded.asnumpy()).sum()
    assert left == pytest.approx(right, rel=1e-6)


def test_switch_keeps_ops_unfold(monkeypatch):
    monkeypatch.setenv("EMU3_UNFOLD_KERNEL", "0")
    net = _Net(GEOMETRIES)
    cpu_kernels.use_unfold_kernel(net)
    assert all(conv.unfold is None for conv in net.convs)


def test_no_compiler_keeps_ops_unfold_and_says_why(monkeypatch, tmp_path, capsys):
    without_compiler(monkeypatch, tmp_path)
    net = _Net(GEOMETRIES)
    cpu_kernels.use_unfold_kernel(net)
    assert all(conv.unfold is None for conv in net.convs)
    assert_note_names_the_missing_compiler(capsys, "convolutions unfold without their CPU kernel")
