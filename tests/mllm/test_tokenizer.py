"""Emu3 text tokenizer: exact ids against plain tiktoken, special ids, padding, decoding, save/load, error messages.

Uses the real Qwen vocabulary from the dashscope data file (`pip install --no-deps dashscope==2.0.2`), built into a
temporary tokenizer folder once per module.
"""

import base64
import importlib.util
import json
import os
import pickle
import unicodedata

import numpy as np
import pytest
import tiktoken

from emu3.mllm import special_tokens as st
from emu3.mllm.tokenization_emu3 import Emu3Tokenizer, load_tiktoken_bpe
from emu3.mllm.tokenizer_files import build_tokenizer_files, find_qwen_tiktoken, main as tokenizer_files_main

# Written out here independently of the implementation: Qwen's pre-tokeniser regex and Emu3's special-token order.
QWEN_PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
REFERENCE_SPECIALS = (
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    + [f"<|extra_{i}|>" for i in range(205)]
    + ["<|image token|>", "<|image start|>", "<|image end|>"]
    + [f"<|visual token {k:06d}|>" for k in range(32768)]
)

MODE_G_PROMPT = (
    "<|extra_203|>a portrait of young girl. masterpiece, film grained, best quality.<|image start|>90*90<|image token|>"
)

CORPUS = [
    "",
    "Hello, world! How's it going? I'm fine; they'll say we've done it, haven't they'd?",
    "DON'T SHOUT'S 'quoted' \"double\" it'S mixed-CASE contractions",
    "你好，世界！这是一个测试。東京タワーに行きました。",
    "안녕하세요 Привет, мир! مرحبا بالعالم नमस्ते",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🇨🇳 and ✓ ★ ∑ ∞",
    "12345 and 3.14159, 1,000,000 or 0x1F; ½ ² ٣ ۴",
    "mixed \t tabs\n\nnewlines  \r\n   trailing   ",
    "   leading spaces and\n\n\n\tindent\n",
    "def f(x):\n    return x**2  # comment\n\nprint(f(3) || a<b && c>d)",
    "Cafe\u0301 na\u0308ive \u1e9b\u0323 (decomposed accents are NFC-normalised first)",
    MODE_G_PROMPT,
    "<|extra_203|>You are a helpful assistant. USER: <|image start|>2*3<|image token|>"
    "<|visual token 000000|><|visual token 000001|><|visual token 032767|><|extra_200|>"
    "<|visual token 012345|><|visual token 000007|><|visual token 000042|><|extra_200|><|extra_201|><|image end|>"
    "What is shown?. ASSISTANT: A cat.<|extra_204|>",
    "text with <|endoftext|> and <|im_start|>user<|im_end|> specials inside",
    # near misses of special tokens must stay ordinary text
    "<|extra_205|> <|visual token 32768|> <|Visual token 000001|> <|<|extra_0|>|> <|image start| <||> <| |> |><|",
    "a|b<c>d <|extra_0|><|extra_0|>x<|endoftext|><|endoftext|>",
]


def _nfc(text):
    return unicodedata.normalize("NFC", text)


def _reference_encoding(path):
    ranks = {}
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    specials = {tok: 151643 + i for i, tok in enumerate(REFERENCE_SPECIALS)}
    return tiktoken.Encoding("emu3-reference", pat_str=QWEN_PAT_STR, mergeable_ranks=ranks, special_tokens=specials)


def _qwen_tiktoken():
    # scripts/setup.sh installs dashscope for its vocabulary file, so its absence is a failure, not a skip.
    return find_qwen_tiktoken()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    qwen = _qwen_tiktoken()
    # mktemp creates the folder, so this exercises the "update an existing folder" path of the builder.
    return build_tokenizer_files(tmp_path_factory.mktemp("emu3_tokenizer"), qwen)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return Emu3Tokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="module")
def ref(tok_dir):
    return _reference_encoding(os.path.join(tok_dir, "emu3.tiktoken"))


