#!/usr/bin/env python
"""Training-step benchmark (``benchmark.py train``): one optimizer step of SFT on one device.

Every row runs in a process of its own (so its peak resident memory is its own, and PyTorch's row loads PyTorch
first, as in the decode benchmark): a random-weight model of ``--config`` (default the decode benchmark's 56 M
model: hidden 512, 8 layers, GQA 8/2, vocab 32000), a batch of ``--batch`` x ``--seq-len`` tokens, all supervised,
AdamW + global-norm clipping. Times are medians of ``--repeat`` steps after two warm-up steps (the first one
compiles). The same process first times one large fp32 matmul (``--peak-size``³, the fastest of 10 runs after
3 warm-ups) with the row's own library as the machine's matmul peak; "% of peak" = the step's matmul FLOPs (3x the
forward's, 4x with recompute, which re-runs the forward) / step time / that peak. "matmuls alone" times the step's
products by themselves, at their shapes, in the row's library (one compiled graph for ours): the share of peak its
kernels reach at those shapes bounds what the whole step can reach.

``--npus 2`` compares the process layouts instead (graph mode; one msrun launch per layout, see ``LAYOUTS``):
one process, 2-process data parallelism, ZeRO-3, SP=2 and SP=2 + ZeRO-3, all on the same global batch
(``--batch`` x ``--seq-len``: data-parallel ranks take ``--batch``/2 samples each, sequence-parallel ranks the
whole batch and half the tokens). Per rank: s/step, tokens/s, peak resident memory, and the bytes of parameters +
gradients-to-be + optimizer state it holds (counted from the tensors themselves: parameters, AdamW moments and
fp32 masters, ZeRO-1/2 row shards).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("GLOG_v", "3")
SMALL = os.path.join(REPO, "configs", "mllm", "small.json")


def step_matmul_shapes(config, batch, seq_len, recompute):
    """The products of one training step as (batch, m, k, n) (batch None: a plain matmul): every projection's
    forward, input-gradient and weight-gradient GEMMs (the lm_head's too), the attention's two products forward and
    four backward (causal products counted in full); with recompute the forward's once more. Their FLOPs are
    those "% of peak" counts: 3x the forward's, 4x with recompute."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, layers = config["num_attention_heads"], config["num_hidden_layers"]
    d = h // heads
    kv = config["num_key_value_heads"] * d
    tokens, rows = batch * seq_len, batch * heads
    projections = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)] * layers + [(h, v)]  # (in, out)
    attention = [(rows, seq_len, d, seq_len), (rows, seq_len, seq_len, d)] * layers  # scores, weighted values
    forward = [(None, tokens, n_in, n_out) for n_in, n_out in projections] + attention
    backward = [shape for n_in, n_out in projections
                for shape in ((None, tokens, n_out, n_in), (None, n_out, tokens, n_in))]  # dX = dY W, dW = dY' X
    backward += [(rows, seq_len, seq_len, d), (rows, seq_len, seq_len, d)] * 2 * layers  # d(scores), d(values)
    return forward * (2 if recompute else 1) + backward


def matmul_flops(shapes):
    return sum(2 * (b or 1) * m * k * n for b, m, k, n in shapes)


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_times(fn, repeat, warmups):
    """Wall times of ``repeat`` calls after ``warmups`` untimed ones (the first compiles)."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, repeat):
    return statistics.median(run_times(fn, repeat, warmups=2))


def best_time(fn, repeat=10):
    """The fastest of ``repeat`` runs after three warm-ups: a kernel's peak, not its typical time."""
    return min(run_times(fn, repeat, warmups=3))


# name -> (processes, SP size, ZeRO stage)
LAYOUTS = {"1 process": (1, 1, 0), "DP x2": (2, 1, 0), "DP x2 + ZeRO-3": (2, 1, 3), "SP=2": (2, 2, 0),
           "SP=2 + ZeRO-3": (2, 2, 3)}


