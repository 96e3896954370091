"""Bad input to the vision tokenizer: each case is a clear error and nothing is written."""

import json
import os

import numpy as np
import pytest

import mindspore as ms

from emu3.checkpoint import CheckpointError
from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQImageProcessor, Emu3VisionVQModel

TINY = dict(codebook_size=64, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    model = Emu3VisionVQModel(Emu3VisionVQConfig(**TINY))
    model.save_pretrained(str(directory))
    return model, directory


def _listing(directory):
    return sorted((p, os.path.getsize(os.path.join(directory, p))) for p in os.listdir(directory))


def test_seven_by_seven_image_is_refused(saved):
    model, _ = saved
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(ms.Tensor(np.zeros((1, 3, 7, 7), np.float32)))
    processor = Emu3VisionVQImageProcessor(spatial_factor=8)
    from PIL import Image
    with pytest.raises(ValueError, match="7"):
        processor(Image.new("RGB", (7, 7)))


def test_six_to_one_strip_is_refused():
    from PIL import Image
    with pytest.raises(ValueError, match="5"):
        Emu3VisionVQImageProcessor()(Image.new("RGB", (600, 100)))


def test_video_of_five_frames_is_refused(saved):
    model, _ = saved
    with pytest.raises(ValueError, match="multiple of 4 frames"):
        model.encode(ms.Tensor(np.zeros((1, 5, 3, 8, 8), np.float32)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(saved, bad):
    model, _ = saved
    pixels = np.zeros((1, 3, 8, 8), np.float32)
    pixels[0, 1, 2, 3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        model.encode(ms.Tensor(pixels))


@pytest.mark.parametrize("bad", [-1, 64, 10**6])
def test_codes_outside_the_codebook_are_refused(saved, bad):
    model, _ = saved
    codes = np.zeros((1, 2, 2), np.int32)
    codes[0, 1, 1] = bad
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        model.decode(ms.Tensor(codes))


def test_float_codes_are_refused(saved):
    model, _ = saved
    with pytest.raises(TypeError, match="integer"):
        model.decode(ms.Tensor(np.zeros((1, 2, 2), np.float32)))


def test_truncated_safetensors_is_a_clear_error(saved, tmp_path):
    _, directory = saved
    for name in os.listdir(directory):
        data = open(os.path.join(directory, name), "rb").read()
        open(tmp_path / name, "wb").write(data[: len(data) // 2] if name.endswith(".safetensors") else data)
    before = _listing(tmp_path)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Emu3VisionVQModel.from_pretrained(str(tmp_path))
    assert _listing(tmp_path) == before


def test_garbage_safetensors_is_a_clear_error(saved, tmp_path):
    _, directory = saved
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Emu3VisionVQModel.from_pretrained(str(tmp_path))


def test_config_weights_mismatch_names_the_tensors(saved, tmp_path):
    _, directory = saved
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    config = json.loads((directory / "config.json").read_text())
    config["codebook_size"] = 128  # the weights were saved with 64
    config["num_res_blocks"] = 2  # and with one block per stage
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        Emu3VisionVQModel.from_pretrained(str(tmp_path))
    message = str(info.value)
    assert "quantize.embedding.weight [64, 4] vs [128, 4]" in message
    assert "100 missing from the checkpoint: decoder.time_res_stack.1.conv1.conv.bias" in message, message


def test_unexpected_tensor_is_named(saved, tmp_path):
    from safetensors.numpy import load_file, save_file
    _, directory = saved
    tensors = load_file(str(directory / "model.safetensors"))
    tensors["encoder.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"unexpected in the checkpoint: encoder\.extra\.weight"):
        Emu3VisionVQModel.from_pretrained(str(tmp_path))


def test_missing_folder_contents(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Emu3VisionVQModel.from_pretrained(str(tmp_path))
    Emu3VisionVQConfig(**TINY).save_pretrained(str(tmp_path))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Emu3VisionVQModel.from_pretrained(str(tmp_path))


def test_invalid_config_is_explained():
    with pytest.raises(ValueError, match="embed_dim .* must equal z_channels"):
        Emu3VisionVQConfig(embed_dim=8, z_channels=4)
