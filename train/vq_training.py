"""Training the vision tokenizer for reconstruction (what the original release never published).

The model stays the plain ``Emu3VisionVQModel``; training wraps it from outside: encode to continuous latents,
quantise to the nearest codebook entry, and let gradients pass the quantiser with the straight-through estimator
(z + sg(e - z)), as VQ-VAE / MoVQ:

    loss = |x - decode(z_q)|  +  codebook_weight * |sg(z) - e|^2  +  commitment_weight * |z - sg(e)|^2

Images are single frames: encoded as a clip of identical frames (the tokenizer's image path) and decoded to frame 0.
Two codebook practices keep every code in use on a small dataset (they are host-side and cheap): the codebook is
initialised from encoder latents of the first batch, and codes unused for ``restart_every`` steps are moved onto
latents of the current batch. Which latents: ``seeding="random"`` (the default) draws them uniformly;
"kmeans++" draws each with probability proportional to its squared distance to the nearest code already there, as
k-means++ seeds its centres. Uniform draws follow the data, and in pictures that are mostly plain background most
land on near-identical background latents: the tiny world's tokenizer spends 154 distinct codes on its plain
background cells (6.4 bits per cell that the LLM must learn and that say nothing), 107 with k-means++ seeding. The
LLM's loss is then lower and its drawings' colour better, but its shapes were not (two seeds each; docs/tiny-world.md,
"Tried"), so the default stays.
"""

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

from .step import ClippedUpdate
from .vq_discriminator import generator_loss

RECONSTRUCTION_LOSSES = ("l1", "l2")
SEEDINGS = ("random", "kmeans++")  # the trainers' --codebook_seeding choices


class VQTrainingLoss(nn.Cell):
    """(pixels (B, 3, H, W) in [-1, 1], adversarial weight) -> (total loss, (reconstruction, codebook, commitment,
    codes, latents, adversarial, perceptual, reconstructed pixels)).

    With a ``discriminator`` (``train/vq_discriminator.py``) and ``gan_weight`` > 0 (a Python number: compiled
    graphs take it as a constant, so the steps before the adversarial term starts run without the discriminator)
    the total adds ``gan_weight`` x its generator loss; otherwise the adversarial loss is 0. With a ``perceptual``
    cell (``train/vq_perceptual.py``: LPIPS, frozen) the total adds ``perceptual_weight`` x its mean distance between
    the pictures and their reconstructions; otherwise the perceptual loss is 0.
    """

    def __init__(self, model, codebook_weight=1.0, commitment_weight=0.25, reconstruction="l1", discriminator=None,
                 perceptual=None, perceptual_weight=0.0):
        super().__init__()
        if reconstruction not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"reconstruction loss must be one of {RECONSTRUCTION_LOSSES}, got {reconstruction!r}")
        self.model = model
        self.codebook_weight = float(codebook_weight)
        self.commitment_weight = float(commitment_weight)
        self.l1 = reconstruction == "l1"
        self.frames = model.config.temporal_downsample_factor
        self.discriminator = discriminator
        self.perceptual = perceptual
        self.perceptual_weight = float(perceptual_weight)

    def construct(self, pixels, gan_weight=0.0):
        b, c, h, w = pixels.shape
        z = self.model.encode_latents(pixels.reshape(b, 1, c, h, w), self.frames).astype(ms.float32)  # (B,1,C,h,w)
        codes = self.model.quantize(z)  # nearest entries: no gradient flows through the argmin
        e = self.model.quantize.lookup(codes).reshape(z.shape[0], z.shape[1], z.shape[3], z.shape[4], z.shape[2])
        e = e.transpose(0, 1, 4, 2, 3)
        codebook = ((e - ops.stop_gradient(z)) ** 2).mean()
        commitment = ((z - ops.stop_gradient(e)) ** 2).mean()
        z_q = z + ops.stop_gradient(e - z)  # straight-through: forward e, backward identity to z
        recon = self.model.decode_latents(z_q, True)[:, 0].astype(ms.float32)
        diff = recon - pixels.astype(ms.float32)
        reconstruction = ops.abs(diff).mean() if self.l1 else (diff ** 2).mean()
        total = reconstruction + self.codebook_weight * codebook + self.commitment_weight * commitment
        perceptual = ops.zeros((), ms.float32)
        if self.perceptual is not None:
            perceptual = self.perceptual(recon, pixels).mean()
            total = total + self.perceptual_weight * perceptual
        adversarial = ops.zeros((), ms.float32)
        if self.discriminator is not None and gan_weight > 0:
            adversarial = generator_loss(self.discriminator(recon))
            total = total + gan_weight * adversarial
        return total, (reconstruction, codebook, commitment, codes, z, adversarial, perceptual, recon)


