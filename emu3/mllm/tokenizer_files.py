"""Build an Emu3 text-tokenizer folder without the Hugging Face hub.

The released ``BAAI/Emu3-*`` folders ship ``emu3.tiktoken`` (the Qwen BPE vocabulary, 151,643 ranks),
``emu3_vision_tokens.txt`` (image token/start/end + 32,768 visual tokens) and ``tokenizer_config.json``. The BPE file is
byte-for-byte the ``qwen.tiktoken`` data file of the PyPI package ``dashscope`` (2.0.2), and the vision-token file is
fully determined by Emu3's layout, so the folder can be rebuilt offline:

    pip install --no-deps dashscope==2.0.2     # only its data file is used; never imported
    python -m emu3.mllm.tokenizer_files OUT_DIR
"""

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

from emu3.atomic import umask_mode
from emu3.mllm.special_tokens import CODEBOOK_SIZE, NUM_BPE_TOKENS, vision_token_lines
from emu3.mllm.tokenization_emu3 import VOCAB_FILES_NAMES, Emu3Tokenizer, load_tiktoken_bpe

DASHSCOPE_REQUIREMENT = "dashscope==2.0.2"


def find_qwen_tiktoken() -> str:
    """Path of dashscope's ``resources/qwen.tiktoken``, located without importing dashscope (its deps are absent)."""
    spec = importlib.util.find_spec("dashscope")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = os.path.join(folder, "resources", "qwen.tiktoken")
        if os.path.isfile(path):
            return path
    where = f" (dashscope found at {locations}, but without resources/qwen.tiktoken)" if locations else ""
    raise FileNotFoundError(
        f"The Qwen BPE vocabulary qwen.tiktoken was not found{where}. Install it with "
        f"`pip install --no-deps {DASHSCOPE_REQUIREMENT}` or pass its path explicitly (--qwen-tiktoken)."
    )


def _check_qwen_vocabulary(path):
    # A wrong file would silently shift every id, so check that it is exactly ranks 0..151642.
    ranks = load_tiktoken_bpe(path)
    if len(ranks) != NUM_BPE_TOKENS or sorted(ranks.values()) != list(range(NUM_BPE_TOKENS)):
        raise ValueError(f"{path} is not the Qwen vocabulary: expected exactly the ranks 0..{NUM_BPE_TOKENS - 1}")


def build_tokenizer_files(out_dir, qwen_tiktoken_path=None) -> str:
    """Write the released tokenizer files (``emu3.tiktoken`` = Qwen's BPE, ``emu3_vision_tokens.txt`` with 32,768
    visual tokens, ``tokenizer_config.json``) into ``out_dir``; see :func:`write_tokenizer_folder`."""
    src = os.fspath(qwen_tiktoken_path) if qwen_tiktoken_path is not None else find_qwen_tiktoken()
    if not os.path.isfile(src):
        raise FileNotFoundError(f"Qwen vocabulary file not found: {src}")
    _check_qwen_vocabulary(src)
    return write_tokenizer_folder(out_dir, src, CODEBOOK_SIZE)


def write_tokenizer_folder(out_dir, bpe_path, codebook_size) -> str:
    """Write a tokenizer folder in the released format from any BPE file: ``bpe_path`` becomes ``emu3.tiktoken``,
    the specials and ``codebook_size`` visual tokens follow its ranks.

    Everything is first written and validated (by loading an ``Emu3Tokenizer``) in a temporary sibling folder; then
    the folder is renamed into place, or, if ``out_dir`` already exists (e.g. a model folder), each file is moved in
    with an atomic ``os.replace``. A failure therefore never leaves a half-written folder or file. Returns ``out_dir``.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(out_dir) + ".tmp-")
    try:
        vocab_path = os.path.join(tmp_dir, VOCAB_FILES_NAMES["vocab_file"])
        special_path = os.path.join(tmp_dir, VOCAB_FILES_NAMES["special_tokens_file"])
        shutil.copyfile(bpe_path, vocab_path)
        with open(special_path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in vision_token_lines(codebook_size)))
        # Loading the tokenizer checks the whole folder (dense ranks, special ids) before publishing it.
        Emu3Tokenizer(vocab_path, special_path).save_tokenizer_config(tmp_dir)

        if not os.path.exists(out_dir):
            os.chmod(tmp_dir, umask_mode(directory=True))  # mkdtemp creates 0700
            os.rename(tmp_dir, out_dir)
        else:
            if not os.path.isdir(out_dir):
                raise NotADirectoryError(f"{out_dir} exists and is not a folder")
            for name in sorted(os.listdir(tmp_dir)):
                os.replace(os.path.join(tmp_dir, name), os.path.join(out_dir, name))
            os.rmdir(tmp_dir)
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m emu3.mllm.tokenizer_files",
        description="Build an Emu3 text-tokenizer folder (emu3.tiktoken, emu3_vision_tokens.txt, config).",
    )
    parser.add_argument("out_dir", help="folder to create or update (e.g. the LLM checkpoint folder)")
    parser.add_argument(
        "--qwen-tiktoken", default=None,
        help=f"path of qwen.tiktoken (default: the one shipped by `pip install --no-deps {DASHSCOPE_REQUIREMENT}`)",
    )
    args = parser.parse_args(argv)
    try:
        out = build_tokenizer_files(args.out_dir, args.qwen_tiktoken)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote the Emu3 tokenizer files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
