#!/usr/bin/env python
"""Benchmarks, one table format for every component (columns as in the mindone README).

    benchmark.py vq --config small --resolution 256 --mode pynative graph --torch

Components: ``vq`` (vision-tokenizer reconstruction = encode + decode). Every row of one run uses the same
weights, input and thread count; ``--torch`` adds HF transformers' PyTorch implementation on the same weights.
Times are wall-clock medians over ``--repeat`` runs after one warm-up run (whose time, including graph
compilation, is reported separately).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("GLOG_v", "3")

VQ_CONFIGS = {name: os.path.join(REPO, "configs", "vision_tokenizer", f"{name}.json") for name in ("small", "released")}


def timed(fn, repeat):
    start = time.perf_counter()
    fn()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return warmup, statistics.median(times)


def print_table(rows, columns):
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths)) + " |")


# ---- vq -----------------------------------------------------------------------------------------------------------

def bench_vq(args):
    import mindspore as ms
    from emu3.device import device_target
    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel

    config = Emu3VisionVQConfig.from_pretrained(VQ_CONFIGS.get(args.config, args.config))
    ms.set_seed(args.seed)
    model = Emu3VisionVQModel.from_config(config, dtype=args.dtype)
    height, width = args.resolution
    frames = args.frames or 1
    shape = (args.batch, frames, 3, height, width) if args.frames else (args.batch, 3, height, width)
    pixels = np.random.default_rng(args.seed).uniform(-1, 1, shape).astype(np.float32)
    images = args.batch * frames
    label = f"{height}x{width}" + (f"x{frames}f" if args.frames else "")
    rows = []

    def row(impl, mode, precision, warmup, step):
        rows.append({"component": f"vq ({os.path.basename(str(args.config)).removesuffix('.json')})",
                     "impl": impl, "mode": mode, "precision": precision, "resolution": label, "batch": args.batch,
                     "warm-up s": f"{warmup:.2f}", "s/step": f"{step:.3f}", "img/s": f"{images / step:.2f}"})

    x = ms.Tensor(pixels)
    for mode in args.mode:
        model.set_graph_mode(mode == "graph")
        warmup, step = timed(lambda: model.decode(model.encode(x)).asnumpy(), args.repeat)
        row(f"mindspore {ms.__version__} ({device_target()})", mode, str(model.compute_dtype).lower(), warmup, step)

    if args.torch:
        import torch
        from transformers import Emu3VQVAE, Emu3VQVAEConfig
        from emu3.tokenizer.hf_names import hf_config_kwargs, is_attention_projection, released_to_hf

        torch.set_num_threads(args.threads)
        reference = Emu3VQVAE(Emu3VQVAEConfig(**hf_config_kwargs(config))).eval()
        state = {}
        for name, param in model.parameters_and_names():
            value = param.astype(ms.float32).asnumpy() if param.dtype != ms.int64 else param.asnumpy()
            state[released_to_hf(name)] = torch.from_numpy(
                value.reshape(value.shape[:2]) if is_attention_projection(name) else value)
        reference.load_state_dict(state, strict=True)
        tx = torch.from_numpy(pixels)

        def reconstruct():
            with torch.no_grad():
                z = tx if tx.ndim == 5 else tx.unsqueeze(1).repeat(1, config.temporal_downsample_factor, 1, 1, 1)
                h = reference.quant_conv(reference.encoder(z).permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4)
                return reference.decode(reference.quantize(h)[:, 0] if tx.ndim == 4 else reference.quantize(h))

        warmup, step = timed(reconstruct, args.repeat)
        row(f"torch {torch.__version__.split('+')[0]} (CPU, {args.threads} threads)", "eager", "float32", warmup, step)
    return rows


COMPONENTS = {"vq": bench_vq}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("component", choices=sorted(COMPONENTS), help="what to benchmark")
    p.add_argument("--config", default="small", help="vq: 'small', 'released' or a config.json path")
    p.add_argument("--resolution", type=int, nargs="+", default=[256], help="H [W] in pixels (multiples of 8)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=0, help="vq: video frames per sample (multiple of 4); 0 = images")
    p.add_argument("--mode", nargs="+", choices=("pynative", "graph"), default=["pynative", "graph"])
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="default: by device")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--torch", action="store_true", help="also run HF transformers' PyTorch implementation")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (MindSpore uses its default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if len(args.resolution) == 1:
        args.resolution = args.resolution * 2
    if len(args.resolution) != 2 or any(r <= 0 or r % 8 for r in args.resolution):
        p.error(f"--resolution takes H [W], positive multiples of 8; got {args.resolution}")
    if args.frames % 4:
        p.error(f"--frames must be a multiple of 4 (the temporal factor), got {args.frames}")
    return args


def main(argv=None):
    args = parse_args(argv)
    rows = COMPONENTS[args.component](args)
    print_table(rows, list(rows[0]))
    return rows


if __name__ == "__main__":
    main()
