"""config.json problems are named (field and expected type), special ids must lie in the vocabulary, and the
presets in configs/ load (the tiny LLM preset works with the project's tokenizer)."""

import json
import os

import numpy as np
import pytest

from emu3.arrays import to_numpy
from emu3.mllm import Emu3Config
from emu3.tokenizer import Emu3VisionVQConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, content):
    (tmp_path / "config.json").write_text(json.dumps(content))
    return str(tmp_path)


def test_a_json_list_is_named(tmp_path):
    with pytest.raises(ValueError, match="must hold a JSON object of settings, got a JSON list"):
        Emu3Config.from_pretrained(write(tmp_path, [1, 2]))


@pytest.mark.parametrize("field, value, expected", [
    ("hidden_size", "64", "hidden_size must be an integer, got '64'"),
    ("num_hidden_layers", True, "num_hidden_layers must be an integer, got True"),
    ("rms_norm_eps", "1e-5", "rms_norm_eps must be a number"),
])
def test_wrong_types_name_the_field(tmp_path, field, value, expected):
    with pytest.raises(ValueError, match=expected):
        Emu3Config.from_pretrained(write(tmp_path, {field: value}))


def test_vision_config_types_are_named(tmp_path):
    with pytest.raises(ValueError, match="ch must be an integer"):
        Emu3VisionVQConfig.from_pretrained(write(tmp_path, {"ch": "256"}))


def test_special_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"special token ids must lie in \[0, vocab_size=32000\): .*img_token_id=151851"):
        Emu3Config(vocab_size=32000, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@pytest.mark.parametrize("name", ["small", "tiny"])
def test_presets_load(name):
    config = Emu3Config.from_pretrained(os.path.join(REPO, "configs", "mllm", f"{name}.json"))
    assert config.vocab_size in (32000, 184622)


def test_tiny_preset_works_with_the_project_tokenizer(tmp_path):
    from emu3.mllm import Emu3ForCausalLM, Emu3Processor, Emu3Tokenizer
    from emu3.mllm.tokenizer_files import build_tokenizer_files, find_qwen_tiktoken

    config = Emu3Config.from_pretrained(os.path.join(REPO, "configs", "mllm", "tiny.json"))
    tokenizer = Emu3Tokenizer.from_pretrained(build_tokenizer_files(tmp_path / "tok", find_qwen_tiktoken()),
                                              padding_side="left")
    processor = Emu3Processor(tokenizer=tokenizer, model_config=config)
    prompt = processor(text=["a red circle"], mode="G", ratio="1:1", image_area=config.image_area,
                       return_tensors="np")
    model = Emu3ForCausalLM.from_config(config)
    out = model.generate(prompt["input_ids"], attention_mask=prompt["attention_mask"], max_new_tokens=2,
                         mode="pynative")
    out = to_numpy(out)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 2 and np.all(out < config.vocab_size)
