#!/usr/bin/env python
"""Benchmarks, one table format for every component (columns as in the mindone README).

    benchmark.py vq --config small --resolution 256 --mode pynative graph --torch

Components: ``vq`` (vision-tokenizer reconstruction = encode + decode), ``decode`` (greedy LLM decoding,
batch 1: per-token time by context, batched vs unbatched CFG, and the step's matmul kernels alone) and ``load``
(peak host memory of loading a sharded fp32 LLM checkpoint into fp32 / fp16). Every row of
one run uses the same weights, input and thread count; ``--torch`` adds HF transformers' PyTorch implementation
on the same weights.
Times are wall-clock medians over ``--repeat`` runs after one warm-up run (whose time, including graph
compilation, is reported separately); decode reports the median time of one step (every step of every run
pooled, for ours and for PyTorch alike) and, beside it, the median of the runs' mean step time.
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


# ---- decode -------------------------------------------------------------------------------------------------------

LLM_CONFIGS = {"small": os.path.join(REPO, "configs", "mllm", "small.json")}


def per_token(runs, repeat):
    """{label: (median seconds of one step, median over runs of the run's mean step)} for ``runs`` {label: run()},
    each ``run()`` returning the seconds of its steps. Each run is warmed up once (which compiles its graphs),
    then all are timed ``repeat`` times round-robin, so that drifts of this shared machine hit every label alike
    instead of whichever ran last. The median step is the steady per-token cost; a short generation's mean also
    carries the few slower steps right after its prefill."""
    for run in runs.values():
        run()
    steps = {label: [] for label in runs}
    means = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            times = run()
            steps[label] += times
            means[label].append(statistics.fmean(times))
    return {label: (statistics.median(steps[label]), statistics.median(means[label])) for label in runs}


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_decode(args):
    """Greedy decode speed of the LLM, batch 1: our port (pynative/graph) vs PyTorch, by context, CFG, kernels."""
    import mindspore as ms
    from mindspore import nn
    from emu3.device import device_target
    from emu3.mllm import Emu3Config, Emu3ForCausalLM
    from emu3.mllm.generation import UnbatchedClassifierFreeGuidanceLogitsProcessor

    config = Emu3Config.from_pretrained(LLM_CONFIGS.get(args.config, args.config))
    ms.set_seed(args.seed)
    model = Emu3ForCausalLM.from_config(config, dtype=args.dtype)
    model.generation_steps_kept = 8  # runs of every shape alternate (see per_token) without recompiling
    rng = np.random.default_rng(args.seed)
    prompts = {ctx: rng.integers(3, config.vocab_size, (1, ctx)) for ctx in args.context}
    negative = rng.integers(3, config.vocab_size, (1, args.context[0]))
    n = args.new_tokens
    precision = str(model.lm_head.weight.dtype).lower()
    impl = f"mindspore {ms.__version__} ({device_target()})"
    rows, measured = [], {}

    def row(impl, mode, context, note, seconds, mean=None):
        measured[(impl.split()[0], mode, context, note)] = seconds
        rows.append({"component": f"decode ({os.path.basename(str(args.config)).removesuffix('.json')})",
                     "impl": impl, "mode": mode, "precision": precision, "context": context, "batch": 1,
                     "what": note, "ms/token": f"{seconds * 1e3:.2f}", "tokens/s": f"{1 / seconds:.1f}",
                     "run mean ms/token": "-" if mean is None else f"{mean * 1e3:.2f}"})

    def ours(ids, mode, **kw):
        def run():
            model.generate(ids, max_new_tokens=n, eos_token_id=[], mode=mode, progress=False, **kw)
            return model.generation_stats["step_seconds"]

        return run

    runs = {}
    for mode in args.mode:
        runs.update({(mode, ctx, "greedy"): ours(ids, mode) for ctx, ids in prompts.items()})
    if "graph" in args.mode:
        ctx, ids = args.context[0], prompts[args.context[0]]
        unbatched = [UnbatchedClassifierFreeGuidanceLogitsProcessor(3.0, model, unconditional_ids=negative)]
        runs[("graph", ctx, "CFG batched (2 rows)")] = ours(ids, "graph", negative_prompt_ids=negative,
                                                            guidance_scale=3.0)
        runs[("graph", ctx, "CFG unbatched")] = ours(ids, "graph", logits_processor=unbatched)

        # The decode step's own matmul kernels (every projection of every layer + lm_head) for one token, alone,
        # timed in the same rounds as the generations it is compared with.
        denses = [cell for _, cell in model.cells_and_names() if isinstance(cell, nn.Dense)]

        class Kernels(nn.Cell):
            def __init__(self):
                super().__init__()
                self.denses = nn.CellList(denses)

            def construct(self, x, wide):
                total = 0
                for dense in self.denses:
                    total = total + dense(wide if dense.in_channels != x.shape[-1] else x).sum()
                return total

        kernels = ms.jit(Kernels().construct)
        dtype = model.lm_head.weight.dtype
        x = ms.Tensor(rng.standard_normal((1, 1, config.hidden_size)).astype(np.float32)).astype(dtype)
        wide = ms.Tensor(rng.standard_normal((1, 1, config.intermediate_size)).astype(np.float32)).astype(dtype)
        runs[("graph", "-", "matmul kernels alone")] = lambda: [_time(lambda: kernels(x, wide).asnumpy())
                                                                for _ in range(n)]
    for (mode, ctx, note), (step, mean) in per_token(runs, args.repeat).items():
        row(impl, mode, ctx, note, step, mean)

    if args.torch:
        import torch
        from transformers import Emu3ForCausalLM as TorchEmu3, Emu3TextConfig, LogitsProcessor, LogitsProcessorList
        from emu3.mllm.hf_compat import hf_text_config_kwargs

        torch.set_num_threads(args.threads)
        reference = TorchEmu3(Emu3TextConfig(**hf_text_config_kwargs(config))).eval()
        state = {name: torch.from_numpy(p.astype(ms.float32).asnumpy()) for name, p in model.parameters_and_names()}
        reference.load_state_dict(state, strict=True)
        timpl = f"torch {torch.__version__.split('+')[0]} (CPU, {args.threads} threads)"

        class StepClock(LogitsProcessor):
            """Stamps each decode step: transformers calls logits processors once per generated token."""

            def __init__(self):
                self.stamps = []

            def __call__(self, input_ids, scores):
                self.stamps.append(time.perf_counter())
                return scores

        def theirs(ids):
            tids = torch.from_numpy(ids)

            def run():
                clock = StepClock()
                with torch.no_grad():
                    reference.generate(tids, attention_mask=torch.ones_like(tids), max_new_tokens=n,
                                       min_new_tokens=n, do_sample=False, use_cache=True,
                                       pad_token_id=config.pad_token_id, logits_processor=LogitsProcessorList([clock]))
                return np.diff(clock.stamps).tolist()  # stamp 0 follows the prefill: n - 1 decode steps

            return run

        for ctx, (step, mean) in per_token({ctx: theirs(ids) for ctx, ids in prompts.items()}, args.repeat).items():
            row(timpl, "eager", ctx, "greedy", step, mean)

    def ratio(a, b):
        return f"{measured[a] / measured[b]:.2f}x" if a in measured and b in measured else "n/a"

    short, long = args.context[0], args.context[-1]
    rows_summary = [
        ("graph decode step / its matmul kernels alone", ratio(("mindspore", "graph", short, "greedy"),
                                                               ("mindspore", "graph", "-", "matmul kernels alone"))),
        (f"graph per-token cost, context {long} / {short}", ratio(("mindspore", "graph", long, "greedy"),
                                                                 ("mindspore", "graph", short, "greedy"))),
        ("CFG speed-up, batched vs unbatched", ratio(("mindspore", "graph", short, "CFG unbatched"),
                                                      ("mindspore", "graph", short, "CFG batched (2 rows)"))),
        ("graph speed-up over pynative", ratio(("mindspore", "pynative", short, "greedy"),
                                               ("mindspore", "graph", short, "greedy"))),
        ("ours (graph) / PyTorch, time per token", ratio(("mindspore", "graph", short, "greedy"),
                                                        ("torch", "eager", short, "greedy"))),
    ]
    bench_decode.summary = rows_summary
    return rows


# ---- load ---------------------------------------------------------------------------------------------------------

def bench_load(args):
    """Peak host memory of Emu3ForCausalLM.from_pretrained on a sharded fp32 checkpoint (released layout)."""
    import json
    import subprocess
    import tempfile

    import mindspore as ms
    from safetensors.numpy import save_file
    from emu3.mllm import Emu3Config, Emu3ForCausalLM

    config = Emu3Config.from_pretrained(LLM_CONFIGS.get(args.config, args.config))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        # Write a random fp32 checkpoint in 7 shards with an index, as the released LLMs are published.
        model = Emu3ForCausalLM(config, dtype=ms.float32, random_init=False)
        names = [(name, tuple(p.shape)) for name, p in model.parameters_and_names()]
        del model
        rng = np.random.default_rng(args.seed)
        shards = [names[i::7] for i in range(7)]
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-00007.safetensors"
            tensors = {n: (rng.standard_normal(shape, dtype=np.float32) * 0.02) for n, shape in shard}
            total += sum(t.nbytes for t in tensors.values())
            save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
            weight_map.update({n: file for n, _ in shard})
            del tensors
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
        config.save_pretrained(folder)
        for dtype in (args.dtype or "fp32", "fp16") if (args.dtype or "fp32") != "fp16" else ("fp16",):
            # A fresh process, so its peak RSS is the load's alone (baseline: the same imports, no load).
            probe = ("import resource, sys; sys.path.insert(0, %r)\n"
                     "from emu3.device import select_device; select_device('CPU')\n"
                     "from emu3.mllm import Emu3ForCausalLM\n"
                     "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
                     "m = Emu3ForCausalLM.from_pretrained(%r, dtype=%r) if %r else None\n"
                     "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
            out = subprocess.run([sys.executable, "-c", probe % (REPO, folder, dtype, True)], capture_output=True,
                                 text=True, check=True, env={**os.environ, "GLOG_v": "3"}).stdout.split()
            base, peak = int(out[-2]) * 1024, int(out[-1]) * 1024
            model_bytes = total // (2 if dtype in ("fp16", "bf16") else 1)
            rows.append({"component": f"load ({os.path.basename(str(args.config)).removesuffix('.json')})",
                         "checkpoint": f"7 shards, fp32, {total / 2**20:.0f} MiB", "target dtype": dtype,
                         "model in target dtype MiB": f"{model_bytes / 2**20:.0f}",
                         "peak RSS growth MiB": f"{(peak - base) / 2**20:.0f}",
                         "peak / model": f"{(peak - base) / model_bytes:.2f}x"})
    return rows


COMPONENTS = {"vq": bench_vq, "decode": bench_decode, "load": bench_load}


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
    args = p.parse_args(argv)
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
    args = parse_args(argv)
    bench = COMPONENTS[args.component]
    rows = bench(args)
    print_table(rows, list(rows[0]))
    for label, value in getattr(bench, "summary", []):
        print(f"{label}: {value}")
    return rows


if __name__ == "__main__":
    main()
