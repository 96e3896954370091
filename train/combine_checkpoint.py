#!/usr/bin/env python
"""Assemble the released-layout model of a distributed checkpoint from its rank files, offline (mindone's
``ckpt_combine``). Every ``checkpoint-{step}/`` of a distributed run already holds the assembled
``model.safetensors``; this rebuilds it (e.g. after it was deleted, or to check it) from the
``rank-{r}-of-{W}.safetensors`` files, one tensor at a time:

    python train/combine_checkpoint.py --checkpoint_dir RUN/checkpoint-100 [--output_dir OUT]

The output folder (default: the checkpoint folder) gets ``model.safetensors`` (fp32, released names) and, when
it is another folder, the config and tokenizer files, so ``from_pretrained`` and the inference scripts load it.
"""

import argparse
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from safetensors import safe_open  # noqa: E402

from emu3.checkpoint import SINGLE_FILE, write_safetensors  # noqa: E402
from train.checkpointing import PARAM_PREFIX, STATE_FILE, rank_file  # noqa: E402

_RANK_RE = re.compile(r"^rank-(\d+)-of-(\d+)\.safetensors$")


class CombineError(ValueError):
    pass


def rank_files(checkpoint_dir):
    """The rank files of ``checkpoint_dir`` in rank order, after checking that all of them are there."""
    found = {}
    for name in os.listdir(checkpoint_dir):
        match = _RANK_RE.match(name)
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = os.path.join(checkpoint_dir, name)
    if not found:
        raise CombineError(f"{checkpoint_dir} has no rank-*-of-*.safetensors files: is it a checkpoint of a "
                           "distributed run (NPUS > 1)?")
    if len(found) > 1:
        raise CombineError(f"{checkpoint_dir} mixes rank files of runs with {sorted(found)} processes")
    world, files = next(iter(found.items()))
    missing = [rank_file(r, world) for r in range(world) if r not in files]
    if missing:
        raise CombineError(f"{checkpoint_dir} lacks {', '.join(missing)}: copy every rank's file")
    return [files[r] for r in range(world)]


def combine(checkpoint_dir, output_dir=None):
    output_dir = output_dir or checkpoint_dir
    paths = rank_files(checkpoint_dir)
    with open(os.path.join(checkpoint_dir, STATE_FILE), encoding="utf-8") as f:
        sharded = json.load(f).get("sharded_rows", {})
    handles = [safe_open(p, framework="numpy") for p in paths]
    names = [k[len(PARAM_PREFIX):] for k in handles[0].keys() if k.startswith(PARAM_PREFIX)]
    specs = []
    for name in names:
        shape = list(handles[0].get_slice(PARAM_PREFIX + name).get_shape())
        if name in sharded:
            shape[0] = sharded[name]
        specs.append((name, tuple(shape), "float32"))

    def arrays():
        for name in names:
            if name in sharded:
                parts = [h.get_tensor(PARAM_PREFIX + name) for h in handles]
                yield name, np.concatenate(parts)[:sharded[name]]
            else:
                yield name, handles[0].get_tensor(PARAM_PREFIX + name)

    os.makedirs(output_dir, exist_ok=True)
    write_safetensors(os.path.join(output_dir, SINGLE_FILE), specs, arrays())
    if os.path.abspath(output_dir) != os.path.abspath(checkpoint_dir):
        for name in os.listdir(checkpoint_dir):
            if name.endswith((".json", ".txt", ".tiktoken")) and name != STATE_FILE:
                shutil.copy2(os.path.join(checkpoint_dir, name), os.path.join(output_dir, name))
    return output_dir, len(names)


def main(argv=None):
    p = argparse.ArgumentParser(prog="train/combine_checkpoint.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint_dir", required=True, help="a checkpoint-{step} folder of a distributed run")
    p.add_argument("--output_dir", default=None, help="where to write the model (default: the checkpoint folder)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.checkpoint_dir):
        print(f"error: --checkpoint_dir {args.checkpoint_dir!r} is not a folder", file=sys.stderr)
        return 2
    try:
        out, count = combine(args.checkpoint_dir, args.output_dir)
    except CombineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"combined {count} tensors into {os.path.join(out, SINGLE_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
