"""``benchmark.py decode``: greedy LLM decoding, batch 1 — per-token time by context, batched vs unbatched CFG,
and the step's matmul kernels alone; beside PyTorch's."""

import os
import statistics
import time

import numpy as np

from bench_common import REPO, parameter_arrays, torch_reference, torch_threads, config_label, torch_rows

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
        rows.append({"component": f"decode ({config_label(args.config)})",
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
        arrays.update(parameter_arrays(model))
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

    impl = torch_threads(args)
    config = Emu3Config.from_pretrained(LLM_CONFIGS.get(args.config, args.config))
    reference = torch_reference(TorchEmu3, Emu3TextConfig(**hf_text_config_kwargs(config)), arrays)
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
