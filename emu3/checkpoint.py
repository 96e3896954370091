"""The one loader: safetensors checkpoints (single file or sharded index) <-> MindSpore parameters.

Loading is strict and checked before anything is written: every tensor name in the checkpoint must map to
exactly one parameter of the model with the same shape, or a ``CheckpointError`` lists what is missing,
unexpected or mis-shaped. Tensors are read one at a time and cast to the parameter's dtype as they go, so the
peak host memory stays near the size of the model in its target dtype.
"""

import json
import os

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

import mindspore as ms
from mindspore import Tensor

from .arrays import to_numpy
from .atomic import atomic_path

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is; the message says what and where."""


def checkpoint_files(directory):
    """The safetensors files of a checkpoint folder, from its index when sharded."""
    single = os.path.join(directory, SINGLE_FILE)
    index = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({e}); re-download or re-save it") from e
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        if missing:
            raise CheckpointError(f"shards named in {index} are missing: {missing}")
        return [os.path.join(directory, f) for f in files]
    if os.path.isfile(single):
        return [single]
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory!r}; pass a folder saved by save_pretrained "
                          "or downloaded from the BAAI release")


def read_header(files):
    """{name: (shape, dtype string, file)} from the files' headers only (no tensor data is read)."""
    entries = {}
    for path in files:
        try:
            with safe_open(path, framework="numpy") as f:
                for name in f.keys():
                    tensor_slice = f.get_slice(name)
                    if name in entries:
                        raise CheckpointError(f"tensor {name!r} appears in both {entries[name][2]} and {path}")
                    entries[name] = (tuple(tensor_slice.get_shape()), tensor_slice.get_dtype(), path)
        except SafetensorError as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated or "
                                  "corrupt — download or save it again") from e
    return entries


def _format_problems(missing, unexpected, mismatched, limit=20):
    lines = []
    for title, items in (("missing from the checkpoint", missing), ("unexpected in the checkpoint", unexpected),
                         ("shape or dtype mismatch (checkpoint vs model)", mismatched)):
        if items:
            shown = ", ".join(items[:limit]) + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")
            lines.append(f"  {len(items)} {title}: {shown}")
    return "\n".join(lines)


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_INT_DTYPES = ("I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64")


def _dtype_fits(stored, param_dtype):
    """A float parameter takes any float tensor (cast on load), an integer one any integer tensor."""
    is_float = param_dtype in (ms.float16, ms.bfloat16, ms.float32, ms.float64)
    return stored in (_FLOAT_DTYPES if is_float else _INT_DTYPES)


def load_checkpoint(model, directory, rename=None, check_finite=False):
    """Load a checkpoint folder into ``model`` strictly.

    ``rename(name)`` maps a checkpoint name to ours, or to None for a tensor that belongs to another model
    stored in the same files (it is then skipped, not reported as unexpected). ``check_finite`` also reads every
    value for NaN/inf (a full pass over the weights, hence off by default) and names the tensors that have them.
    """
    rename = rename or (lambda name: name)
    params = dict(model.parameters_and_names())
    header = read_header(checkpoint_files(directory))
    by_param = {}
    for name, (shape, dtype, path) in header.items():
        ours = rename(name)
        if ours is not None:
            by_param.setdefault(ours, []).append(name)
    duplicates = [f"{k} <- {v}" for k, v in by_param.items() if len(v) > 1]
    if duplicates:
        raise CheckpointError(f"several checkpoint tensors map to one parameter: {duplicates}")
    missing = sorted(set(params) - set(by_param))
    unexpected = sorted(by_param[k][0] for k in set(by_param) - set(params))
    mismatched = sorted(
        f"{names[0]} {list(header[names[0]][0])} vs {list(params[k].shape)}"
        for k, names in by_param.items() if k in params and tuple(header[names[0]][0]) != tuple(params[k].shape)
    )
    mismatched += sorted(
        f"{names[0]} stored as {header[names[0]][1]}, the model needs {params[k].dtype}"
        for k, names in by_param.items() if k in params and not _dtype_fits(header[names[0]][1], params[k].dtype))
    if missing or unexpected or mismatched:
        raise CheckpointError(f"checkpoint in {directory!r} does not fit {type(model).__name__} "
                              f"(does config.json match the weights?):\n{_format_problems(missing, unexpected, mismatched)}")
    non_finite = []
    # Validated: now stream the data, one tensor at a time, shard by shard.
    for path in sorted({entry[2] for entry in header.values()}):
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                ours = rename(name)
                if ours is None:
                    continue
                param = params[ours]
                try:
                    array = f.get_tensor(name)
                except SafetensorError as e:
                    raise CheckpointError(f"cannot read {name!r} from {path}: {e}") from e
                if check_finite and array.dtype.kind == "f" and not np.isfinite(array).all():
                    non_finite.append(name)
                param.set_data(_to_param_dtype(array, param.dtype))
    if non_finite:
        raise CheckpointError(f"checkpoint in {directory!r} has NaN/inf values in {len(non_finite)} tensor(s): "
                              f"{', '.join(non_finite[:20])}; the file is damaged or the training diverged")
    return model


_NUMPY_DTYPES = {ms.float32: np.float32, ms.float16: np.float16, ms.int64: np.int64, ms.int32: np.int32}


def _to_param_dtype(array, dtype):
    """One host copy per tensor: cast in numpy where it has the dtype, else (bf16) through one MindSpore cast."""
    if dtype in _NUMPY_DTYPES:
        return Tensor(array.astype(_NUMPY_DTYPES[dtype], copy=False))
    return Tensor(array).astype(dtype)


def save_checkpoint(model, directory, rename=None, metadata=None):
    """Write ``model``'s parameters to ``directory/model.safetensors`` (atomically: temp file, then rename)."""
    rename = rename or (lambda name: name)
    save_tensors({rename(name): p for name, p in model.parameters_and_names()}, directory, metadata)


def save_tensors(tensors, directory, metadata=None):
    """Write ``{name: tensor or array}`` to ``directory/model.safetensors`` (atomically)."""
    os.makedirs(directory, exist_ok=True)
    arrays = {name: np.require(to_numpy(value), requirements="C") for name, value in tensors.items()}  # no copy
    with atomic_path(os.path.join(directory, SINGLE_FILE)) as tmp:
        save_file(arrays, tmp, metadata={"format": "pt", **(metadata or {})})


_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32", "uint8": "U8",
                       "bool": "BOOL"}


def write_safetensors(path, specs, arrays, metadata=None):
    """Write a safetensors file tensor by tensor: ``specs`` [(name, shape, numpy dtype)] fixes the header up front,
    then ``arrays`` yields (name, array) in the same order, each written as it comes and dropped. Peak memory is
    one tensor, so a process can write a model it never holds whole (ZeRO-3 export). Atomic, as every write."""
    header, offset = {}, 0
    for name, shape, dtype in specs:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[np.dtype(dtype).name], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    expected = iter(specs)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for name, array in arrays:
            want_name, shape, dtype = next(expected)
            array = np.asarray(array, dtype=dtype)  # (not ascontiguousarray: it turns a 0-d array into 1-d)
            if not array.flags.c_contiguous:
                array = array.copy()
            if name != want_name or tuple(array.shape) != tuple(shape):
                raise ValueError(f"write_safetensors: got {name} {array.shape}, expected {want_name} {tuple(shape)}")
            f.write(array.tobytes())
        if next(expected, None) is not None:
            raise ValueError("write_safetensors: fewer tensors than the header announces")