# ---- special tokens -------------------------------------------------------------------------------------------------
def test_special_token_constants():
    assert (st.BOS_TOKEN, st.EOS_TOKEN, st.PAD_TOKEN) == ("<|extra_203|>", "<|extra_204|>", "<|endoftext|>")
    assert (st.EOL_TOKEN, st.EOF_TOKEN) == ("<|extra_200|>", "<|extra_201|>")
    assert (st.BOS_TOKEN_ID, st.EOS_TOKEN_ID, st.PAD_TOKEN_ID) == (151849, 151850, 151643)
    assert (st.IMG_TOKEN_ID, st.BOI_TOKEN_ID, st.EOI_TOKEN_ID) == (151851, 151852, 151853)
    assert (st.EOL_TOKEN_ID, st.EOF_TOKEN_ID) == (151846, 151847)
    assert (st.SPECIAL_START_ID, st.NUM_EXTRAS, st.VISUAL_TOKEN_OFFSET) == (151643, 205, 151854)
    assert (st.CODEBOOK_SIZE, st.VOCAB_SIZE) == (32768, 184622)
    assert st.visual_token(0) == "<|visual token 000000|>"
    assert st.visual_token(np.int64(32767)) == "<|visual token 032767|>"
    assert st.visual_token_id(0) == 151854 and st.visual_token_id(32767) == 184621
    assert st.visual_token_index(151854 + 77) == 77
    assert st.VISUAL_TOKEN_RE.findall("<|visual token 000012|>x<|visual token 032767|>") == ["000012", "032767"]
    assert st.vision_token_lines() == REFERENCE_SPECIALS[208:]
    for bad in (-1, 32768):
        with pytest.raises(ValueError):
            st.visual_token(bad)
        with pytest.raises(ValueError):
            st.visual_token_id(bad)
    with pytest.raises(TypeError):
        st.visual_token(1.0)


def test_vocabulary_size_and_special_ids(tok):
    assert len(tok) == tok.vocab_size == 184622
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (151849, 151850, 151643)
    assert (tok.eol_token_id, tok.eof_token_id) == (151846, 151847)
    assert (tok.img_token_id, tok.boi_token_id, tok.eoi_token_id) == (151851, 151852, 151853)
    assert tok.eod_id == 151643
    assert tok.convert_tokens_to_ids("<|extra_202|>") == 151848
    for k in (0, 1, 12345, 32767):
        assert tok.convert_tokens_to_ids(st.visual_token(k)) == 151854 + k
    assert tok.convert_ids_to_tokens(184621) == "<|visual token 032767|>"
    assert tok.padding_side == "right"  # transformers' default; inference passes padding_side="left"


def test_list_of_special_strings_maps_one_to_one(tok):
    # What the processor's prefix-constrained decoding does (docs §4.4).
    names = [st.IMG_TOKEN, st.EOI_TOKEN, st.EOS_TOKEN, st.EOL_TOKEN, st.EOF_TOKEN, st.PAD_TOKEN,
             "<|visual token 000000|>", "<|visual token 032767|>"]
    assert tok.encode(names) == [151851, 151853, 151850, 151846, 151847, 151643, 151854, 184621]
    assert tok.convert_tokens_to_ids(names) == tok.encode(names)
    assert tok.convert_tokens_to_ids([b"hello", "hello"]) == [tok.encode("hello")[0]] * 2
    with pytest.raises(KeyError, match="unknown token"):
        tok.convert_tokens_to_ids("<|extra_205|>")


# ---- encoding -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", CORPUS)
def test_encode_matches_plain_tiktoken(tok, ref, text):
    expected = ref.encode(_nfc(text), allowed_special="all")
    assert tok.encode(text) == expected
    assert tok(text)["input_ids"] == expected
    pieces = tok.tokenize(text)
    assert tok.convert_tokens_to_ids(pieces) == expected
    assert tok.convert_tokens_to_string(pieces) == _nfc(text)


def test_encode_matches_tiktoken_on_special_token_fragments(tok, ref):
    # Random mixes of special-token fragments stress the boundary handling around specials.
    import random

    fragments = ["<|", "|>", "<", ">", "|", "extra_1", "extra_203", "endoftext", "visual token 000001", "image start",
                 " ", "a", "\n", "é", "9", "<|extra_0|>", "<|visual token 032767|>", "'s", "😀", "\ud800"]
    rng = random.Random(0)
    for _ in range(300):  # the reference needs ~7 ms per call with allowed_special="all"
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 12)))
        assert tok.encode(text) == ref.encode(_nfc(text), allowed_special="all"), repr(text)


