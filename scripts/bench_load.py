"""``benchmark.py load``: peak host memory of loading a sharded fp32 LLM checkpoint into fp32 / fp16."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from bench_common import REPO, config_label
from bench_decode import LLM_CONFIGS


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
            rows.append({"component": f"load ({config_label(args.config)})",
                         "checkpoint": f"7 shards, fp32, {total / 2**20:.0f} MiB", "target dtype": dtype,
                         "model in target dtype MiB": f"{model_bytes / 2**20:.0f}",
                         "peak RSS growth MiB": f"{(peak - base) / 2**20:.0f}",
                         "peak / model": f"{(peak - base) / model_bytes:.2f}x"})
    return rows
