"""What every benchmark component shares: timing, the table printer and PyTorch's rows in a child process.

PyTorch's rows run in a process of their own (``benchmark.py ... --torch-inputs FILE``) that loads PyTorch first,
so its OpenMP threads keep their default wait policy: emu3 makes MindSpore's wait passively (emu3/_openmp.py),
and the two libraries share one libgomp in a process. Ours load emu3 first, for that policy.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO, "scripts", "benchmark.py")


def config_label(config):
    """'small' for a preset name or the file name of a config path, for the component column."""
    return os.path.basename(str(config)).removesuffix(".json")


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


def parameter_arrays(cell, rename=lambda name: name, reshape=lambda name: False):
    """``cell``'s parameters as numpy for a PyTorch twin: {"param:" + rename(name): array}, fp32 (int64 kept);
    ``reshape(name)`` marks 1x1 convolutions PyTorch holds as linear weights (out, in)."""
    import mindspore as ms

    out = {}
    for name, p in cell.parameters_and_names():
        value = p.asnumpy() if p.dtype == ms.int64 else p.astype(ms.float32).asnumpy()
        out["param:" + rename(name)] = value.reshape(value.shape[:2]) if reshape(name) else value
    return out


def torch_rows(args, arrays):
    """The PyTorch rows of ``args.component``, measured in a child process (see the imports) on ``arrays``
    (weights and inputs, numpy) and returned as that component's ``torch_*`` function returns them."""
    with tempfile.TemporaryDirectory() as folder:
        inputs = os.path.join(folder, "inputs.npz")
        np.savez(inputs, **arrays)
        out = subprocess.run([sys.executable, BENCHMARK, *args.argv, "--torch-inputs", inputs],
                             capture_output=True, text=True, env={**os.environ, "GLOG_v": "3"})
    if out.returncode:
        raise RuntimeError(f"the PyTorch rows failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_reference(model_class, hf_config, arrays):
    """An eval-mode PyTorch ``model_class(hf_config)`` holding the weights stored as ``param:<name>`` arrays."""
    import torch

    reference = model_class(hf_config).eval()
    reference.load_state_dict({name.removeprefix("param:"): torch.from_numpy(value)
                               for name, value in arrays.items() if name.startswith("param:")}, strict=True)
    return reference


def torch_threads(args):
    import torch

    torch.set_num_threads(args.threads)
    return f"torch {torch.__version__.split('+')[0]} (CPU, {args.threads} threads)"
