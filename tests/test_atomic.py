"""Saved files appear whole or not at all, leave no temporary files when interrupted, and get the permissions
the umask gives any new file."""

import os
import stat

import pytest

from emu3 import checkpoint
from emu3.atomic import atomic_write
from emu3.mllm import Emu3Config, Emu3ForCausalLM

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            img_token_id=3, boi_token_id=4, eoi_token_id=5, eol_token_id=6, eof_token_id=7)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_saved_model_files_follow_the_umask(tmp_path, umask_022):
    Emu3ForCausalLM.from_config(Emu3Config(**TINY)).save_pretrained(str(tmp_path))
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


def test_interrupted_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = Emu3ForCausalLM.from_config(Emu3Config(**TINY))
    model.save_pretrained(str(tmp_path))
    before = (tmp_path / "model.safetensors").read_bytes()

    def interrupted(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"], "no hidden temporary file"
    assert (tmp_path / "model.safetensors").read_bytes() == before, "the previous save is intact"


def test_atomic_write_replaces_whole_files(tmp_path, umask_022):
    path = tmp_path / "a.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["a.txt"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
