"""Run folders: ``checkpoint-{step}/`` (a released-layout model + what exact resume needs) and the final model.

A checkpoint folder holds ``config.json`` and ``model.safetensors`` (released tensor names, fp32: loadable by
``Emu3ForCausalLM.from_pretrained`` and the inference scripts), the tokenizer files, ``optimizer.safetensors``
(moments, step, fp32 master weights) and ``trainer_state.json`` (step, data position, loss scale, RNG, log).
It is written into a hidden temporary folder and renamed into place, so a crash mid-save never leaves a
half-written checkpoint as the newest; older checkpoints are pruned only after the new one is complete.

A distributed run (``Ranks`` of size > 1) writes the same folder, plus one ``rank-{r}-of-{W}.safetensors`` per
rank in place of ``optimizer.safetensors``: that rank's optimizer state and its part of every parameter
(``param.NAME``: its rows of a sharded tensor; a replicated one on rank 0 only), the shards from which
``train/combine_checkpoint.py`` rebuilds the model offline. ``model.safetensors`` is streamed tensor by tensor by
rank 0 while the ranks gather each sharded tensor in turn, so no rank ever holds more than its shards plus one
whole tensor.
"""

import glob
import json
import os
import re
import shutil
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

from emu3.arrays import to_numpy
from emu3.atomic import umask_mode
from emu3.checkpoint import SINGLE_FILE, checkpoint_files, read_header, write_safetensors

STATE_FILE = "trainer_state.json"
PARAM_PREFIX = "param."  # a rank file's part of a parameter
OPTIMIZER_FILE = "optimizer.safetensors"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Fields that must agree between a checkpoint and the run resuming it.
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_key_value_heads")


class Ranks:
    """Who writes what in a save: ``rank`` of ``size`` processes, ``barrier()`` waits for all of them."""

    def __init__(self, rank=0, size=1, barrier=None):
        self.rank, self.size = rank, size
        self._barrier = barrier

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        if self.size > 1:
            self._barrier()


SINGLE_PROCESS = Ranks()


def rank_file(rank, size):
    return f"rank-{rank}-of-{size}.safetensors"


class ModelExport:
    """The tensors of an exported model, produced one at a time: ``specs`` [(name, shape, dtype)] and
    ``arrays()`` yielding (name, array) in that order. A dict {name: tensor or array} is the in-memory case."""

    def __init__(self, specs, arrays):
        self.specs, self.arrays = list(specs), arrays

    @classmethod
    def of(cls, weights):
        if isinstance(weights, cls):
            return weights
        arrays = _numpy_tensors(weights)
        arrays = {k: v.astype(np.float32, copy=False) if v.dtype.kind == "f" else v for k, v in arrays.items()}
        return cls([(k, v.shape, v.dtype) for k, v in arrays.items()], lambda: iter(arrays.items()))


def checkpoints(output_dir):
    """Complete checkpoints in ``output_dir``, oldest first: [(step, path)]."""
    found = []
    for path in glob.glob(os.path.join(output_dir, "checkpoint-*")):
        match = _CHECKPOINT_RE.match(os.path.basename(path))
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def remove_stale_temporaries(output_dir):
    """Leftovers of saves that were interrupted (never a complete checkpoint)."""
    for path in glob.glob(os.path.join(output_dir, ".tmp-checkpoint-*")):
        shutil.rmtree(path, ignore_errors=True)


def _numpy_tensors(named):
    return {name: np.require(to_numpy(value), requirements="C") for name, value in named.items()}


def write_model(directory, weights, config, tokenizer, ranks=SINGLE_PROCESS):
    """config.json, model.safetensors (fp32, released names) and the tokenizer files into ``directory``.
    ``weights``: a dict or a ``ModelExport``; with several ranks every rank iterates it (it may gather) and rank 0
    writes."""
    export = ModelExport.of(weights)
    if ranks.is_main:
        os.makedirs(directory, exist_ok=True)
        config.save_pretrained(directory)
        write_safetensors(os.path.join(directory, SINGLE_FILE), export.specs, export.arrays())
        tokenizer.save_pretrained(directory)
    else:
        for _ in export.arrays():
            pass
    ranks.barrier()