def test_encode_with_explicit_allowed_special(tok, ref):
    text = "a <|extra_203|> b <|image start|>"
    ordinary = [ref.decode_single_token_bytes(i) for i in ref.encode_ordinary(text)]
    assert tok.tokenize(text, allowed_special=set()) == ordinary
    assert tok.encode(text) == ref.encode(text, allowed_special="all")


def test_numbers_are_split_into_single_digits(tok, ref):
    ids = tok.encode("12345")
    assert ids == [ref.encode_single_token(d) for d in (b"1", b"2", b"3", b"4", b"5")]
    assert tok.convert_ids_to_tokens(ids) == [b"1", b"2", b"3", b"4", b"5"]


def test_nfc_normalisation(tok, ref):
    decomposed, composed = "Cafe\u0301", "Caf\u00e9"
    assert tok.encode(decomposed) == tok.encode(composed) == ref.encode_ordinary(composed)
    assert tok.encode(decomposed) != ref.encode_ordinary(decomposed)


def test_mode_g_prompt(tok):
    ids = tok.encode(MODE_G_PROMPT)
    assert ids[0] == 151849 and ids[-1] == 151851
    boi = ids.index(151852)
    header = ids[boi + 1:-1]
    assert tok.convert_ids_to_tokens(header) == [b"9", b"0", b"*", b"9", b"0"]
    assert tok.decode(ids) == MODE_G_PROMPT


def test_visual_token_string(tok):
    codes = [0, 5, 32767, 42]
    text = st.BOI_TOKEN + "".join(st.visual_token(k) for k in codes) + st.EOL_TOKEN
    assert tok.encode(text) == [151852] + [st.visual_token_id(k) for k in codes] + [151846]


# ---- decoding -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", CORPUS)
def test_decode_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == _nfc(text)


def test_decode_accepts_arrays_and_replaces_invalid_utf8(tok, ref):
    import mindspore as ms

    ids = tok.encode("你好 world")
    assert tok.decode(np.array(ids)) == tok.decode(ms.Tensor(ids, ms.int32)) == "你好 world"
    assert tok.batch_decode(np.array([ids, ids])) == ["你好 world"] * 2
    # A lone byte of a multi-byte character decodes to U+FFFD (errors="replace").
    partial = ref.encode_single_token(b"\xe4")
    assert tok.decode([partial]) == "\ufffd"
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([184622])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-100])


def test_skip_special_tokens(tok):
    text = CORPUS[12]  # Mode-U style prompt with visual tokens and specials
    ids = tok.encode(text)
    expected = "You are a helpful assistant. USER: 2*3What is shown?. ASSISTANT: A cat."
    assert tok.decode(ids, skip_special_tokens=True) == expected
    assert all(i < 151643 for i in tok.encode(tok.decode(ids, skip_special_tokens=True)))
    assert tok.batch_decode([ids], skip_special_tokens=True)[0] == tok.decode(ids, skip_special_tokens=True)
    assert "<|image start|>" in tok.decode(ids)


# ---- batching, padding, truncation, tensors ------------------------------------------------------------------------
def test_left_padding_with_attention_mask(tok):
    texts = [MODE_G_PROMPT, "<|extra_203|>a cat"]
    short = tok.encode(texts[1])
    enc = tok(texts, padding="longest", padding_side="left", return_tensors="np")
    n = len(tok.encode(texts[0]))
    assert enc["input_ids"].shape == enc["attention_mask"].shape == (2, n)
    assert enc["input_ids"].dtype == enc["attention_mask"].dtype == np.int32
    assert enc.input_ids[1].tolist() == [151643] * (n - len(short)) + short
    assert enc.attention_mask[1].tolist() == [0] * (n - len(short)) + [1] * len(short)
    assert enc.attention_mask[0].tolist() == [1] * n