def run_layout(args, config):
    """One layout's step in this process (under msrun for 2 processes): (s/step, held bytes, rank)."""
    import emu3  # noqa: F401
    import mindspore as ms

    from emu3.device import select_device
    from emu3.mllm import Emu3Config, Emu3ForCausalLM
    from emu3.parallel.collectives import init_distributed
    from emu3.parallel.sequence_parallel import split_sequence
    from train.data import next_token_targets
    from train.optim import AdamW
    from train.parallelize import parallelize
    from train.step import TrainStep

    select_device("CPU")
    _, sp_size, zero = LAYOUTS[args.layout]
    world, sp, dp = init_distributed(sp_size)
    ms.set_seed(args.seed)
    model = Emu3ForCausalLM.from_config(Emu3Config(**config))
    model.set_train(True)
    plan, forward = parallelize(model, world, sp, zero, args.recompute)
    optimizer = AdamW(plan.optimizer_params(), 0.1, (0.9, 0.95), 1e-6)
    step = TrainStep(model, optimizer, max_grad_norm=1.0, compiled=True, guard_overflow=False, plan=plan,
                     forward=forward)
    ids = np.random.default_rng(args.seed).integers(0, config["vocab_size"], (args.batch, args.seq_len))
    ids = ids.astype(np.int32)[dp.rank * args.batch // dp.size:(dp.rank + 1) * args.batch // dp.size]
    mask, targets = np.ones_like(ids), next_token_targets(ids)
    if sp.size > 1:
        ids, targets = split_sequence(ids, sp), split_sequence(targets, sp)
    seconds = median_time(lambda: step.step([(ids, mask, targets)], 1e-5), args.repeat)
    held = sum(p.size * p.itemsize for p in model.trainable_params()) * 2  # parameters and their gradients
    held += sum(t.size * t.itemsize for t in optimizer.state().values()) + sum(
        m.size * m.itemsize for m in plan.masters)
    return seconds, held, world.rank


def layout_row(args, config):
    seconds, held, rank = run_layout(args, config)
    processes = LAYOUTS[args.layout][0]
    return rank, {"layout": args.layout, "processes": processes, "recompute": "ON" if args.recompute else "OFF",
                  "global batch": f"{args.batch}x{args.seq_len}", "s/step": round(seconds, 3),
                  "tokens/s per rank": round(args.batch * args.seq_len / seconds / processes, 1),
                  "peak MB per rank": round(peak_rss_mb()),
                  "params+grads+optimizer MB per rank": round(held / 2 ** 20, 1)}


def bench_layouts(args):
    """Every layout of ``LAYOUTS``, each launched on its own (msrun for 2 processes)."""
    import tempfile

    from train.launch import free_port, msrun_command, msrun_env

    if args.batch % 2:
        raise SystemExit(f"error: --batch {args.batch} with --npus 2: the global batch must be even (each "
                         "data-parallel rank takes half of it)")
    rows = []
    for name in args.layouts:
        processes = LAYOUTS[name][0]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "row")
            flags = ["--layout", name, "--out", out, "--config", args.config, "--batch", str(args.batch),
                     "--seq-len", str(args.seq_len), "--repeat", str(args.repeat), "--seed", str(args.seed)]
            if "on" in args.recompute:
                flags.append("--recompute-on")
            script = os.path.abspath(__file__)
            cmd = ([sys.executable, script, *flags] if processes == 1 else
                   msrun_command(script, flags, processes, free_port(), os.path.join(tmp, "logs")))
            result = subprocess.run(cmd, capture_output=True, text=True, env=msrun_env())
            if result.returncode:
                raise RuntimeError(f"layout {name} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
            per_rank = [json.load(open(f"{out}.{r}.json")) for r in range(processes)]
            row = dict(per_rank[0])
            row["peak MB per rank"] = max(r["peak MB per rank"] for r in per_rank)
            rows.append(row)
    return rows


def run_ours(args, config):
    import emu3  # noqa: F401
    import mindspore as ms

    from emu3.device import select_device
    from emu3.mllm import Emu3Config, Emu3ForCausalLM
    from train.data import next_token_targets
    from train.optim import AdamW
    from train.step import TrainStep

    select_device("CPU")
    a = ms.Tensor(np.random.default_rng(0).standard_normal((args.peak_size, args.peak_size), np.float32))
    @ms.jit
    def matmul(x):
        return ms.ops.matmul(x, x)

    peak_time = best_time(lambda: matmul(a).asnumpy())
    ms.set_seed(args.seed)
    model = Emu3ForCausalLM.from_config(Emu3Config(**config))
    model.set_train(True)
    if args.recompute:
        for layer in model.model.layers:
            layer.recompute()
    step = TrainStep(model, AdamW(model.trainable_params(), 0.1, (0.9, 0.95), 1e-6), max_grad_norm=1.0,
                     compiled=args.row == "graph", guard_overflow=False)
    ids = np.random.default_rng(args.seed).integers(0, config["vocab_size"], (args.batch, args.seq_len))
    ids = ids.astype(np.int32)
    micro = [(ids, np.ones_like(ids), next_token_targets(ids))]
    seconds = median_time(lambda: step.step(micro, 1e-5), args.repeat)
    return seconds, peak_time


def _operands(shapes, seed):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((b, m, k) if b else (m, k), np.float32),
             rng.standard_normal((b, k, n) if b else (k, n), np.float32)) for b, m, k, n in shapes]


def _ours_matmuls_alone(args, config):
    """Wall time of the step's products alone (``step_matmul_shapes``), one compiled graph of only them, each
    product on operands of its own: the ceiling the step's matmul kernels set on this machine."""
    import mindspore as ms

    operands = [ms.Tensor(x) for pair in _operands(step_matmul_shapes(config, args.batch, args.seq_len,
                                                                      args.recompute), args.seed) for x in pair]

    @ms.jit
    def products(*xs):
        return tuple(ms.ops.matmul(a, b) for a, b in zip(xs[0::2], xs[1::2]))

    return median_time(lambda: products(*operands)[-1].asnumpy(), args.repeat)