class CodebookKeeper:
    """Host-side codebook upkeep: data-dependent initialisation and restart of codes that went unused."""

    def __init__(self, codebook, restart_every=50, seed=0, seeding="random"):
        if seeding not in SEEDINGS:
            raise ValueError(f"codebook seeding must be one of {SEEDINGS}, got {seeding!r}")
        self.codebook = codebook  # the Parameter (K, C)
        self.restart_every = int(restart_every)
        self.usage = np.zeros(codebook.shape[0], np.int64)
        self.seed = seed
        self.seeding = seeding

    def _draw(self, rows, count, rng, codes=None):
        """``count`` latent rows for new codes (``codes``: the codes that stay, which k-means++ draws away from)."""
        if self.seeding == "random":
            return rows[rng.choice(len(rows), count, replace=len(rows) < count)]
        return kmeans_plus_plus(rows, count, rng, codes)

    def _write(self, table):
        # In place (Assign): a compiled train step keeps reading the buffer it was built with, so set_data would
        # change the host copy only and the graph would go on quantising with the old codebook.
        ops.assign(self.codebook, Tensor(np.asarray(table, np.float32)))

    def _latent_rows(self, latents):
        z = latents.asnumpy() if isinstance(latents, Tensor) else np.asarray(latents)
        return z.transpose(0, 1, 3, 4, 2).reshape(-1, z.shape[2])  # (B*t*h*w, C), as the quantiser flattens

    def initialise(self, latents):
        """Codebook := random latents of a batch (plus a little noise so repeats differ)."""
        rows = self._latent_rows(latents)
        k = self.codebook.shape[0]
        rng = np.random.default_rng((self.seed, 0))
        picked = self._draw(rows, k, rng)
        picked = picked + rng.normal(0, 0.01 * (rows.std() + 1e-6), picked.shape)
        self._write(picked)

    def observe(self, codes, latents, step, restart=True):
        """Count code usage; every ``restart_every`` steps move the unused codes onto current latents (unless
        ``restart`` is False). Returns the number of codes restarted."""
        self.usage += np.bincount(codes.asnumpy().reshape(-1), minlength=len(self.usage))
        if self.restart_every <= 0 or step % self.restart_every or not restart:
            return 0
        dead = np.flatnonzero(self.usage == 0)
        self.usage[:] = 0
        if not len(dead):
            return 0
        rows = self._latent_rows(latents)
        table = self.codebook.asnumpy().copy()
        rng = np.random.default_rng((self.seed, step))  # per step: a resumed run restarts the same codes
        table[dead] = self._draw(rows, len(dead), rng, np.delete(table, dead, axis=0))
        self._write(table)
        return len(dead)


