#!/usr/bin/env python
"""Reconstruct an image or a video (a folder of frames) through the Emu3 vision tokenizer.

Saves the reconstruction next to the (resized) input and prints PSNR/SSIM of reconstruction vs input and the
time taken. Without --model-path it builds a model with random weights from --config and says so: that checks the
pipeline end to end, not reconstruction quality.
"""

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu3  # noqa: E402,F401  (before MindSpore loads: see emu3/_openmp.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "vision_tokenizer", "small.json")
DEFAULT_PREPROCESSOR = os.path.join(REPO, "configs", "vision_tokenizer", "preprocessor_config.json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", help="folder of Emu3-VisionTokenizer (config.json, model.safetensors, "
                                        "preprocessor_config.json); omit to use random weights")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="model config for random weights (no --model-path); "
                                                         "a preprocessor_config.json beside it is used too")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--image", help="an image file (default: a generated test image)")
    source.add_argument("--video-dir", help="a folder of frames (sorted by name; a multiple of 4 frames)")
    p.add_argument("--output-dir", default="outputs/reconstruction")
    p.add_argument("--mode", choices=("pynative", "graph"), default="pynative")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                   help="default: bf16 on Ascend, fp32 on CPU")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def test_image(size=512, seed=0):
    """A smooth synthetic picture (gradients, discs, stripes): something with structure to reconstruct."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * np.pi * x * y)], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.15, 0.85, 2).tolist() + [rng.uniform(0.05, 0.15)]
        image[(y - cy) ** 2 + (x - cx) ** 2 < r ** 2] = rng.uniform(0, 1, 3)
    return Image.fromarray((255 * image).astype(np.uint8))


# ---- checks shared by the scripts: run before any model is loaded (real checkpoints take minutes to load) ----
def check_folder(flag, path):
    if path and not os.path.isdir(path):
        raise SystemExit(f"error: {flag} {path!r} is not a folder")


def check_output_dir(flag, path):
    """The folder exists or can be created, and is writable."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise SystemExit(f"error: {flag} {path!r} is a file, not a folder; pass a folder for the results")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.access(parent, os.W_OK):
        raise SystemExit(f"error: {flag} {path!r} is not writable")


def check_dtype(dtype):
    """bf16 is refused up front on CPU (one sentence, not a compiler trace)."""
    if dtype == "bf16":
        from emu3.device import is_ascend

        if not is_ascend():
            raise SystemExit("error: --dtype bf16 needs an Ascend device (MindSpore's CPU kernels have no bf16); "
                             "use fp32 (the CPU default) or fp16")