def _torch_matmuls_alone(args, config):
    import torch

    operands = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in
                _operands(step_matmul_shapes(config, args.batch, args.seq_len, args.recompute), args.seed)]
    return median_time(lambda: [torch.matmul(a, b) for a, b in operands], args.repeat)


def run_torch(args, config):
    import torch
    from transformers import Emu3ForCausalLM as HFEmu3ForCausalLM
    from transformers import Emu3TextConfig

    from emu3.mllm.configuration_emu3 import Emu3Config
    from emu3.mllm.hf_compat import hf_text_config_kwargs

    torch.set_num_threads(os.cpu_count())
    a = torch.randn(args.peak_size, args.peak_size)
    peak_time = best_time(lambda: torch.matmul(a, a))
    torch.manual_seed(args.seed)
    hf_config = Emu3TextConfig(**hf_text_config_kwargs(Emu3Config(**config)))
    hf_config._attn_implementation = "sdpa"
    model = HFEmu3ForCausalLM(hf_config).train()
    if args.recompute:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1)
    ids = torch.from_numpy(np.random.default_rng(args.seed).integers(0, config["vocab_size"],
                                                                   (args.batch, args.seq_len)))

    def step():
        opt.zero_grad()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return median_time(step, args.repeat), peak_time


def row(args):
    with open(args.config, encoding="utf-8") as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    config.setdefault("attention_dropout", 0.0)
    seconds, peak_time = (run_torch if args.row == "torch" else run_ours)(args, config)
    peak_mb = peak_rss_mb()  # the step's, before the products alone allocate their operands
    matmuls_time = (_torch_matmuls_alone if args.row == "torch" else _ours_matmuls_alone)(args, config)
    peak = 2 * args.peak_size ** 3 / peak_time
    flops = matmul_flops(step_matmul_shapes(config, args.batch, args.seq_len, args.recompute))
    tokens = args.batch * args.seq_len
    return {"impl": "PyTorch (HF transformers)" if args.row == "torch" else "MindSpore (ours)",
            "mode": "eager" if args.row == "torch" else args.row, "recompute": "ON" if args.recompute else "OFF",
            "batch": f"{args.batch}x{args.seq_len}", "precision": "fp32", "s/step": round(seconds, 3),
            "tokens/s": round(tokens / seconds, 1), "samples/s": round(args.batch / seconds, 3),
            "peak MB": round(peak_mb), "matmul peak GFLOP/s": round(peak / 1e9, 1),
            "% of peak": round(100 * flops / seconds / peak, 1), "matmuls alone s": round(matmuls_time, 4),
            "matmuls alone % of peak": round(100 * flops / matmuls_time / peak, 1)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=SMALL, help="an Emu3 config.json (default configs/mllm/small.json)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--rows", nargs="+", default=["graph", "pynative", "torch"],
                   choices=("graph", "pynative", "torch"))
    p.add_argument("--recompute", nargs="+", default=["off", "on"], choices=("off", "on"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--npus", type=int, default=1, choices=(1, 2),
                   help="2: compare 1 process with 2-process DP / ZeRO-3 / SP=2 / SP=2 + ZeRO-3 (graph mode)")
    p.add_argument("--layouts", nargs="+", choices=tuple(LAYOUTS), default=list(LAYOUTS),
                   help="with --npus 2: the layouts to run (default all)")
    p.add_argument("--row", choices=("graph", "pynative", "torch"), help=argparse.SUPPRESS)  # internal: one row
    p.add_argument("--layout", choices=tuple(LAYOUTS), help=argparse.SUPPRESS)  # internal: one layout
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def bench_train(argv):
    """All rows, each in its own process; returns the table rows."""
    args = parse_args(argv)
    if args.npus == 2:
        return bench_layouts(args)
    rows = []
    for impl in args.rows:
        for recompute in args.recompute:
            cmd = [sys.executable, os.path.abspath(__file__), "--row", impl, "--config", args.config,
                   "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--repeat", str(args.repeat),
                   "--peak-size", str(args.peak_size), "--seed", str(args.seed)]
            if recompute == "on":
                cmd.append("--recompute-on")
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"benchmark row {impl}/{recompute} failed:\n{result.stderr[-3000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


if __name__ == "__main__":
    argv = sys.argv[1:]
    recompute = "--recompute-on" in argv
    args = parse_args([a for a in argv if a != "--recompute-on"])
    args.recompute = recompute
    if args.layout:
        with open(args.config, encoding="utf-8") as f:
            config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        config.setdefault("attention_dropout", 0.0)
        rank, result = layout_row(args, config)
        with open(f"{args.out}.{rank}.json", "w", encoding="utf-8") as f:
            json.dump(result, f)
    else:
        print(json.dumps(row(args)))