def kmeans_plus_plus(rows, count, rng, centres=None):
    """``count`` of ``rows`` (N, C), each drawn with probability proportional to its squared distance to the nearest
    of ``centres`` and of the rows drawn before it (k-means++ seeding; uniform while every distance is zero)."""
    rows = np.asarray(rows, np.float64)
    nearest = np.full(len(rows), np.inf)
    if centres is not None and len(centres):
        nearest = _nearest_squared_distances(rows, np.asarray(centres, np.float64))
    picked = []
    for _ in range(count):
        finite = np.isfinite(nearest).all() and nearest.sum() > 0
        weights = nearest / nearest.sum() if finite else np.full(len(rows), 1.0 / len(rows))
        i = rng.choice(len(rows), p=weights)
        picked.append(rows[i])
        nearest = np.minimum(nearest, ((rows - rows[i]) ** 2).sum(axis=-1))
    return np.asarray(picked)


def _nearest_squared_distances(rows, centres, block=1024):
    """Squared distance of each row to its nearest centre, ``block`` rows at a time (a released-size codebook of
    32,768 codes against a batch's latents would otherwise be a multi-GB array)."""
    centre_norms = (centres ** 2).sum(axis=1)
    out = np.empty(len(rows))
    for start in range(0, len(rows), block):
        part = rows[start:start + block]
        d2 = (part ** 2).sum(axis=1)[:, None] - 2.0 * part @ centres.T + centre_norms[None]
        out[start:start + block] = np.maximum(d2.min(axis=1), 0.0)
    return out


def codebook_usage(codes, codebook_size):
    """Fraction of the codebook used by ``codes`` and the perplexity of their distribution."""
    counts = np.bincount(np.asarray(codes).reshape(-1), minlength=codebook_size).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    nz = p[p > 0]
    return float((counts > 0).mean()), float(np.exp(-(nz * np.log(nz)).sum()))


class VQTrainStep:
    """``step(pixels, lr, gan_weight=0)`` -> (losses {loss, reconstruction, codebook, commitment[, adversarial when
    gan_weight > 0][, perceptual with the perceptual term]}, codes, latents, grad_norm, reconstructed pixels).

    Compiled as the LLM's TrainStep: forward + backward (returning the codes and latents the CodebookKeeper
    needs), then clipping + AdamW (``ClippedUpdate``). ``compiled=False`` runs both op by op with the same numbers.
    """

    def __init__(self, loss, optimizer, max_grad_norm=1.0, compiled=True):
        self.optimizer = optimizer
        self.adversarial = loss.discriminator is not None
        self.perceptual = loss.perceptual is not None
        self._grad = ms.value_and_grad(loss, None, optimizer.params, has_aux=True)
        self._forward_backward = ms.jit(self._grads) if compiled else self._grads
        # No operator fusion for the update: on the CPU, AdamW's in-place kernel makes it one kernel per parameter
        # (train/optim.py; the tiny world's tokenizer, 285 parameter tensors: 72 -> 24 ms per update, the same
        # bits). Unfused elsewhere: ~4,000 small kernels, 0.11-0.17 s of a 1.5 s step where fusion took 0.07 s for
        # ~17 s more of first compile, and changed the tiny world's numbers.
        self._update = ClippedUpdate(optimizer, max_grad_norm, compiled)

    def _grads(self, pixels, gan_weight):
        (total, aux), grads = self._grad(pixels, gan_weight)
        return (total,) + tuple(aux) + tuple(grads)

    def step(self, pixels, lr, gan_weight=0.0):
        total, reconstruction, codebook, commitment, codes, latents, adversarial, perceptual, recon, *grads = \
            self._forward_backward(Tensor(pixels, ms.float32), float(gan_weight))
        norm = self._update(lr, 1.0, grads)
        losses = {"loss": float(total.asnumpy()), "reconstruction": float(reconstruction.asnumpy()),
                  "codebook": float(codebook.asnumpy()), "commitment": float(commitment.asnumpy())}
        if self.adversarial and gan_weight > 0:  # only while the term is part of the objective
            losses["adversarial"] = float(adversarial.asnumpy())
        if self.perceptual:
            losses["perceptual"] = float(perceptual.asnumpy())
        return losses, codes, latents, float(norm.asnumpy()), recon