def test_padding_strategies_and_truncation(tok):
    a, b = "one two three four five", "six"
    ids_a, ids_b = tok.encode(a), tok.encode(b)
    out = tok([a, b], padding=True)  # tokenizer default: right
    assert out["input_ids"][1] == ids_b + [151643] * (len(ids_a) - 1)
    assert out["attention_mask"][1] == [1] + [0] * (len(ids_a) - 1)

    out = tok([a, b], padding="max_length", max_length=8, truncation=True)
    assert out["input_ids"] == [ids_a + [151643] * 3, ids_b + [151643] * 7]
    out = tok(a, padding="max_length", max_length=3, truncation=True)  # single text -> flat lists
    assert out["input_ids"] == ids_a[:3] and out["attention_mask"] == [1, 1, 1]
    assert tok([a, b], padding=True, pad_to_multiple_of=4)["input_ids"][0] == ids_a + [151643] * 3

    unpadded = tok([a, b])
    assert unpadded["input_ids"] == [ids_a, ids_b] and unpadded["attention_mask"] == [[1] * 5, [1]]
    with pytest.raises(ValueError, match="padding"):
        tok([a, b], return_tensors="np")
    with pytest.raises(ValueError, match="max_length"):
        tok([a, b], padding="max_length")


def test_text_pair_is_concatenated(tok):
    prompt, answer = "Question?", " Answer."
    assert tok(prompt, answer)["input_ids"] == tok.encode(prompt) + tok.encode(answer)
    ids = tok.encode("a b c d e f", "g h", truncation=True, max_length=5)
    assert ids == tok.encode("a b c") + tok.encode("g h")


def test_mindspore_tensors(tok):
    import mindspore as ms

    enc = tok("<|extra_203|>hello", return_tensors="ms")
    assert isinstance(enc["input_ids"], ms.Tensor) and enc["input_ids"].dtype == ms.int32
    assert enc["input_ids"].shape == (1, 2) and enc["attention_mask"].asnumpy().tolist() == [[1, 1]]


# ---- save / load ----------------------------------------------------------------------------------------------------
def test_save_pretrained_round_trip(tok, tok_dir, tmp_path):
    left = Emu3Tokenizer.from_pretrained(tok_dir, padding_side="left", model_max_length=4096, trust_remote_code=True)
    paths = left.save_pretrained(tmp_path / "saved")
    assert [os.path.basename(p) for p in paths] == ["emu3.tiktoken", "emu3_vision_tokens.txt", "tokenizer_config.json"]
    for name in ("emu3.tiktoken", "emu3_vision_tokens.txt"):  # byte-identical to the built (= released) files
        with open(tmp_path / "saved" / name, "rb") as f1, open(os.path.join(tok_dir, name), "rb") as f2:
            assert f1.read() == f2.read()
    reloaded = Emu3Tokenizer.from_pretrained(tmp_path / "saved")
    assert (reloaded.padding_side, reloaded.model_max_length) == ("left", 4096)
    assert reloaded.encode(CORPUS[12]) == tok.encode(CORPUS[12])
    assert not [f for f in os.listdir(tmp_path / "saved") if f.endswith(".tmp")]


