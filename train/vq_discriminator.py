"""The optional adversarial term of vision tokenizer training (off by default: ``--gan_weight 0``).

VQGAN and MoVQ (whose decoder Emu3's tokenizer follows) sharpen their reconstructions with a patch discriminator:
a small convolutional network that scores overlapping patches of a picture as real or reconstructed. The decoder
is trained to make its reconstructions score as real,

    generator loss      = -mean(D(x_rec))                                    (added with a fixed --gan_weight)
    discriminator loss  = (mean(relu(1 - D(x))) + mean(relu(1 + D(sg(x_rec))))) / 2     (hinge)

from ``--gan_start_step`` on, so that the decoder first learns to reconstruct and the discriminator starts against
reconstructions worth telling apart. The weight is fixed, as ViT-VQGAN's recipe; VQGAN rescales it every step by
the ratio of the two losses' gradient norms at the decoder's last layer, two more backward passes per step.

The discriminator is the PatchGAN of pix2pix / VQGAN: 4x4 convolutions of stride 2 doubling the channels (at most
8x), batch normalisation between them, LeakyReLU(0.2), then two 4x4 convolutions of stride 1, the last to one
channel: a picture of S pixels gets (S / 2^layers - 2)^2 patch scores. It trains with its own AdamW (betas 0.5,
0.9, as VQGAN) at the tokenizer's learning rate and schedule; its weights and optimizer state live in the training
checkpoints, not in the released-layout model (inference has no use for them).
"""

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

from emu3.nn.conv import Conv2d
from emu3.nn.cpu_kernels import use_unfold_kernel

LEAKY_SLOPE = 0.2
INIT_STD = 0.02  # DCGAN's initialisation, which pix2pix and VQGAN keep


def patch_grid(image_size, layers):
    """Side of the discriminator's grid of patch scores for square pictures of ``image_size`` pixels."""
    return image_size // 2 ** layers - 2


class PatchDiscriminator(nn.Cell):
    """pixels (B, 3, H, W) in [-1, 1] -> patch logits (B, 1, H / 2^layers - 2, W / 2^layers - 2)."""

    def __init__(self, in_channels=3, channels=64, layers=3, seed=0):
        super().__init__()
        if layers < 1 or channels < 1:
            raise ValueError(f"the discriminator needs at least one layer and one channel, got {layers} layers of "
                             f"{channels} channels")
        rng = np.random.default_rng(seed)
        widths = [channels * min(2 ** n, 8) for n in range(layers + 1)]
        cells = [self._conv(in_channels, widths[0], 2, True, rng), nn.LeakyReLU(LEAKY_SLOPE)]
        for n in range(1, layers + 1):
            stride = 2 if n < layers else 1  # the last widening convolution keeps the grid
            cells += [self._conv(widths[n - 1], widths[n], stride, False, rng), self._norm(widths[n], rng),
                      nn.LeakyReLU(LEAKY_SLOPE)]
        cells.append(self._conv(widths[layers], 1, 1, True, rng))
        self.layers = nn.SequentialCell(cells)
        use_unfold_kernel(self)  # on the CPU, the tokenizer's im2col kernel (a no-op elsewhere)

    @staticmethod
    def _conv(cin, cout, stride, bias, rng):
        conv = Conv2d(cin, cout, 4, stride=stride, padding=1, bias=bias)  # the project's portable convolution
        conv.weight.set_data(Tensor(rng.normal(0.0, INIT_STD, conv.weight.shape).astype(np.float32)))
        if bias:
            conv.bias.set_data(Tensor(np.zeros(cout, np.float32)))
        return conv

    @staticmethod
    def _norm(channels, rng):
        norm = nn.BatchNorm2d(channels)
        norm.gamma.set_data(Tensor(rng.normal(1.0, INIT_STD, channels).astype(np.float32)))
        return norm

    def construct(self, pixels):
        return self.layers(pixels)


def generator_loss(fake_logits):
    """What the decoder minimises: its reconstructions scored as real."""
    return -fake_logits.mean()


def discriminator_loss(real_logits, fake_logits):
    """Hinge loss: real patches pushed above 1, reconstructed ones below -1."""
    return 0.5 * (ops.relu(1.0 - real_logits).mean() + ops.relu(1.0 + fake_logits).mean())


class DiscriminatorLoss(nn.Cell):
    def __init__(self, discriminator):
        super().__init__()
        self.discriminator = discriminator

    def construct(self, real, fake):
        return discriminator_loss(self.discriminator(real), self.discriminator(fake))


class DiscriminatorStep:
    """``step(real, fake, lr)`` -> (hinge loss, gradient norm): one update of the discriminator on a batch of
    pictures and their reconstructions (inputs: gradients are taken for the discriminator's weights only, so
    nothing flows back to the tokenizer)."""

    def __init__(self, discriminator, optimizer, max_grad_norm=1.0, compiled=True):
        from .step import ClippedUpdate

        grad = ms.value_and_grad(DiscriminatorLoss(discriminator), None, optimizer.params)
        self._forward_backward = ms.jit(grad) if compiled else grad
        self._update = ClippedUpdate(optimizer, max_grad_norm, compiled)

    def step(self, real, fake, lr):
        loss, grads = self._forward_backward(Tensor(real, ms.float32), fake)
        norm = self._update(lr, 1.0, grads)
        return float(loss.asnumpy()), float(norm.asnumpy())
