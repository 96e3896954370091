"""RMSNorm as in the released Emu3 (Llama style), an fp32 island under the precision policy."""

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


class RMSNorm(nn.Cell):
    """y = weight * (x / sqrt(mean(x^2) + eps)), normalised in fp32.

    Order of operations follows the original PyTorch code, not mindone's: the normalised value is cast back to
    the input dtype *first* and then multiplied by the weight in that dtype. In a bf16 model this gives the
    released model's bf16 rounding; the weight itself is kept in fp32 (``precision_role``) and cast at use, which
    equals the original's bf16 weight. In fp32 (CPU) both orders are identical.
    """

    precision_role = "fp32"

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(Tensor(np.ones(hidden_size, np.float32)))
        self.compute_dtype = ms.float32

    def construct(self, x):
        out_dtype = x.dtype
        h = x.astype(self.compute_dtype)
        variance = ops.mean(h * h, axis=-1, keep_dims=True)
        h = (h * ops.rsqrt(variance + self.eps)).astype(out_dtype)
        return self.weight.astype(out_dtype) * h
