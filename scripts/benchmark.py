#!/usr/bin/env python
"""Benchmarks, one table format for every component (columns as in the mindone README).

    benchmark.py vq --config small --resolution 256 --mode pynative graph --torch

Components, one module each beside this dispatcher (shared timing and table printer: ``bench_common.py``):
``train`` (one SFT optimizer step, graph/pynative, recompute on/off, beside PyTorch's, or the process layouts
with ``--npus 2``; ``bench_train.py``, own flags), ``t2i`` / ``vqa`` (whole tasks on model folders, by default
the tiny world's; ``bench_tasks.py``, own flags), ``vq`` (vision-tokenizer reconstruction = encode + decode;
``bench_vq.py``), ``decode`` (greedy LLM decoding, batch 1: per-token time by context, batched vs unbatched CFG,
and the step's matmul kernels alone; ``bench_decode.py``) and ``load`` (peak host memory of loading a sharded fp32
LLM checkpoint into fp32 / fp16; ``bench_load.py``).

Every row of one run uses the same weights, input and thread count; ``--torch`` adds HF transformers' PyTorch
implementation on the same weights, run in a child process that loads PyTorch first (its OpenMP threads keep
their default wait policy; emu3 sets MindSpore's to passive, and a process has one OpenMP runtime). Times are wall-clock medians over ``--repeat`` runs after one warm-up run (whose time, including graph
compilation, is reported separately); decode reports the median time of one step (every step of every run
pooled, for ours and for PyTorch alike) and, beside it, the median of the runs' mean step time.
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("GLOG_v", "3")
# PyTorch's rows run in a child process of this script (``--torch-inputs``) that loads PyTorch before emu3, for
# its OpenMP wait policy (see scripts/bench_common.py); ours load emu3 first.
if "--torch-inputs" in sys.argv:
    import torch  # noqa: F401
import emu3  # noqa: E402,F401

from bench_common import print_table  # noqa: E402
from bench_decode import bench_decode, torch_decode  # noqa: E402
from bench_load import bench_load  # noqa: E402
from bench_vq import bench_vq, torch_vq  # noqa: E402

COMPONENTS = {"vq": bench_vq, "decode": bench_decode, "load": bench_load}
TORCH_ROWS = {"vq": torch_vq, "decode": torch_decode}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("component", choices=sorted(COMPONENTS), help="what to benchmark")
    p.add_argument("--config", default="small", help="'small', 'released' (vq) or a config.json path")
    p.add_argument("--resolution", type=int, nargs="+", default=[256], help="H [W] in pixels (multiples of 8)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=0, help="vq: video frames per sample (multiple of 4); 0 = images")
    p.add_argument("--mode", nargs="+", choices=("pynative", "graph"), default=["pynative", "graph"])
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="default: by device")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--torch", action="store_true", help="also run HF transformers' PyTorch implementation")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (MindSpore uses its default)")
    p.add_argument("--context", type=int, nargs="+", default=[64, 2048], help="decode: prompt lengths")
    p.add_argument("--new-tokens", type=int, default=32, help="decode: tokens generated per timed run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-inputs", help=argparse.SUPPRESS)  # internal: this process runs PyTorch's rows only
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.new_tokens < 2:
        p.error("--new-tokens must be at least 2 (the per-token time is a difference of two runs)")
    if len(args.resolution) == 1:
        args.resolution = args.resolution * 2
    if len(args.resolution) != 2 or any(r <= 0 or r % 8 for r in args.resolution):
        p.error(f"--resolution takes H [W], positive multiples of 8; got {args.resolution}")
    if args.frames % 4:
        p.error(f"--frames must be a multiple of 4 (the temporal factor), got {args.frames}")
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # the training step has its own flags (scripts/bench_train.py)
        from bench_train import bench_train

        rows = bench_train(argv[1:])
        print_table(rows, list(rows[0]))
        return rows
    if argv[:1] in (["t2i"], ["vqa"]):  # whole tasks on model folders, own flags (scripts/bench_tasks.py)
        from bench_tasks import bench_tasks

        rows = bench_tasks(argv[0], argv[1:])
        if rows is not None:  # None: this was the PyTorch child process, which printed its rows as JSON
            print_table(rows, list(rows[0]))
        return rows
    args = parse_args(argv)
    if args.torch_inputs:
        with np.load(args.torch_inputs) as arrays:
            print(json.dumps(TORCH_ROWS[args.component](args, dict(arrays))))
        return None
    bench = COMPONENTS[args.component]
    rows = bench(args)
    print_table(rows, list(rows[0]))
    for label, value in getattr(bench, "summary", []):
        print(f"{label}: {value}")
    return rows


if __name__ == "__main__":
    main()
