"""Layers that run on CPU and Ascend alike, named like their PyTorch counterparts.

MindSpore's own ``nn.GroupNorm``/``nn.BatchNorm3d`` call their parameters ``gamma``/``beta``/``moving_*`` and
``mint``'s versions are Ascend-only, so the few layers whose names or kernels differ are written here once
(convolutions live in ``conv.py``).
A layer with a ``precision_role`` gets its compute dtype from the precision policy (see ``precision.py``);
``compute_dtype = None`` means "compute in the dtype of the input".
"""

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


class BatchNorm3d(nn.Cell):
    """BatchNorm over (N, C, T, H, W) computed in fp32, with PyTorch's buffers and update rule."""

    precision_role = "fp32"

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = Parameter(Tensor(np.ones(num_features, np.float32)))
        self.bias = Parameter(Tensor(np.zeros(num_features, np.float32)))
        self.running_mean = Parameter(Tensor(np.zeros(num_features, np.float32)), requires_grad=False)
        self.running_var = Parameter(Tensor(np.ones(num_features, np.float32)), requires_grad=False)
        # Kept only so the released checkpoint round-trips (PyTorch uses it when momentum is None).
        self.num_batches_tracked = Parameter(Tensor(0, ms.int64), requires_grad=False)
        self.compute_dtype = ms.float32

    def construct(self, x):
        out_dtype = x.dtype
        x = x.astype(self.compute_dtype)
        if self.training:
            axes = (0, 2, 3, 4)
            mean = x.mean(axis=axes)
            var = ((x - mean.reshape(1, -1, 1, 1, 1)) ** 2).mean(axis=axes)
            count = x.size // x.shape[1]
            unbiased = var * (count / max(count - 1, 1))
            ops.assign(self.running_mean, (1 - self.momentum) * self.running_mean + self.momentum * mean)
            ops.assign(self.running_var, (1 - self.momentum) * self.running_var + self.momentum * unbiased)
            ops.assign_add(self.num_batches_tracked, Tensor(1, ms.int64))
        else:
            mean, var = self.running_mean, self.running_var
        shape = (1, -1, 1, 1, 1)
        scale = self.weight.astype(x.dtype) * ops.rsqrt(var + self.eps)
        shift = self.bias.astype(x.dtype) - mean * scale
        return (x * scale.reshape(shape) + shift.reshape(shape)).astype(out_dtype)


class GroupNorm(nn.Cell):
    """GroupNorm with PyTorch parameter names (``weight``/``bias``), computed in the input dtype."""

    def __init__(self, num_groups, num_channels, eps=1e-6):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels cannot be split into {num_groups} groups")
        self.num_groups = num_groups
        self.eps = eps
        # An op (x as (B, G, C/G, S), weight, bias, eps (1,)) -> (y, mean, rstd) replacing ops.group_norm for fp32
        # inputs, set from outside before the first graph is compiled (on the CPU, the vision tokenizer sets a C++
        # kernel pair with its own gradient: emu3/nn/cpu_kernels.py); None: ops.group_norm.
        self.kernel = None
        self.eps_tensor = Tensor(np.array([eps], np.float32))
        self.weight = Parameter(Tensor(np.ones(num_channels, np.float32)))
        self.bias = Parameter(Tensor(np.zeros(num_channels, np.float32)))

    def construct(self, x):
        if self.kernel is not None and x.dtype == ms.float32:
            grouped = x.reshape(x.shape[0], self.num_groups, x.shape[1] // self.num_groups, -1)
            return self.kernel(grouped, self.weight, self.bias, self.eps_tensor)[0].reshape(x.shape)
        return ops.group_norm(x, self.num_groups, self.weight.astype(x.dtype), self.bias.astype(x.dtype), self.eps)


def upsample_nearest(x, factors):
    """Nearest-neighbour upsampling of the trailing ``len(factors)`` axes by integer factors.

    For integer ratios PyTorch's ``mode="nearest"`` is exactly a repeat of every element, done here with a
    broadcast + reshape so it is cheap and shape-static in graph mode.
    """
    lead = x.shape[: x.ndim - len(factors)]
    spatial = x.shape[x.ndim - len(factors):]
    expanded, target, final = list(lead), list(lead), list(lead)
    for size, factor in zip(spatial, factors):
        expanded += [size, 1]
        target += [size, factor]
        final.append(size * factor)
    return ops.broadcast_to(x.reshape(tuple(expanded)), tuple(target)).reshape(tuple(final))


def zero_pad(x, padding):
    """Zero padding with ``ops.pad``'s argument order ((last axis before, after), (the axis before it …), …).

    Built from concatenations rather than ``ops.pad``: the result is the same, but the backward of ``ops.pad`` is
    the PadV3Grad kernel, which on MindSpore 2.10's CPU stops returning after ~17 runs of a compiled training
    graph (the vision tokenizer's training step hung on its 18th run); a concatenation's backward is slicing.
    """
    for i in range(len(padding) // 2):
        axis = x.ndim - 1 - i
        before, after = padding[2 * i], padding[2 * i + 1]
        parts = []
        if before:
            parts.append(ops.zeros(x.shape[:axis] + (before,) + x.shape[axis + 1:], x.dtype))
        parts.append(x)
        if after:
            parts.append(ops.zeros(x.shape[:axis] + (after,) + x.shape[axis + 1:], x.dtype))
        if len(parts) > 1:
            x = ops.cat(parts, axis=axis)
    return x
