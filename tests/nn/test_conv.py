"""Conv2d's CPU formulation (im2col + matmul) computes exactly PyTorch's conv2d, chunked or not."""

import numpy as np
import pytest
import torch

import mindspore as ms

from emu3.nn import conv as conv_module
from emu3.nn.conv import Conv2d


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 0), (1, 1, 0), ((3, 1), (2, 1), (1, 0))])
@pytest.mark.parametrize("native", [False, True])
def test_conv2d_matches_torch(kernel, stride, padding, native, rng):
    layer = Conv2d(6, 5, kernel, stride=stride, padding=padding)
    layer.native = native
    x = rng.standard_normal((3, 6, 9, 11)).astype(np.float32)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(layer.weight.asnumpy()),
                                          torch.from_numpy(layer.bias.asnumpy()), stride=stride, padding=padding)
    np.testing.assert_allclose(layer(ms.Tensor(x)).asnumpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


def test_im2col_chunks_large_batches(monkeypatch, rng):
    layer = Conv2d(4, 3, 3, padding=1)
    x = ms.Tensor(rng.standard_normal((5, 4, 6, 6)).astype(np.float32))
    whole = layer(x).asnumpy()
    monkeypatch.setattr(conv_module, "_IM2COL_BYTES", 4 * 9 * 36 * 4 * 2)  # two frames per chunk -> 3 chunks
    # Same arithmetic per frame, but BLAS may block a smaller matmul differently: equal to rounding.
    np.testing.assert_allclose(layer(x).asnumpy(), whole, rtol=1e-5, atol=1e-6)


def test_parameters_use_pytorch_names_and_layout():
    names = {n: tuple(p.shape) for n, p in Conv2d(2, 7, 3).parameters_and_names()}
    assert names == {"weight": (7, 2, 3, 3), "bias": (7,)}


def test_zero_pad_is_ops_pad_with_slicing_gradients():
    import mindspore as ms
    from mindspore import ops

    from emu3.nn.layers import zero_pad

    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 4, 5, 6)).astype(np.float32))
    for padding in ((0, 1, 0, 1), (1, 0, 2, 1, 2, 0)):
        np.testing.assert_array_equal(zero_pad(x, padding).asnumpy(), ops.pad(x, padding).asnumpy())
        weight = ms.Tensor(np.random.default_rng(1).normal(size=zero_pad(x, padding).shape).astype(np.float32))
        grad = ms.grad(lambda t: (zero_pad(t, padding) * weight).sum())(x).asnumpy()
        w = weight.asnumpy()
        inner = w[..., padding[2]:w.shape[-2] - padding[3], padding[0]:w.shape[-1] - padding[1]]
        if len(padding) == 6:
            inner = inner[:, :, padding[4]:inner.shape[2] - padding[5]]
        np.testing.assert_array_equal(grad, inner)
