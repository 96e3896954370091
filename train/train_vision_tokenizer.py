"""Train an Emu3 vision tokenizer (the causal 3-D VQ autoencoder) for image reconstruction.

From scratch (``--config_name CONFIG.json``, e.g. ``configs/tiny_world/vision_tokenizer.json``) or from a released
folder (``--model_name_or_path Emu3-VisionTokenizer``), on a folder of images or a JSON list of samples with an
"image" path (the T2I / VQA files of the prepare scripts):

    python train/train_vision_tokenizer.py --config_name configs/tiny_world/vision_tokenizer.json \\
        --train_data_path images/ --output_dir runs/vq --image_size 64 --max_steps 2000

Losses (``train/vq_training.py``): L1 (or L2) reconstruction + codebook + commitment, straight-through estimator;
the codebook is initialised from encoder latents when training from scratch and unused codes are restarted.
Optional, off by default: an adversarial term (``--gan_weight``, a PatchGAN discriminator with hinge losses as
VQGAN / MoVQ: ``train/vq_discriminator.py``) and a perceptual term (``--perceptual_weight``, LPIPS with VGG16 as
VQGAN / MoVQ: ``train/vq_perceptual.py``; its weights file is made once by ``python -m train.lpips_weights`` where
torchvision's VGG16 and the ``lpips`` package's weights can be downloaded).

Outputs follow the LLM trainer: ``checkpoint-{step}/`` (the model in the released layout + optimizer and trainer
state; an interrupted run resumes from the newest one when started again), and the final model in ``--output_dir``
(config.json, model.safetensors, preprocessor_config.json: loadable by ``Emu3VisionVQModel.from_pretrained`` and
every script that takes a ``--vq-path``), ``train_log.jsonl``, ``loss.png``, ``eval_results.json`` (PSNR, SSIM,
codebook usage on the evaluation images) and ``reconstructions.png`` (originals above their reconstructions).
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import emu3  # noqa: E402,F401  (before MindSpore loads: see emu3/_openmp.py)
import numpy as np  # noqa: E402

from train.arguments import _bool, add_adamw_arguments  # noqa: E402

LOGGED_LOSSES = ("loss", "reconstruction", "codebook", "commitment", "perceptual", "adversarial", "discriminator")
DISCRIMINATOR, DISCRIMINATOR_OPTIMIZER = "discriminator", "discriminator_optimizer"  # checkpoint name prefixes
ARCHITECTURE_FIELDS = ("codebook_size", "embed_dim", "z_channels", "ch", "ch_mult", "num_res_blocks",
                       "attn_resolutions", "temporal_downsample_factor")


def build_parser():
    p = argparse.ArgumentParser(prog="train/train_vision_tokenizer.py", allow_abbrev=False,
                                description="Train an Emu3 vision tokenizer for image reconstruction.")
    g = p.add_argument_group("model and data")
    start = g.add_mutually_exclusive_group(required=True)
    start.add_argument("--model_name_or_path", help="vision tokenizer folder to continue training from")
    start.add_argument("--config_name", help="config.json of a new tokenizer to train from scratch")
    g.add_argument("--train_data_path", "--data_path", dest="train_data_path", required=True,
                   help='folder of images, or a JSON list of samples with an "image" path')
    g.add_argument("--eval_data_path", default=None,
                   help="images to evaluate on at the end (default: the first --eval_images training images)")
    g.add_argument("--eval_images", type=int, default=64, help="images evaluated (default 64)")
    g.add_argument("--output_dir", required=True, help="run folder: checkpoint-{step}/, the final model, logs")
    g.add_argument("--output_init_scale", type=float, default=0.1,
                   help="from scratch: the decoder's last convolution starts at this fraction of its kaiming "
                        "initialisation (default 0.1; 1 = the released architecture's init, whose first pictures "
                        "have pixel values of std ~4 that the first tens of steps only shrink)")
    g.add_argument("--image_size", type=int, default=256,
                   help="training resolution: images are resized and centre-cropped to this square (multiple of 8)")

    g = p.add_argument_group("objective")
    g.add_argument("--reconstruction_loss", choices=("l1", "l2"), default="l1")
    g.add_argument("--codebook_weight", type=float, default=1.0)
    g.add_argument("--commitment_weight", type=float, default=0.25)
    g.add_argument("--codebook_restart_steps", type=int, default=50,
                   help="every N steps, codes unused since the last check move onto current latents, except in the "
                   "last quarter of training (0 = off)")
    g.add_argument("--codebook_seeding", choices=("random", "kmeans++"), default="random",
                   help="which latents the initial and restarted codes are drawn from: random (default) draws them "
                   "uniformly (on mostly-background pictures, mostly background latents); kmeans++ favours latents "
                   "far from every code already there")
    _bool(g, "--codebook_init_from_data", None,
          "initialise the codebook from encoder latents of the first batch (default: True from scratch, False "
          "when continuing a trained tokenizer)")
    g.add_argument("--perceptual_weight", type=float, default=0.0,
                   help="weight of the LPIPS (VGG16) distance between pictures and reconstructions, as VQGAN's "
                   "perceptual_weight (default 0 = off); needs --perceptual_weights")
    g.add_argument("--perceptual_weights", default=None, metavar="FILE.safetensors",
                   help="VGG16 + LPIPS v0.1 weights, made once by `python -m train.lpips_weights --vgg "
                   "vgg16-397923af.pth --lpips lpips/weights/v0.1/vgg.pth --out FILE.safetensors`")
    g.add_argument("--gan_weight", type=float, default=0.0,
                   help="weight of the adversarial (generator) loss of a PatchGAN discriminator trained alongside "
                   "(hinge losses, as VQGAN; default 0 = off, no discriminator)")
    g.add_argument("--gan_start_step", type=int, default=0,
                   help="steps trained without the adversarial term before the discriminator and the term start "
                   "(VQGAN's disc_start: the decoder learns to reconstruct first; default 0)")
    g.add_argument("--discriminator_layers", type=int, default=3,
                   help="stride-2 layers of the discriminator (default 3: one score per 70x70-pixel patch)")
    g.add_argument("--discriminator_channels", type=int, default=64, help="its first layer's width (default 64)")

    g = p.add_argument_group("optimisation")
    add_adamw_arguments(g, learning_rate=1e-4, schedule="constant")
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="global-norm clipping (0 = off)")
    g.add_argument("--num_train_epochs", type=float, default=1.0)
    g.add_argument("--max_steps", type=int, default=-1, help="optimizer steps; > 0 overrides --num_train_epochs")
    g.add_argument("--per_device_train_batch_size", type=int, default=8)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--mode", type=int, choices=(0, 1), default=0, help="0: compiled train step (graph), 1: pynative")

    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--save_steps", type=int, default=500)
    g.add_argument("--save_total_limit", type=int, default=None, help="keep only the newest N checkpoints")
    g.add_argument("--logging_steps", type=int, default=10)
    g.add_argument("--resume", default=None,
                   help="checkpoint folder to resume from (default: the newest checkpoint in --output_dir)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args, unknown = p.parse_known_args(argv)
    if unknown:
        p.error(f"unknown arguments: {' '.join(unknown)} (see --help)")
    if args.image_size < 8 or args.image_size % 8:
        p.error(f"--image_size must be a positive multiple of 8 (the tokenizer's spatial factor), "
                f"got {args.image_size}")
    for name in ("per_device_train_batch_size", "logging_steps", "save_steps", "eval_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive")
    if args.learning_rate <= 0:
        p.error("--learning_rate must be positive")
    if args.output_init_scale < 0:
        p.error(f"--output_init_scale must be >= 0, got {args.output_init_scale}")
    if args.perceptual_weight < 0:
        p.error(f"--perceptual_weight must be >= 0, got {args.perceptual_weight}")
    if args.perceptual_weight == 0 and args.perceptual_weights:
        p.error("--perceptual_weights sets the perceptual term, which is off: add --perceptual_weight (e.g. 1.0)")
    if args.perceptual_weight > 0:
        from train.lpips_weights import MIN_IMAGE_SIZE, check_weights_file

        if not args.perceptual_weights:
            p.error("--perceptual_weight needs --perceptual_weights FILE.safetensors (VGG16 + LPIPS weights, made by "
                    "`python -m train.lpips_weights`; see its --help)")
        if args.image_size < MIN_IMAGE_SIZE:
            p.error(f"--image_size {args.image_size} is too small for VGG16's four poolings (at least "
                    f"{MIN_IMAGE_SIZE})")
        try:
            check_weights_file(args.perceptual_weights)
        except ValueError as e:
            p.error(str(e))
    if args.gan_weight < 0 or args.gan_start_step < 0:
        p.error("--gan_weight and --gan_start_step must be >= 0")
    adversarial_flags = [f"--{k}" for k in ("gan_start_step", "discriminator_layers", "discriminator_channels")
                         if getattr(args, k) != p.get_default(k)]
    if args.gan_weight == 0 and adversarial_flags:
        p.error(f"{', '.join(adversarial_flags)} set the adversarial term, which is off: add --gan_weight (e.g. 0.1)")
    if args.gan_weight > 0:
        from train.vq_discriminator import patch_grid

        if args.discriminator_layers < 1 or args.discriminator_channels < 1:
            p.error("--discriminator_layers and --discriminator_channels must be positive")
        if patch_grid(args.image_size, args.discriminator_layers) < 1:
            p.error(f"--image_size {args.image_size} is too small for a discriminator of "
                    f"{args.discriminator_layers} layers (it needs at least {3 * 2 ** args.discriminator_layers} "
                    "pixels): lower --discriminator_layers")
    return args


class VisionTokenizerTrainer:
    def __init__(self, args, log=print):
        from emu3.device import select_device

        self.args, self.log = args, log
        select_device()
        self._load_data()
        self._load_config()
        os.makedirs(args.output_dir, exist_ok=True)
        self.resume_path = self._find_resume()
        self._build()

    # ---- setup ---------------------------------------------------------------------------------------------------
    def _load_data(self):
        from train.image_folder import ImageDataError, image_paths, readable

        a = self.args
        try:
            paths, bad = readable(image_paths(a.train_data_path))
            eval_paths = readable(image_paths(a.eval_data_path))[0] if a.eval_data_path else paths
        except ImageDataError as e:
            raise SystemExit(f"error: {e}") from None
        for path, reason in bad[:5]:
            self.log(f"skipping unreadable image {path}: {reason}")
        if len(bad) > 5:
            self.log(f"... and {len(bad) - 5} more unreadable images")
        if len(paths) < a.per_device_train_batch_size:
            raise SystemExit(f"error: {len(paths)} usable training images, fewer than one batch of "
                             f"{a.per_device_train_batch_size}: lower --per_device_train_batch_size or add images")
        self.paths, self.eval_paths = paths, eval_paths[:a.eval_images]
        self.steps_per_epoch = len(paths) // a.per_device_train_batch_size  # the last partial batch is dropped
        self.total_steps = a.max_steps if a.max_steps > 0 else \
            max(1, math.ceil(a.num_train_epochs * self.steps_per_epoch))

    def _load_config(self):
        from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQImageProcessor

        a = self.args
        source = a.config_name or a.model_name_or_path
        try:
            self.config = Emu3VisionVQConfig.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot read the tokenizer config of {source!r}: {e}") from None
        if a.model_name_or_path and os.path.isfile(os.path.join(a.model_name_or_path, "preprocessor_config.json")):
            self.processor = Emu3VisionVQImageProcessor.from_pretrained(a.model_name_or_path)
        else:  # a new tokenizer works at the resolution it was trained at
            self.processor = Emu3VisionVQImageProcessor(min_pixels=a.image_size ** 2, max_pixels=a.image_size ** 2)

    def _find_resume(self):
        from train.checkpointing import check_resumable, checkpoints, remove_stale_temporaries

        a = self.args
        remove_stale_temporaries(a.output_dir)
        path = a.resume or (checkpoints(a.output_dir)[-1][1] if checkpoints(a.output_dir) else None)
        if path:
            try:
                check_resumable(path, self.config, ARCHITECTURE_FIELDS)
            except (OSError, ValueError) as e:
                raise SystemExit(f"error: {e}") from None
        return path

    def _build(self):
        import mindspore as ms

        from emu3.tokenizer import Emu3VisionVQModel
        from train.optim import AdamW
        from train.schedules import learning_rates
        from train.vq_discriminator import DiscriminatorStep
        from train.vq_training import CodebookKeeper, VQTrainingLoss, VQTrainStep

        a = self.args
        ms.set_seed(a.seed)
        weights = self.resume_path or a.model_name_or_path
        self.model = Emu3VisionVQModel.from_pretrained(weights) if weights else Emu3VisionVQModel(self.config)
        if not weights and a.output_init_scale != 1:  # a fresh start (before the train step is compiled)
            conv_out = self.model.decoder.conv_out
            conv_out.weight.set_data(conv_out.weight.value() * a.output_init_scale)
        self.model.set_train(True)
        self.optimizer = AdamW(self.model.trainable_params(), a.weight_decay, (a.adam_beta1, a.adam_beta2),
                               a.adam_epsilon)
        self.discriminator = self._build_discriminator() if a.gan_weight > 0 else None
        perceptual = None
        if a.perceptual_weight > 0:
            from train.vq_perceptual import load_lpips

            perceptual = load_lpips(a.perceptual_weights)
        self.step_fn = VQTrainStep(VQTrainingLoss(self.model, a.codebook_weight, a.commitment_weight,
                                                  a.reconstruction_loss, self.discriminator, perceptual,
                                                  a.perceptual_weight),
                                   self.optimizer, a.max_grad_norm, compiled=a.mode == 0)
        if self.discriminator is not None:
            self.d_step = DiscriminatorStep(self.discriminator, self.d_optimizer, a.max_grad_norm, a.mode == 0)
        self.keeper = CodebookKeeper(self.model.quantize.embedding.weight, a.codebook_restart_steps, a.seed,
                                     a.codebook_seeding)
        self.lrs = learning_rates(a.learning_rate, a.lr_scheduler_type, a.warmup_steps, self.total_steps,
                                  a.min_learning_rate)
        self.state = {"global_step": 0, "epoch": 0, "batches_in_epoch": 0}
        if self.resume_path:
            self._restore()
        self.log(f"vision tokenizer {weights or a.config_name}: "
                 f"{sum(p.size for p in self.model.trainable_params()):,} parameters, {self.config.codebook_size} "
                 f"codes; {len(self.paths)} images at {a.image_size}x{a.image_size}, batch "
                 f"{a.per_device_train_batch_size}, {self.steps_per_epoch} steps per epoch, {self.total_steps} steps, "
                 f"{'graph' if a.mode == 0 else 'pynative'} mode")

    def _build_discriminator(self):
        from train.optim import AdamW
        from train.vq_discriminator import PatchDiscriminator

        a = self.args
        discriminator = PatchDiscriminator(3, a.discriminator_channels, a.discriminator_layers, seed=a.seed)
        discriminator.set_train(True)
        # VQGAN's betas; no weight decay.
        self.d_optimizer = AdamW(discriminator.trainable_params(), 0.0, (0.5, 0.9), a.adam_epsilon)
        return discriminator

    def _training_tensors(self):
        """{name: tensor} a checkpoint keeps besides the model: the optimizer's state and, with the adversarial
        term, the discriminator's weights (batch-norm statistics included) and its optimizer's state."""
        out = dict(self.optimizer.state())
        if self.discriminator is not None:
            out.update({f"{DISCRIMINATOR}.{k}": v for k, v in self.discriminator.parameters_and_names()})
            out.update({f"{DISCRIMINATOR_OPTIMIZER}.{k}": v for k, v in self.d_optimizer.state().items()})
        return out

    def _restore(self):
        from mindspore import Tensor

        from train.checkpointing import load_resume_state

        try:
            state, tensors = load_resume_state(self.resume_path, list(self._training_tensors()))
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: {e} (a vision tokenizer's checkpoint holds its discriminator when --gan_weight "
                             "> 0: resume with the same --gan_weight setting)") from None
        for name, param in self._training_tensors().items():
            param.set_data(Tensor(tensors[name]).astype(param.dtype))
        self.state = {k: state[k] for k in ("global_step", "epoch", "batches_in_epoch")}
        self.keeper.usage[:] = np.asarray(state["codebook_usage"], np.int64)
        self.log(f"resumed from {self.resume_path}: step {self.state['global_step']}")

    # ---- the loop --------------------------------------------------------------------------------------------------
    def _epoch_order(self, epoch):
        return np.random.default_rng((self.args.seed, epoch)).permutation(len(self.paths))

    def train(self):
        from train.image_folder import load_batch
        from train.trainer import trim_log

        a = self.args
        trim_log(a.output_dir, self.state["global_step"])
        batch = a.per_device_train_batch_size
        init = (a.codebook_init_from_data if a.codebook_init_from_data is not None else not a.model_name_or_path)
        window = {"n": 0, "start": time.time()}
        while self.state["global_step"] < self.total_steps:
            order = self._epoch_order(self.state["epoch"])
            b = self.state["batches_in_epoch"]
            if b >= self.steps_per_epoch:
                self.state.update(epoch=self.state["epoch"] + 1, batches_in_epoch=0)
                continue
            pixels = load_batch([self.paths[i] for i in order[b * batch:(b + 1) * batch]], a.image_size)
            step = self.state["global_step"]
            if step == 0 and init:
                self.keeper.initialise(self._latents(pixels))
            adversarial = self.discriminator is not None and step >= a.gan_start_step
            losses, codes, latents, norm, recon = self.step_fn.step(pixels, self.lrs[step],
                                                                    a.gan_weight if adversarial else 0.0)
            if adversarial:  # the discriminator's update on this batch and its reconstructions
                losses["discriminator"] = self.d_step.step(pixels, recon, self.lrs[step])[0]
            self.state.update(global_step=step + 1, batches_in_epoch=b + 1)
            # No restarts in the last quarter: the decoder gets to fit the codebook it will be used with.
            restarted = self.keeper.observe(codes, latents, step + 1, restart=step + 1 <= 0.75 * self.total_steps)
            for k, v in losses.items():
                window[k] = window.get(k, 0.0) + v
                window[f"n_{k}"] = window.get(f"n_{k}", 0) + 1  # the adversarial terms start mid-window
            window["n"] += 1
            window["restarted"] = window.get("restarted", 0) + restarted
            if not all(math.isfinite(v) for v in losses.values()):
                raise SystemExit(f"error: the loss became {losses['loss']} at step {step + 1}; lower --learning_rate "
                                 "(the run can resume from its last checkpoint)")
            done = self.state["global_step"]
            if done % a.logging_steps == 0 or done == self.total_steps:
                self._log(window, norm, codes)
                window = {"n": 0, "start": time.time()}
            if done % a.save_steps == 0 and done < self.total_steps:
                self.save_checkpoint()
        self.save_final()

    def _latents(self, pixels):
        import mindspore as ms

        b, c, h, w = pixels.shape
        return self.model.encode_latents(ms.Tensor(pixels).reshape(b, 1, c, h, w),
                                         self.config.temporal_downsample_factor)

    def _log(self, window, norm, codes):
        from train.trainer import append_log
        from train.vq_training import codebook_usage

        n = window["n"]
        elapsed = max(time.time() - window["start"], 1e-9)
        usage, perplexity = codebook_usage(codes.asnumpy(), self.config.codebook_size)
        record = {"step": self.state["global_step"], "epoch": round(self.state["epoch"] + self.state[
                  "batches_in_epoch"] / self.steps_per_epoch, 4)}
        record.update({k: window[k] / window[f"n_{k}"] for k in LOGGED_LOSSES if k in window})
        record.update(lr=self.lrs[self.state["global_step"] - 1], grad_norm=norm, batch_code_usage=usage,
                      batch_perplexity=perplexity, codes_restarted=window.get("restarted", 0),
                      images_per_s=n * self.args.per_device_train_batch_size / elapsed)
        append_log(self.args.output_dir, record)
        extra = "" if "perceptual" not in record else f", perceptual {record['perceptual']:.4f}"
        if "adversarial" in record:
            extra += f", adversarial {record['adversarial']:.4f}, discriminator {record['discriminator']:.4f}"
        self.log(f"step {record['step']}/{self.total_steps} loss {record['loss']:.4f} (rec "
                 f"{record['reconstruction']:.4f}, codebook {record['codebook']:.4f}{extra}) "
                 f"lr {record['lr']:.3g} codes used {usage:.0%} perplexity {perplexity:.1f} "
                 f"restarted {record['codes_restarted']} {record['images_per_s']:.1f} images/s")

    # ---- saving ----------------------------------------------------------------------------------------------------
    def _weights(self):
        return dict(self.model.parameters_and_names())

    def save_checkpoint(self):
        from train.checkpointing import save_checkpoint
        from train.trainer import plot_losses

        a = self.args
        state = dict(self.state, total_steps=self.total_steps, seed=a.seed,
                     codebook_usage=self.keeper.usage.tolist())
        path = save_checkpoint(a.output_dir, self.state["global_step"], self._weights(), self.config,
                               self.processor, self._training_tensors(), state, a.save_total_limit)
        plot_losses(a.output_dir)
        self.log(f"saved {path}")

    def save_final(self):
        from train.checkpointing import write_model
        from train.trainer import plot_losses

        a = self.args
        write_model(a.output_dir, self._weights(), self.config, self.processor)
        plot_losses(a.output_dir)
        results = self.evaluate()
        self.log(f"final tokenizer in {a.output_dir}: PSNR {results['psnr']:.2f} dB, SSIM {results['ssim']:.3f}, "
                 f"{results['codebook_usage']:.0%} of the codebook used on {results['images']} evaluation images "
                 f"(reconstructions.png, eval_results.json)")

    def evaluate(self):
        """PSNR / SSIM (uint8 images, as the project's reconstruction metrics), codebook usage; writes
        eval_results.json and reconstructions.png."""
        import mindspore as ms

        from emu3 import metrics
        from emu3.atomic import atomic_path, atomic_write_json
        from train.image_folder import load_batch, to_uint8
        from train.vq_training import codebook_usage

        a = self.args
        self.model.set_train(False)
        originals, recons, codes = [], [], []
        for start in range(0, len(self.eval_paths), a.per_device_train_batch_size):
            pixels = load_batch(self.eval_paths[start:start + a.per_device_train_batch_size], a.image_size)
            c = self.model.encode(ms.Tensor(pixels))
            recons.extend(to_uint8(r) for r in self.model.decode(c).asnumpy())
            originals.extend(to_uint8(p) for p in pixels)
            codes.append(c.asnumpy().reshape(-1))
        self.model.set_train(True)
        usage, perplexity = codebook_usage(np.concatenate(codes), self.config.codebook_size)
        results = {"images": len(originals), "image_size": a.image_size, "step": self.state["global_step"],
                   "psnr": float(np.mean([metrics.psnr(o, r) for o, r in zip(originals, recons)])),
                   "ssim": float(np.mean([metrics.ssim(o, r) for o, r in zip(originals, recons)])),
                   "codebook_usage": usage, "codebook_perplexity": perplexity}
        atomic_write_json(os.path.join(a.output_dir, "eval_results.json"), results, indent=2)
        shown = min(8, len(originals))
        grid = np.concatenate([np.concatenate(originals[:shown], axis=1), np.concatenate(recons[:shown], axis=1)])
        from PIL import Image

        with atomic_path(os.path.join(a.output_dir, "reconstructions.png")) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        return results


def main(argv=None):
    trainer = VisionTokenizerTrainer(parse_args(argv))
    trainer.train()


if __name__ == "__main__":
    main()
