"""The README's Python snippets run as written, from any directory, with `.venv/bin/python`: they are extracted
from README.md and executed in a folder that holds tiny random-weight stand-ins for the released folders
(Emu3-VisionTokenizer, Emu3-Gen with its tokenizer files) and a photo.jpg."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    import mindspore as ms

    from emu3.mllm import Emu3Config, Emu3ForCausalLM, Emu3Tokenizer
    from emu3.mllm.tokenizer_files import build_tokenizer_files, find_qwen_tiktoken
    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQImageProcessor, Emu3VisionVQModel

    root = tmp_path_factory.mktemp("readme")
    ms.set_seed(0)
    vq = Emu3VisionVQConfig(codebook_size=64, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[])
    Emu3VisionVQModel.from_config(vq).save_pretrained(str(root / "Emu3-VisionTokenizer"))
    Emu3VisionVQImageProcessor(min_pixels=16 * 16, max_pixels=64 * 64).save_pretrained(root / "Emu3-VisionTokenizer")
    with open(os.path.join(REPO, "configs", "mllm", "tiny.json"), encoding="utf-8") as f:
        tiny = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    Emu3ForCausalLM.from_config(Emu3Config(**{**tiny, "image_area": 32 * 32})).save_pretrained(str(root / "Emu3-Gen"))
    Emu3Tokenizer.from_pretrained(build_tokenizer_files(root / "tok", find_qwen_tiktoken())).save_pretrained(
        root / "Emu3-Gen")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "photo.jpg")
    return root


def test_the_readme_has_the_snippets_this_test_expects():
    blocks = python_blocks()
    assert len(blocks) == 2 and "Emu3VisionVQModel" in blocks[0] and "Emu3ForCausalLM" in blocks[1]


@pytest.mark.parametrize("index, check", [
    (0, "assert codes.shape == (1, 5, 6) and recon.shape == (1, 3, 40, 48)"),
    (1, "assert type(image).__name__ == 'Image' and image.size == (32, 32) and isinstance(chunks[0], str)"),
])
def test_readme_snippet_runs_as_written(stand_ins, index, check):
    code = python_blocks()[index] + "\n" + check + "\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=stand_ins, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
