"""The loader refuses tensors of the wrong kind (an int tensor for a float weight) and, when asked, names the
tensors with NaN/inf; by default the scan is skipped (a full pass over the weights)."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from emu3.checkpoint import CheckpointError
from emu3.mllm import Emu3Config, Emu3ForCausalLM

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, img_token_id=3,
            boi_token_id=4, eoi_token_id=5, eol_token_id=6, eof_token_id=7)


@pytest.fixture
def saved(tmp_path):
    Emu3ForCausalLM.from_config(Emu3Config(**TINY)).save_pretrained(str(tmp_path))
    return tmp_path


def _rewrite(folder, name, fn):
    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name] = fn(tensors[name])
    save_file(tensors, str(folder / "model.safetensors"))


def test_an_int_tensor_for_a_float_weight_is_refused(saved):
    _rewrite(saved, "lm_head.weight", lambda t: t.astype(np.int32))
    with pytest.raises(CheckpointError, match="lm_head.weight stored as I32, the model needs Float32"):
        Emu3ForCausalLM.from_pretrained(str(saved))


def test_non_finite_weights_are_named_when_checked(saved):
    def poison(t):
        t = t.copy()
        t[0, 0] = np.nan
        return t

    _rewrite(saved, "model.layers.0.mlp.up_proj.weight", poison)
    Emu3ForCausalLM.from_pretrained(str(saved))  # off by default (documented): loads
    with pytest.raises(CheckpointError, match="NaN/inf values in 1 tensor.*model.layers.0.mlp.up_proj.weight"):
        Emu3ForCausalLM.from_pretrained(str(saved), check_finite=True)