def test_from_pretrained_reads_added_token_dicts(tok_dir, tmp_path):
    folder = tmp_path / "hf_style"
    folder.mkdir()
    for name in ("emu3.tiktoken", "emu3_vision_tokens.txt"):
        os.symlink(os.path.join(tok_dir, name), folder / name)
    config = {"bos_token": {"content": "<|extra_203|>", "lstrip": False}, "eos_token": "<|extra_204|>",
              "model_max_length": 1e30, "padding_side": "left", "auto_map": {"AutoTokenizer": ["x", None]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    t = Emu3Tokenizer.from_pretrained(folder)
    assert (t.bos_token_id, t.eos_token_id, t.padding_side) == (151849, 151850, "left")


def test_pickle_round_trip(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode(CORPUS[5]) == tok.encode(CORPUS[5]) and len(clone) == 184622


# ---- errors ---------------------------------------------------------------------------------------------------------
def test_missing_files_give_clear_errors(tok_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="emu3.mllm.tokenizer_files"):
        Emu3Tokenizer.from_pretrained(tmp_path / "does_not_exist")
    only_vision = tmp_path / "only_vision"
    only_vision.mkdir()
    os.symlink(os.path.join(tok_dir, "emu3_vision_tokens.txt"), only_vision / "emu3_vision_tokens.txt")
    with pytest.raises(FileNotFoundError, match=r"emu3\.tiktoken.*python -m emu3\.mllm\.tokenizer_files"):
        Emu3Tokenizer.from_pretrained(only_vision)
    with pytest.raises(FileNotFoundError, match=r"emu3_vision_tokens\.txt"):
        Emu3Tokenizer(os.path.join(tok_dir, "emu3.tiktoken"), tmp_path / "missing.txt")


def test_malformed_vocabulary_line_is_reported(tmp_path):
    bad = tmp_path / "bad.tiktoken"
    bad.write_bytes(b"IQ== 0\nIg== 1\nnot-base64!! 2\n")
    with pytest.raises(ValueError, match="line 3"):
        load_tiktoken_bpe(bad)
    bad.write_bytes(b"IQ== 0\n\nIg==\n")
    with pytest.raises(ValueError, match="line 3"):
        load_tiktoken_bpe(bad)


def test_inconsistent_vocabulary_is_rejected(tmp_path):
    small = tmp_path / "small.tiktoken"
    small.write_bytes(b"IQ== 0\nIg== 1\n")
    vision = tmp_path / "vision.txt"
    vision.write_text("<|image token|>\n")
    with pytest.raises(ValueError, match="inconsistent"):
        Emu3Tokenizer(small, vision)


def test_builder_reports_missing_dashscope(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps dashscope==2\.0\.2"):
        build_tokenizer_files(tmp_path / "out")
    assert tokenizer_files_main([str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_builder_creates_new_folder_and_never_leaves_half_of_one(tok_dir, tmp_path):
    out = build_tokenizer_files(tmp_path / "new" / "tok", os.path.join(tok_dir, "emu3.tiktoken"))
    assert sorted(os.listdir(out)) == ["emu3.tiktoken", "emu3_vision_tokens.txt", "tokenizer_config.json"]
    with open(os.path.join(out, "emu3_vision_tokens.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == REFERENCE_SPECIALS[208:]

    wrong = tmp_path / "wrong.tiktoken"
    wrong.write_bytes(b"IQ== 0\nIg== 1\n")  # valid format, but not the Qwen vocabulary
    with pytest.raises(ValueError, match="not the Qwen vocabulary"):
        build_tokenizer_files(tmp_path / "failed", wrong)
    assert sorted(os.listdir(tmp_path)) == ["new", "wrong.tiktoken"]  # no output folder, no temp folder


def test_builder_failure_after_writing_leaves_nothing(tok_dir, tmp_path, monkeypatch):
    import emu3.mllm.tokenizer_files as tf

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure while validating")

    monkeypatch.setattr(tf, "Emu3Tokenizer", fail)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "emu3.tiktoken").write_text("old")
    for out in (tmp_path / "fresh", existing):
        with pytest.raises(RuntimeError, match="simulated"):
            tf.build_tokenizer_files(out, os.path.join(tok_dir, "emu3.tiktoken"))
    assert sorted(os.listdir(tmp_path)) == ["existing"]
    assert os.listdir(existing) == ["emu3.tiktoken"] and (existing / "emu3.tiktoken").read_text() == "old"


# ---- the visual-token block is checked, not trusted ----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["drop", "swap"])
def test_a_damaged_visual_token_file_is_refused(tmp_path, damage):
    from emu3.mllm.tokenizer_files import build_tokenizer_files, find_qwen_tiktoken

    folder = build_tokenizer_files(tmp_path / "tok", find_qwen_tiktoken())
    path = os.path.join(folder, "emu3_vision_tokens.txt")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if damage == "drop":
        del lines[3 + 500]  # <|visual token 000500|>
    else:
        lines[3 + 7], lines[3 + 8] = lines[3 + 8], lines[3 + 7]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    expected = "000500" if damage == "drop" else "000007"
    with pytest.raises(ValueError, match=f"token #{int(expected)} is .* instead of '<\\|visual token {expected}\\|>'"):
        Emu3Tokenizer.from_pretrained(folder)


def test_tokenizer_and_model_vocabularies_must_match(tmp_path):
    from emu3.mllm import Emu3Config, Emu3Processor
    from emu3.mllm.tokenizer_files import build_tokenizer_files, find_qwen_tiktoken

    tokenizer = Emu3Tokenizer.from_pretrained(build_tokenizer_files(tmp_path / "tok", find_qwen_tiktoken()))
    Emu3Processor(tokenizer=tokenizer, model_config=Emu3Config())  # the released sizes match
    with pytest.raises(ValueError, match="184622 tokens but the model's vocab_size is 184621"):
        Emu3Processor(tokenizer=tokenizer, model_config=Emu3Config(vocab_size=184621, img_token_id=151851))
