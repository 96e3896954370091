#!/usr/bin/env python
"""Benchmarks, one table format for every component (columns as in the mindone README).

    benchmark.py vq --config small --resolution 256 --mode pynative graph --torch

Components: ``train`` (one SFT optimizer step, graph/pynative, recompute on/off, beside PyTorch's; see
``scripts/bench_train.py`` for its flags), ``t2i`` / ``vqa`` (whole tasks on model folders, by default the tiny
world's; ``scripts/bench_tasks.py``), ``vq`` (vision-tokenizer reconstruction = encode + decode), ``decode`` (greedy LLM decoding,
batch 1: per-token time by context, batched vs unbatched CFG, and the step's matmul kernels alone) and ``load``
(peak host memory of loading a sharded fp32 LLM checkpoint into fp32 / fp16). Every row of
one run uses the same weights, input and thread count; ``--torch`` adds HF transformers' PyTorch implementation
on the same weights, run in a child process that loads PyTorch first (its OpenMP threads keep their default wait
policy; emu3 sets MindSpore's to passive, and a process has one OpenMP runtime).
Times are wall-clock medians over ``--repeat`` runs after one warm-up run (whose time, including graph
compilation, is reported separately); decode reports the median time of one step (every step of every run
pooled, for ours and for PyTorch alike) and, beside it, the median of the runs' mean step time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("GLOG_v", "3")
# PyTorch's rows run in a process of their own (``--torch-inputs``, see ``torch_rows``) that loads PyTorch first,
# so its OpenMP threads keep their default wait policy: emu3 makes MindSpore's wait passively
# (emu3/_openmp.py), and the two libraries share one libgomp in a process. Ours load emu3 first, for that policy.
if "--torch-inputs" in sys.argv:
    import torch  # noqa: F401
import emu3  # noqa: E402,F401

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


def torch_rows(args, arrays):
    """The PyTorch rows of ``args.component``, measured in a child process (see the imports) on ``arrays``
    (weights and inputs, numpy) and returned as that component's ``torch_*`` function returns them."""
    with tempfile.TemporaryDirectory() as folder:
        inputs = os.path.join(folder, "inputs.npz")
        np.savez(inputs, **arrays)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *args.argv, "--torch-inputs", inputs],
                             capture_output=True, text=True, env={**os.environ, "GLOG_v": "3"})
    if out.returncode:
        raise RuntimeError(f"the PyTorch rows failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _torch_reference(model_class, hf_config, arrays):
    """An eval-mode PyTorch ``model_class(hf_config)`` holding the weights stored as ``param:<name>`` arrays."""
    import torch

    reference = model_class(hf_config).eval()
    reference.load_state_dict({name.removeprefix("param:"): torch.from_numpy(value)
                               for name, value in arrays.items() if name.startswith("param:")}, strict=True)
    return reference


def _torch_threads(args):
    import torch

    torch.set_num_threads(args.threads)
    return f"torch {torch.__version__.split('+')[0]} (CPU, {args.threads} threads)"


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
        from emu3.tokenizer.hf_names import is_attention_projection, released_to_hf

        arrays = {"pixels": pixels}
        for name, param in model.parameters_and_names():
            value = param.astype(ms.float32).asnumpy() if param.dtype != ms.int64 else param.asnumpy()
            if is_attention_projection(name):
                value = value.reshape(value.shape[:2])
            arrays["param:" + released_to_hf(name)] = value
        row(*torch_rows(args, arrays))
    return rows


def torch_vq(args, arrays):
    """(impl, mode, precision, warm-up s, s/step) of HF transformers' VQ-VAE reconstructing ``arrays["pixels"]``."""
    import torch
    from transformers import Emu3VQVAE, Emu3VQVAEConfig
    from emu3.tokenizer import Emu3VisionVQConfig
    from emu3.tokenizer.hf_names import hf_config_kwargs

    impl = _torch_threads(args)
    config = Emu3VisionVQConfig.from_pretrained(VQ_CONFIGS.get(args.config, args.config))
    reference = _torch_reference(Emu3VQVAE, Emu3VQVAEConfig(**hf_config_kwargs(config)), arrays)
    tx = torch.from_numpy(arrays["pixels"])

    def reconstruct():
        with torch.no_grad():
            z = tx if tx.ndim == 5 else tx.unsqueeze(1).repeat(1, config.temporal_downsample_factor, 1, 1, 1)
            h = reference.quant_conv(reference.encoder(z).permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4)
            return reference.decode(reference.quantize(h)[:, 0] if tx.ndim == 4 else reference.quantize(h))

    return (impl, "eager", "float32", *timed(reconstruct, args.repeat))


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
    from mindspore import nn, ops
    from emu3.device import FusedJit, device_target
    from emu3.mllm import Emu3Config, Emu3ForCausalLM
    from emu3.mllm.generation import UnbatchedClassifierFreeGuidanceLogitsProcessor, initial_cache_length

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

        # The decode step's own matmul kernels for one token, alone: every projection of every layer, lm_head,
        # and each layer's two attention products over a cache of the short context's length (scores q·K with
        # K stored transposed, as the CPU cache does, then probabilities·V). Compiled like the step (same
        # fusion setting) and timed in the same rounds as the generations it is compared with.
        denses = [cell for _, cell in model.cells_and_names() if isinstance(cell, nn.Dense)]
        dtype = model.lm_head.weight.dtype
        slots = initial_cache_length(config, args.context[0], n)
        kv, d = config.num_key_value_heads, config.head_dim
        group = config.num_attention_heads // kv

        def tensor(*shape):
            return ms.Tensor(rng.standard_normal(shape).astype(np.float32)).astype(dtype)

        caches = [(tensor(1, kv, d, slots), tensor(1, kv, slots, d)) for _ in range(config.num_hidden_layers)]

        class Kernels(nn.Cell):
            def __init__(self):
                super().__init__()
                self.denses = nn.CellList(denses)
                self.keys = ms.ParameterTuple([ms.Parameter(k, name=f"k{i}") for i, (k, _) in enumerate(caches)])
                self.values = ms.ParameterTuple([ms.Parameter(v, name=f"v{i}") for i, (_, v) in enumerate(caches)])

            def construct(self, x, wide, query, probs):
                total = 0
                for dense in self.denses:
                    total = total + dense(wide if dense.in_channels != x.shape[-1] else x).sum()
                for keys, values in zip(self.keys, self.values):
                    total = total + ops.matmul(query, keys).sum() + ops.matmul(probs, values).sum()
                return total

        kernels = FusedJit(Kernels().construct)
        x, wide = tensor(1, 1, config.hidden_size), tensor(1, 1, config.intermediate_size)
        query, probs = tensor(1, kv, group, d), tensor(1, kv, group, slots)

        def kernels_alone():
            return [_time(lambda: kernels(x, wide, query, probs).asnumpy()) for _ in range(n)]

        runs[("graph", ctx, "matmul kernels alone")] = kernels_alone
    for (mode, ctx, note), (step, mean) in per_token(runs, args.repeat).items():
        row(impl, mode, ctx, note, step, mean)

    if args.torch:
        arrays = {f"prompt:{ctx}": ids for ctx, ids in prompts.items()}
        arrays.update({"param:" + name: p.astype(ms.float32).asnumpy() for name, p in model.parameters_and_names()})
        timpl, results = torch_rows(args, arrays)
        for ctx, step, mean in results:
            row(timpl, "eager", ctx, "greedy", step, mean)

    def ratio(a, b):
        return f"{measured[a] / measured[b]:.2f}x" if a in measured and b in measured else "n/a"

    short, long = args.context[0], args.context[-1]
    rows_summary = [
        ("graph decode step / its matmul kernels alone", ratio(("mindspore", "graph", short, "greedy"),
                                                               ("mindspore", "graph", short, "matmul kernels alone"))),
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


def torch_decode(args, arrays):
    """(impl, [(context, median step s, median run-mean step s)]) of HF transformers' greedy decoding."""
    import torch
    from transformers import Emu3ForCausalLM as TorchEmu3, Emu3TextConfig, LogitsProcessor, LogitsProcessorList
    from emu3.mllm import Emu3Config
    from emu3.mllm.hf_compat import hf_text_config_kwargs

    impl = _torch_threads(args)
    config = Emu3Config.from_pretrained(LLM_CONFIGS.get(args.config, args.config))
    reference = _torch_reference(TorchEmu3, Emu3TextConfig(**hf_text_config_kwargs(config)), arrays)
    n = args.new_tokens

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

    runs = {ctx: theirs(arrays[f"prompt:{ctx}"]) for ctx in args.context}
    return impl, [(ctx, step, mean) for ctx, (step, mean) in per_token(runs, args.repeat).items()]


# ---- load ---------------------------------------------------------------------------------------------------------

def bench_load(args):
    """Peak host memory of Emu3ForCausalLM.from_pretrained on a sharded fp32 checkpoint (released layout)."""

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
