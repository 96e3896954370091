"""Convolutions with PyTorch parameter names (``weight`` [out, in, *kernel], ``bias``) and a device-chosen kernel.

Conv2d uses the device's Conv2D on Ascend and an im2col (``ops.unfold``) + matmul formulation on CPU, where the
native kernel is two orders of magnitude slower (see ``emu3.device.native_conv2d``). Both compute the same
cross-correlation as ``torch.nn.functional.conv2d``.
"""

import math

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeNormal, Uniform, initializer

from ..device import native_conv2d

# Upper bound on the im2col buffer per call; larger batches are convolved in chunks of frames.
_IM2COL_BYTES = 512 * 2 ** 20


def _tuple(value, n):
    return (value,) * n if isinstance(value, int) else tuple(value)


def _init_parameters(cell, in_channels, out_channels, kernel_size, bias):
    # PyTorch-style initialisation for training from scratch (Emu3's tokenizer: kaiming-normal, fan_out, relu).
    cell.weight = Parameter(initializer(HeNormal(mode="fan_out", nonlinearity="relu"),
                                        (out_channels, in_channels, *kernel_size)))
    fan_in = in_channels * int(np.prod(kernel_size))
    cell.bias = Parameter(initializer(Uniform(1 / math.sqrt(fan_in)), (out_channels,))) if bias else None


class Conv2d(nn.Cell):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.kernel_size = _tuple(kernel_size, 2)
        self.stride = _tuple(stride, 2)
        self.padding = _tuple(padding, 2)
        _init_parameters(self, in_channels, out_channels, self.kernel_size, bias)
        self.native = native_conv2d()
        self.pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        # An op (x, geometry) -> columns replacing ops.unfold for fp32 inputs, set from outside (on the CPU, the
        # vision tokenizer and its training discriminator set a C++ kernel with its own gradient:
        # emu3/nn/cpu_kernels.py); None: ops.unfold.
        self.unfold = None
        self.geometry = Tensor(np.array(self.kernel_size + self.stride + self.padding, np.int32))

    def construct(self, x):
        weight = self.weight.astype(x.dtype)
        if self.native:
            out = ops.conv2d(x, weight, None, stride=self.stride, pad_mode="pad", padding=self.padding)
        elif self.pointwise:
            b, c, h, w = x.shape
            matrix = ops.broadcast_to(weight.reshape(weight.shape[0], c), (b, weight.shape[0], c))
            out = ops.bmm(matrix, x.reshape(b, c, h * w)).reshape(b, -1, h, w)
        else:
            out = self._im2col_conv(x, weight)
        if self.bias is not None:
            out = ops.bias_add(out, self.bias.astype(out.dtype))
        return out

    def _im2col_conv(self, x, weight):
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        matrix = weight.reshape(weight.shape[0], c * kh * kw)  # rows ordered (C, kh, kw), as unfold's columns
        frame_bytes = c * kh * kw * out_h * out_w * 4
        chunk = max(1, min(b, _IM2COL_BYTES // frame_bytes))
        outs = []
        for start in range(0, b, chunk):
            if self.unfold is not None and x.dtype == ms.float32:
                cols = self.unfold(x[start:start + chunk], self.geometry)
            else:
                cols = ops.unfold(x[start:start + chunk], kernel_size=(kh, kw), dilation=1, padding=(ph, pw),
                                  stride=(sh, sw))
            # An explicit batch of weights: MindSpore's CPU BatchMatMul is faster than a broadcasting matmul.
            outs.append(ops.bmm(ops.broadcast_to(matrix, (cols.shape[0],) + matrix.shape), cols))
        out = outs[0] if len(outs) == 1 else ops.cat(outs, axis=0)
        return out.reshape(b, -1, out_h, out_w)


class Conv3d(nn.Cell):
    """Padding-free 3-D convolution (callers pad explicitly; Emu3's are causal in time)."""

    # Ascend's Conv3D has no bf16 kernel, so the policy may run this layer in fp16 inside a bf16 model.
    precision_role = "conv3d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=True):
        super().__init__()
        self.stride = _tuple(stride, 3)
        _init_parameters(self, in_channels, out_channels, _tuple(kernel_size, 3), bias)
        self.compute_dtype = None

    def construct(self, x):
        out_dtype = x.dtype
        if self.compute_dtype is not None:
            x = x.astype(self.compute_dtype)
        bias = None if self.bias is None else self.bias.astype(x.dtype)
        return ops.conv3d(x, self.weight.astype(x.dtype), bias, stride=self.stride).astype(out_dtype)
