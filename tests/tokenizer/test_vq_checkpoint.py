"""save_pretrained / from_pretrained round trip in the released layout (single file and sharded index)."""

import json
import shutil

import numpy as np

import mindspore as ms
from safetensors.numpy import load_file, save_file

from emu3.nn.precision import PrecisionPolicy
from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel

TINY = dict(codebook_size=64, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[1])


def _state(model):
    return {name: p.asnumpy() for name, p in model.parameters_and_names()}


def test_round_trip_single_file(tmp_path):
    model = Emu3VisionVQModel(Emu3VisionVQConfig(**TINY))
    model.save_pretrained(str(tmp_path))
    on_disk = load_file(str(tmp_path / "model.safetensors"))
    assert set(on_disk) == set(_state(model))
    assert on_disk["encoder.time_res_stack.0.norm1.num_batches_tracked"].shape == ()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ch_mult"] == [1, 2] and config["model_type"] == "Emu3VisionVQ"
    loaded = Emu3VisionVQModel.from_pretrained(str(tmp_path))
    for name, value in _state(model).items():
        np.testing.assert_array_equal(_state(loaded)[name], value, err_msg=name)


def test_sharded_index_is_read(tmp_path):
    model = Emu3VisionVQModel(Emu3VisionVQConfig(**TINY))
    model.save_pretrained(str(tmp_path / "single"))
    tensors = load_file(str(tmp_path / "single" / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    out = tmp_path / "sharded"
    out.mkdir()
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(out / shard))
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(tmp_path / "single" / "config.json", out / "config.json")
    loaded = Emu3VisionVQModel.from_pretrained(str(out))
    for name, value in _state(model).items():
        np.testing.assert_array_equal(_state(loaded)[name], value, err_msg=name)


def test_bf16_policy_keeps_fp32_islands_and_fp16_conv3d(tmp_path):
    """The Ascend policy: bf16 everywhere except BatchNorm3d/quantizer (fp32) and Conv3d (fp16)."""
    Emu3VisionVQModel(Emu3VisionVQConfig(**TINY)).save_pretrained(str(tmp_path))
    model = Emu3VisionVQModel.from_pretrained(str(tmp_path), precision=PrecisionPolicy.for_dtype("bf16"))
    dtypes = {name: p.dtype for name, p in model.parameters_and_names()}
    assert dtypes["encoder.conv_in.weight"] == ms.bfloat16
    assert dtypes["encoder.time_res_stack.0.norm1.running_var"] == ms.float32
    assert dtypes["encoder.time_res_stack.0.conv1.conv.weight"] == ms.float16
    assert dtypes["quantize.embedding.weight"] == ms.float32
    assert dtypes["encoder.time_res_stack.0.norm1.num_batches_tracked"] == ms.int64
    assert model.encoder.time_res_stack[0].norm1.compute_dtype == ms.float32
    assert model.encoder.time_conv[0].conv.conv.compute_dtype == ms.float16