def save_checkpoint(output_dir, step, weights, config, tokenizer, optimizer_state, trainer_state, save_total_limit,
                    ranks=SINGLE_PROCESS, keep=None):
    """Write ``output_dir/checkpoint-{step}`` atomically, then prune the oldest beyond ``save_total_limit`` but the
    checkpoint named ``keep`` (the best one). ``optimizer_state``: this rank's tensors (with several ranks: its rank
    file's), or a function returning them once the model has been written."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    if ranks.size == 1:
        tmp = tempfile.mkdtemp(dir=output_dir, prefix=f".tmp-checkpoint-{step}-")
    else:  # one name every rank knows; rank 0 clears it
        tmp = os.path.join(output_dir, f".tmp-checkpoint-{step}-all")
        if ranks.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        ranks.barrier()
    try:
        write_model(tmp, weights, config, tokenizer, ranks)
        name = OPTIMIZER_FILE if ranks.size == 1 else rank_file(ranks.rank, ranks.size)
        if callable(optimizer_state):
            optimizer_state = optimizer_state()
        save_file(_numpy_tensors(optimizer_state), os.path.join(tmp, name))
        ranks.barrier()
        if ranks.is_main:
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(trainer_state, f, indent=2)
            os.chmod(tmp, umask_mode(directory=True))
            if os.path.exists(final):  # the same step saved again (after a resume): swap, then drop the old one
                old = tempfile.mkdtemp(dir=output_dir, prefix=f".tmp-checkpoint-{step}-old-")
                os.rename(final, os.path.join(old, "old"))
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
    finally:
        if ranks.is_main and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if save_total_limit and ranks.is_main:
        for _, path in checkpoints(output_dir)[:-save_total_limit]:
            if os.path.basename(path) != keep:
                shutil.rmtree(path, ignore_errors=True)
    ranks.barrier()
    return final


def copy_model_files(checkpoint, directory):
    """A checkpoint's model (config, weights, tokenizer files: everything but the optimizer and trainer state)
    into ``directory``, each file replaced atomically."""
    for name in sorted(os.listdir(checkpoint)):
        source = os.path.join(checkpoint, name)
        if name in (OPTIMIZER_FILE, STATE_FILE) or name.startswith("rank-") or not os.path.isfile(source):
            continue
        tmp = os.path.join(directory, f".{name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, os.path.join(directory, name))


def check_resumable(path, config, fields=ARCHITECTURE_FIELDS):
    """Raise ValueError unless ``path`` is a complete checkpoint of a model with ``config``'s architecture
    (the config ``fields`` that must agree)."""
    state_path = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_path):
        raise ValueError(f"--resume {path!r} is not a complete checkpoint (no {STATE_FILE}); pass a checkpoint-"
                         "{step} folder written by the training script")
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    differ = [f"{k} {saved.get(k)} vs {getattr(config, k)}" for k in fields
              if saved.get(k) != getattr(config, k)]
    if differ:
        raise ValueError(f"checkpoint {path!r} was trained with another model config ({'; '.join(differ)}; "
                         "checkpoint vs this run): resume with the same model, or start a new "
                         "--output_dir")


def process_layout(world_size, sequence_parallel_shards, zero_stage):
    """How a run's state is split over processes; a checkpoint resumes only under the same layout."""
    return {"world_size": world_size, "sequence_parallel_shards": sequence_parallel_shards,
            "ms_zero_stage": zero_stage if world_size > 1 else 0}


def check_same_layout(path, layout):
    """Raise ValueError unless checkpoint ``path`` was written under ``layout`` (``process_layout``)."""
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
        state = json.load(f)
    saved = process_layout(state.get("world_size", 1), state.get("sequence_parallel_shards", 1),
                           state.get("ms_zero_stage", 0))
    if saved != layout:
        was = ", ".join(f"{k} {v}" for k, v in saved.items())
        now = ", ".join(f"{k} {v}" for k, v in layout.items())
        raise ValueError(f"checkpoint {path!r} was written by a run with {was}; this run has {now}. Resume with "
                         f"NPUS={saved['world_size']} SP={saved['sequence_parallel_shards']} "
                         f"ZERO_STAGE={saved['ms_zero_stage']}, or start a new OUTPUT_DIR / --output_dir with "
                         f"MODEL_PATH / --model_name_or_path {path} (its model.safetensors is the whole model)")


def load_resume_state(path, optimizer_names, ranks=SINGLE_PROCESS):
    """(trainer_state, this rank's optimizer tensors) of checkpoint ``path``, after checking that they fit."""
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
        state = json.load(f)
    name = OPTIMIZER_FILE if ranks.size == 1 else rank_file(ranks.rank, ranks.size)
    if not os.path.isfile(os.path.join(path, name)):
        raise ValueError(f"checkpoint {path!r} has no {name}: it was written by another number of processes")
    tensors = load_file(os.path.join(path, name))
    tensors = {k: v for k, v in tensors.items() if not k.startswith(PARAM_PREFIX)}
    missing = sorted(set(optimizer_names) - set(tensors))
    extra = sorted(set(tensors) - set(optimizer_names))
    if missing or extra:
        raise ValueError(f"checkpoint {path!r} optimises other parameters than this run ({len(missing)} missing, "
                         f"{len(extra)} extra, e.g. {(missing + extra)[:3]}): was --trainable_hidden_layers or "
                         "--fp16 different? Resume with the same flags, or start a new --output_dir")
    return state, tensors


def read_tensors_from(path, names):
    """{name: array} of the named tensors of one safetensors file."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        return {name: f.get_tensor(name) for name in names}


def read_tensors(directory, names):
    """{name: array} of the named tensors of a model folder (single file or sharded), read one by one."""
    from safetensors import safe_open

    if not names:
        return {}
    header = read_header(checkpoint_files(directory))
    out = {}
    for name in names:
        with safe_open(header[name][2], framework="numpy") as f:
            out[name] = f.get_tensor(name)
    return out