def open_image(path, flag="--image"):
    """An RGB PIL image, or a one-line error naming the file."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: {flag} {path!r} does not exist")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise SystemExit(f"error: {flag} {path!r} is not a readable image ({e})") from None


def load_frames(args):
    if args.video_dir:
        if not os.path.isdir(args.video_dir):
            raise SystemExit(f"error: --video-dir {args.video_dir!r} is not a folder")
        names = sorted(n for n in os.listdir(args.video_dir) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise SystemExit(f"error: no image files ({', '.join(IMAGE_SUFFIXES)}) in {args.video_dir!r}")
        return [open_image(os.path.join(args.video_dir, n), "--video-dir frame") for n in names], True
    if args.image:
        return [open_image(args.image)], False
    return [test_image(seed=args.seed)], False


def load_vision_tokenizer(model_path=None, config=DEFAULT_CONFIG, dtype=None):
    """(model, image processor) from a checkpoint folder, or with RANDOM weights from ``config`` (and says so).

    The image processor comes from the folder's preprocessor_config.json (random weights: the one beside
    ``config``), else the released one. Callers seed MindSpore first for reproducible random weights.
    """
    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQImageProcessor, Emu3VisionVQModel

    if model_path:
        model = Emu3VisionVQModel.from_pretrained(model_path, dtype=dtype)
        folder = model_path
        print(f"vision tokenizer: {model_path}")
    else:
        model = Emu3VisionVQModel.from_config(Emu3VisionVQConfig.from_pretrained(config), dtype=dtype)
        folder = os.path.dirname(os.path.abspath(config))
        print(f"NOTE: no vision-tokenizer checkpoint: RANDOM weights generated from {os.path.relpath(config)} — this "
              "exercises the pipeline end to end; reconstruction/picture quality means nothing for the real model.")
    beside = os.path.join(folder, "preprocessor_config.json")
    processor = Emu3VisionVQImageProcessor.from_pretrained(beside if os.path.isfile(beside) else DEFAULT_PREPROCESSOR)
    return model, processor


def load_model(args):
    import mindspore as ms

    ms.set_seed(args.seed)
    model, processor = load_vision_tokenizer(args.model_path, args.config, args.dtype)
    return model.set_graph_mode(args.mode == "graph"), processor


def main(argv=None):
    args = parse_args(argv)
    # The user's input is checked before MindSpore loads (seconds): a wrong path is an answer at once.
    check_folder("--model-path", args.model_path)
    check_output_dir("--output-dir", args.output_dir)
    frames, is_video = load_frames(args)
    check_dtype(args.dtype)
    from emu3.device import device_target
    from emu3.metrics import psnr, ssim
    import mindspore as ms

    model, processor = load_model(args)
    temporal = model.config.temporal_downsample_factor
    if is_video and len(frames) % temporal:
        raise SystemExit(f"error: {len(frames)} frames in {args.video_dir!r}; the tokenizer needs a multiple of "
                         f"{temporal} — remove {len(frames) % temporal} frame(s) or add {-len(frames) % temporal}")
    pixels = processor(frames, return_tensors="np")["pixel_values"]  # (F, 3, H, W)
    batch = pixels[None] if is_video else pixels
    print(f"device {device_target()}, mode {args.mode}, dtype {model.compute_dtype}, input {tuple(batch.shape)}")

    from tqdm import tqdm

    with tqdm(total=2, desc="encoding", bar_format="reconstruction: {desc} ({n}/{total}) [{elapsed}]") as bar:
        start = time.perf_counter()
        codes = model.encode(ms.Tensor(batch))
        codes_np = codes.asnumpy()
        encoded = time.perf_counter()
        bar.set_description_str("decoding")
        bar.update(1)
        recon = model.decode(codes).astype(ms.float32).asnumpy()
        decoded = time.perf_counter()
        bar.set_description_str("done")
        bar.update(1)
    recon = recon[0] if is_video else recon

    originals = processor.postprocess(pixels, return_tensors="np")["pixel_values"]  # the resized input, uint8
    restored = processor.postprocess(recon, return_tensors="np")["pixel_values"]
    os.makedirs(args.output_dir, exist_ok=True)
    scores = []
    for i, (a, b) in enumerate(zip(originals, restored)):
        a, b = a.transpose(1, 2, 0), b.transpose(1, 2, 0)
        suffix = f"_{i:03d}" if is_video else ""
        Image.fromarray(a).save(os.path.join(args.output_dir, f"input{suffix}.png"))
        Image.fromarray(b).save(os.path.join(args.output_dir, f"reconstruction{suffix}.png"))
        scores.append((psnr(a, b), ssim(a, b)))
    mean_psnr, mean_ssim = np.mean(scores, axis=0)
    total = decoded - start
    print(f"codes {tuple(codes_np.shape)} (values {codes_np.min()}..{codes_np.max()}), "
          f"{len(np.unique(codes_np))} distinct")
    print(f"PSNR {mean_psnr:.2f} dB   SSIM {mean_ssim:.4f}   over {len(scores)} frame(s)")
    print(f"time: encode {encoded - start:.3f} s + decode {decoded - encoded:.3f} s = {total:.3f} s "
          f"({len(scores) / total:.2f} img/s{', includes graph compilation' if args.mode == 'graph' else ''})")
    print(f"saved to {os.path.abspath(args.output_dir)}")
    return mean_psnr, mean_ssim


if __name__ == "__main__":
    main()
