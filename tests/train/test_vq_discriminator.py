"""The vision tokenizer's optional adversarial term: the patch discriminator's geometry, the hinge losses, and a
discriminator update that learns to tell pictures from reconstructions without touching the tokenizer."""

import numpy as np
import pytest

import mindspore as ms

from train.optim import AdamW
from train.vq_discriminator import (DiscriminatorStep, PatchDiscriminator, discriminator_loss, generator_loss,
                                    patch_grid)


@pytest.mark.parametrize("size, layers", [(32, 2), (64, 3), (48, 1)])
def test_one_score_per_patch_on_the_predicted_grid(size, layers):
    d = PatchDiscriminator(3, 8, layers)
    d.set_train(False)
    out = d(ms.Tensor(np.zeros((2, 3, size, size), np.float32)))
    grid = patch_grid(size, layers)
    assert out.shape == (2, 1, grid, grid) and grid >= 1


def test_the_same_seed_builds_the_same_discriminator():
    a, b, c = PatchDiscriminator(3, 8, 2, seed=1), PatchDiscriminator(3, 8, 2, seed=1), PatchDiscriminator(3, 8, 2)
    weights = [{n: p.asnumpy() for n, p in d.parameters_and_names()} for d in (a, b, c)]
    assert all(np.array_equal(weights[0][n], weights[1][n]) for n in weights[0])
    assert not np.array_equal(weights[0]["layers.0.weight"], weights[2]["layers.0.weight"])
    with pytest.raises(ValueError, match="at least one layer"):
        PatchDiscriminator(3, 8, 0)


def test_hinge_losses_match_their_definition():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(2, 1, 3, 3)).astype(np.float32), rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    expected = 0.5 * (np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean())
    assert float(discriminator_loss(ms.Tensor(real), ms.Tensor(fake))) == pytest.approx(expected, rel=1e-6)
    assert float(generator_loss(ms.Tensor(fake))) == pytest.approx(-fake.mean(), rel=1e-6)
    # Confident and right: no loss left (the hinge stops pushing past the margin).
    assert float(discriminator_loss(ms.Tensor(np.full((1, 1, 2, 2), 3.0, np.float32)),
                                    ms.Tensor(np.full((1, 1, 2, 2), -3.0, np.float32)))) == 0.0


@pytest.mark.parametrize("compiled", [False, True])
def test_updates_learn_to_tell_pictures_from_reconstructions(compiled):
    rng = np.random.default_rng(0)
    real = np.zeros((4, 3, 16, 16), np.float32)
    real[:, :, 4:12, 4:12] = 1.0  # sharp squares
    fake = ms.Tensor((real * 0.5 + rng.normal(0, 0.3, real.shape)).astype(np.float32))  # faint, noisy copies
    d = PatchDiscriminator(3, 8, 1, seed=0)
    d.set_train(True)
    step = DiscriminatorStep(d, AdamW(d.trainable_params(), 0.0, (0.5, 0.9)), compiled=compiled)
    losses = [step.step(real, fake, 2e-3)[0] for _ in range(30)]
    assert losses[0] == pytest.approx(1.0, abs=0.1)  # untrained: scores near 0 on both
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    d.set_train(False)
    real_scores, fake_scores = d(ms.Tensor(real)).asnumpy(), d(fake).asnumpy()
    assert real_scores.mean() > fake_scores.mean()
