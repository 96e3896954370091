"""The tiny world's pieces: the picture scorer on the world's own pictures, and a small BPE vocabulary of its own
loaded by the same Emu3Tokenizer."""

import numpy as np

from emu3.mllm import Emu3Tokenizer
from emu3.mllm.tokenizer_files import write_tokenizer_folder
from train.bpe import learn_bpe, write_tiktoken
from train.world import checker, shapes


def test_scorer_reads_every_ground_truth_picture():
    rng = np.random.default_rng(0)
    for attrs in shapes.attributes():
        for _ in range(3):
            record = shapes.sample(rng, *attrs)
            image = shapes.render(*attrs, record["x"], record["y"])
            assert all(checker.score(image, record).values()), (record, checker.describe(image))


def test_scorer_finds_no_shape_on_a_blank_picture():
    blank = np.full((64, 64, 3), 255, np.uint8)
    assert checker.describe(blank) == {"background": "white", "colour": None, "shape": None, "size": None}


def test_small_vocabulary_in_the_released_format(tmp_path):
    texts = [shapes.caption(*a) for a in shapes.attributes()] + list(shapes.QUESTIONS.values())
    ranks = learn_bpe(texts, 150)
    assert 256 < len(ranks) <= 256 + 150 and sorted(ranks.values()) == list(range(len(ranks)))  # stops when every word is one token
    write_tiktoken(tmp_path / "bpe.tiktoken", ranks)
    folder = write_tokenizer_folder(tmp_path / "tok", tmp_path / "bpe.tiktoken", codebook_size=64)
    tok = Emu3Tokenizer.from_pretrained(folder)
    # specials start right after the ranks; 3 image specials + 64 visual tokens end the vocabulary
    assert len(tok) == len(ranks) + 205 + 3 + 3 + 64
    assert tok.convert_tokens_to_ids("<|endoftext|>") == len(ranks)
    assert tok.convert_tokens_to_ids("<|visual token 000063|>") == len(tok) - 1
    text = "a large yellow triangle on a black background"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text.split()) * 2
