"""The optional perceptual term of vision tokenizer training (off by default: ``--perceptual_weight 0``).

VQGAN and MoVQ (whose decoder Emu3's tokenizer follows) add LPIPS (Zhang et al., 2018) to the pixel loss: the
distance between a picture and its reconstruction as an ImageNet VGG16 sees them,

    LPIPS(x, y) = sum over taps l of  mean over positions of  w_l . (n(f_l(x)) - n(f_l(y)))^2

with f_l VGG16's activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 of the pictures (in [-1, 1],
first shifted and scaled by LPIPS's fixed per-channel constants), n the unit normalisation over channels, and w_l
LPIPS's learned non-negative weight per channel (v0.1, the version VQGAN uses). The network is frozen: gradients
reach the reconstruction only.

Neither VGG16's ImageNet weights nor LPIPS's linear weights can be fetched on this project's machines, so the
weights come from a file the user makes once where they can be downloaded (``train/lpips_weights.py``).
"""

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from emu3.nn.conv import Conv2d
from emu3.nn.cpu_kernels import use_unfold_kernel

from .lpips_weights import EPS, POOLS, SCALE, SHIFT, TAPS, VGG16_CONVS, check_weights_file


class LinearTap(nn.Cell):
    """LPIPS's learned 1x1 convolution to one channel (no bias), averaged over positions: (B, C, H, W) -> (B,)."""

    def __init__(self, weight, name):
        super().__init__()
        self.weight = Parameter(Tensor(np.asarray(weight, np.float32).reshape(1, -1, 1)), name=name,
                                requires_grad=False)

    def construct(self, diff):
        b, c, h, w = diff.shape
        return (diff.reshape(b, c, h * w) * self.weight).sum(axis=1).mean(axis=1)


class LPIPS(nn.Cell):
    """(x, y) pictures (B, 3, H, W) in [-1, 1] -> LPIPS distance per picture (B,). Frozen weights from
    ``weights`` {name: array} (``train.lpips_weights.weight_names``)."""

    def __init__(self, weights):
        super().__init__()
        self.convs = nn.CellList()
        for index, cin, cout in VGG16_CONVS:
            conv = Conv2d(cin, cout, 3, padding=1)  # the project's portable convolution
            conv.weight.set_data(Tensor(np.asarray(weights[f"features.{index}.weight"], np.float32)))
            conv.bias.set_data(Tensor(np.asarray(weights[f"features.{index}.bias"], np.float32)))
            self.convs.append(conv)
        self.lins = nn.CellList([LinearTap(weights[f"lin{tap}.model.1.weight"], f"lin{tap}")
                                 for tap in range(len(TAPS))])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.shift = Tensor(np.array(SHIFT, np.float32).reshape(1, 3, 1, 1))
        self.scale = Tensor(np.array(SCALE, np.float32).reshape(1, 3, 1, 1))
        for p in self.get_parameters():
            p.requires_grad = False  # frozen: gradients reach the pictures only
        use_unfold_kernel(self)  # on the CPU, the tokenizer's im2col kernel (a no-op elsewhere)
        self.set_train(False)

    def features(self, x):
        """The ReLU outputs LPIPS compares (relu1_2 ... relu5_3) of pictures in [-1, 1]."""
        x = (x - self.shift) / self.scale
        taps = []
        for (index, _, _), conv in zip(VGG16_CONVS, self.convs):
            if index - 1 in POOLS:  # a new stage starts after a 2x2 max pool
                x = self.pool(x)
            x = ops.relu(conv(x))
            if index in TAPS:
                taps.append(x)
        return taps

    def construct(self, x, y):
        b = x.shape[0]
        taps = self.features(ops.concat((x.astype(ms.float32), y.astype(ms.float32)), 0))  # one pass for both
        total = ops.zeros((b,), ms.float32)
        for feature, lin in zip(taps, self.lins):
            unit = feature / (ops.sqrt((feature ** 2).sum(axis=1, keepdims=True)) + EPS)
            total = total + lin((unit[:b] - unit[b:]) ** 2)
        return total


def load_lpips(path):
    """The frozen LPIPS cell with the weights of a file made by ``python -m train.lpips_weights``."""
    from safetensors.numpy import load_file

    check_weights_file(path)
    return LPIPS(load_file(path))
