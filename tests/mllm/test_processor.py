"""Emu3Processor: exact prompt strings/ids (docs §4.1), generation sizes (§4.2), image tokenization with padding
(§4.3), decoding of token streams into text + images (§4.5), and the errors for bad input.

Uses the real tokenizer (built from dashscope's Qwen vocabulary into a temporary folder) and a tiny random vision
tokenizer with the released spatial factor 8 (ch_mult of length 4), so grids are small: a 16x24 image is 2x3 tokens.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mindspore as ms

from emu3.mllm.processing_emu3 import (
    Emu3Processor,
    calculate_generate_size,
    check_prompt_budget,
    image_token_budget,
)
from emu3.mllm.tokenization_emu3 import Emu3Tokenizer
from emu3.mllm.tokenizer_files import build_tokenizer_files, find_qwen_tiktoken
from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQImageProcessor, Emu3VisionVQModel

# Written out independently of the implementation (docs §4.1 / §5.1).
BOS, BOI, EOI, IMG, EOL, EOF, EOS, PAD = (
    "<|extra_203|>", "<|image start|>", "<|image end|>", "<|image token|>", "<|extra_200|>", "<|extra_201|>",
    "<|extra_204|>", "<|endoftext|>",
)
GIRL = "a portrait of young girl. masterpiece, film grained, best quality."
MODE_G_PROMPT = (
    "<|extra_203|>a portrait of young girl. masterpiece, film grained, best quality.<|image start|>90*90<|image token|>"
)
NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)


def vtok(k):
    return f"<|visual token {k:06d}|>"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = build_tokenizer_files(tmp_path_factory.mktemp("emu3_tokenizer"), find_qwen_tiktoken())
    return Emu3Tokenizer.from_pretrained(folder, padding_side="left")


@pytest.fixture(scope="module")
def vq():
    ms.set_seed(0)
    config = Emu3VisionVQConfig(codebook_size=64, ch=32, ch_mult=[1, 2, 2, 2], num_res_blocks=1, attn_resolutions=[])
    return Emu3VisionVQModel.from_config(config)


@pytest.fixture(scope="module")
def image_processor():
    # Small pixel bounds so that the test images keep their size (smart_resize keeps 8-aligned sizes in bounds).
    return Emu3VisionVQImageProcessor(min_pixels=8 * 8, max_pixels=64 * 64, spatial_factor=8)


@pytest.fixture(scope="module")
def proc(image_processor, vq, tok):
    return Emu3Processor(image_processor, vq, tok)


def picture(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def encode_np(vq, pixels):
    return vq.encode(ms.Tensor(pixels)).asnumpy()


# ---- sizes ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, area, expected", [
    ("1:1", 518400, (90, 90)), ("16:9", 518400, (68, 120)), ("4:3", 518400, (78, 104)), ("1:1", 262144, (64, 64)),
    ("9:16", 518400, (120, 68)),
])
def test_calculate_generate_size(ratio, area, expected):
    assert calculate_generate_size(ratio, area, 8) == expected
    assert calculate_generate_size(ratio, area) == expected  # factor 8 by default


def test_processor_uses_the_vision_tokenizers_spatial_factor(proc, tok):
    assert proc.vis_tok_spatial_factor == 8
    assert proc.calculate_generate_size("16:9", 518400) == (68, 120)
    assert Emu3Processor(tokenizer=tok).calculate_generate_size("1:1", 262144) == (64, 64)  # default 8 without a VQ


def test_image_token_budget():
    assert image_token_budget(90, 90) == 8193  # README "step 8193"
    assert image_token_budget(68, 120) == 8231
    assert image_token_budget(64, 64) == 4163


# ---- mode G ---------------------------------------------------------------------------------------------------------
def test_mode_g_prompt_exact(proc, tok):
    out = proc(GIRL, mode="G", ratio="1:1", image_area=518400)
    ids = out["input_ids"][0]
    assert tok.decode(ids) == MODE_G_PROMPT
    assert ids == tok.encode(MODE_G_PROMPT)
    assert ids[0] == 151849 and ids[-1] == 151851
    boi = ids.index(151852)
    assert tok.convert_ids_to_tokens(ids[boi + 1:-1]) == [b"9", b"0", b"*", b"9", b"0"]
    assert out["attention_mask"] == [[1] * len(ids)]
    assert out["image_size"] == [[90, 90]]


def test_mode_g_batch_ratios_and_left_padding(proc, tok):
    texts = ["a cat", "a very long description of a dog on a beach at sunset"]
    out = proc(texts, mode="G", ratio=["16:9", "1:1"], image_area=518400, padding="longest", return_tensors="np")
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    short = tok.encode(BOS + "a cat" + BOI + "68*120" + IMG)
    n_pad = ids.shape[1] - len(short)
    assert n_pad > 0
    assert ids[0].tolist() == [151643] * n_pad + short
    assert mask[0].tolist() == [0] * n_pad + [1] * len(short)
    assert tok.decode(ids[1]) == BOS + texts[1] + BOI + "90*90" + IMG
    assert out["image_size"].tolist() == [[68, 120], [90, 90]]
    out_ms = proc(texts, mode="G", padding="longest", return_tensors="ms")
    assert isinstance(out_ms["input_ids"], ms.Tensor) and out_ms["image_size"].asnumpy().tolist() == [[90, 90]] * 2


def test_generation_inputs_share_the_grid(proc, tok):
    pos, neg = proc.build_generation_inputs(["a cat", "a dog"], NEGATIVE_PROMPT, ratio="16:9", image_area=518400,
                                            padding="longest", return_tensors="np")
    assert pos["image_size"].tolist() == neg["image_size"].tolist() == [[68, 120]] * 2
    assert tok.decode(neg["input_ids"][0]) == BOS + NEGATIVE_PROMPT + BOI + "68*120" + IMG
    # Another spelling of the same grid is fine; another grid is not.
    proc.build_generation_inputs("a cat", NEGATIVE_PROMPT, ratio="16:9", negative_ratio="32:18")
    with pytest.raises(ValueError, match="negative prompt .* 90x90 .* 68x120.*same ratio and image_area"):
        proc.build_generation_inputs("a cat", NEGATIVE_PROMPT, ratio="16:9", negative_ratio="1:1")
    with pytest.raises(ValueError, match="same ratio and image_area"):
        proc.build_generation_inputs("a cat", NEGATIVE_PROMPT, negative_image_area=262144)
    with pytest.raises(ValueError, match="2 negative prompts for 1 prompts"):
        proc.build_generation_inputs("a cat", [NEGATIVE_PROMPT] * 2)


# ---- mode U ---------------------------------------------------------------------------------------------------------
def test_mode_u_prompt_exact(proc, tok, vq, image_processor):
    image = picture(16, 24)
    out = proc("What is shown", image, mode="U")
    codes = encode_np(vq, image_processor(image)["pixel_values"])[0]
    assert codes.shape == (2, 3)
    rows = EOL.join("".join(vtok(k) for k in row) for row in codes.tolist())
    expected = (BOS + "You are a helpful assistant. USER: " + BOI + "2*3" + IMG + rows + EOL + EOF + EOI
                + "What is shown. ASSISTANT:")
    ids = out["input_ids"][0]
    assert tok.decode(ids) == expected
    assert ids == tok.encode(expected)
    start = ids.index(151851) + 1
    visual = [i for i in ids[start:start + 8] if i != 151846]
    assert visual == (151854 + codes.reshape(-1)).tolist()
    assert ids[start + 3] == 151846 and ids[start + 7:start + 10] == [151846, 151847, 151853]
    assert out["image_size"] == [[2, 3]]


def test_mode_u_custom_chat_template(image_processor, vq, tok):
    proc = Emu3Processor(image_processor, vq, tok, chat_template="{image_prompt}{text_prompt}")
    text = tok.decode(proc("Describe.", picture(16, 16), mode="U")["input_ids"][0])
    assert text.startswith(BOS + BOI + "2*2" + IMG) and text.endswith(EOF + EOI + "Describe.")


def test_tokenize_image_same_size_is_one_batch(proc, vq, image_processor):
    images = [picture(16, 24, seed=1), picture(16, 24, seed=2)]
    grids = proc.tokenize_image(images)
    expected = encode_np(vq, image_processor(images)["pixel_values"])
    assert len(grids) == 2 and all(g.shape == (2, 3) for g in grids)
    np.testing.assert_array_equal(np.stack(grids), expected)


def test_tokenize_image_padding(proc, vq, image_processor):
    a, b = picture(16, 24, seed=3), picture(32, 16, seed=4)  # grids 2x3 and 4x2; padded together to 32x24
    pa, pb = image_processor(a)["pixel_values"], image_processor(b)["pixel_values"]
    padded = np.zeros((2, 3, 32, 24), np.float32)
    padded[0, :, :16, :24], padded[1, :, :32, :16] = pa[0], pb[0]
    codes = encode_np(vq, padded)

    grids = proc.tokenize_image([a, b], padding_image=True)
    assert [g.shape for g in grids] == [(2, 3), (4, 2)]
    np.testing.assert_array_equal(grids[0], codes[0, :2, :3])
    np.testing.assert_array_equal(grids[1], codes[1, :4, :2])

    one_by_one = proc.tokenize_image([a, b], padding_image=False)
    np.testing.assert_array_equal(one_by_one[0], encode_np(vq, pa)[0])
    np.testing.assert_array_equal(one_by_one[1], encode_np(vq, pb)[0])

    out = proc(["first", "second"], [a, b], mode="U", padding_image=True, padding="longest")
    assert out["image_size"] == [[2, 3], [4, 2]]
    texts = [proc.tokenizer.decode(ids, skip_special_tokens=False) for ids in out["input_ids"]]
    assert BOI + "2*3" + IMG in texts[0] and BOI + "4*2" + IMG in texts[1]


# ---- decoding -------------------------------------------------------------------------------------------------------
def generated_stream(tok, codes, prompt="a red cat"):
    """What generation returns for a mode G prompt: prompt + h rows of (w visual tokens, eol) + eof, eoi, eos."""
    h, w = codes.shape
    ids = tok.encode(BOS + prompt + BOI + f"{h}*{w}" + IMG)
    for row in codes.tolist():
        ids += [151854 + k for k in row] + [151846]
    return ids + [151847, 151853, 151850]


def test_decode_text_and_image(proc, tok, vq, image_processor):
    codes = np.random.default_rng(0).integers(0, 64, (2, 3))
    ids = generated_stream(tok, codes)
    assert len(ids) - len(tok.encode(BOS + "a red cat" + BOI + "2*3" + IMG)) == image_token_budget(2, 3)
    out = proc.decode(ids)
    assert isinstance(out, list) and len(out) == 3
    assert out[0] == BOS + "a red cat" and out[2] == EOS
    image = out[1]
    assert isinstance(image, Image.Image) and image.size == (24, 16)  # (W, H) = 8 * (3, 2)
    pixels = vq.decode(ms.Tensor(codes[None].astype(np.int32))).asnumpy()
    expected = image_processor.postprocess(pixels)["pixel_values"][0]
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))

    # skip_special_tokens drops the image's tokens with the other specials (the "h*w" header digits are ordinary
    # text and stay); a single chunk comes back unwrapped.
    assert proc.decode(ids, skip_special_tokens=True) == "a red cat2*3"
    batch = proc.batch_decode(np.array([ids, ids]))
    assert len(batch) == 2 and batch[1][0] == BOS + "a red cat" and batch[1][1].size == (24, 16)


def test_batch_decode_decodes_images_of_one_size_together(proc, tok, vq, monkeypatch):
    rng = np.random.default_rng(1)
    grids = [rng.integers(0, 64, shape) for shape in ((2, 3), (2, 3), (1, 2), (2, 3))]
    rows = [generated_stream(tok, g, prompt=f"p{i}") for i, g in enumerate(grids)]
    rows.append(tok.encode("only text"))
    width = max(len(r) for r in rows)
    pad = tok.encode(EOS)[0]
    batch = np.array([r + [pad] * (width - len(r)) for r in rows])
    one_by_one = [proc.decode(np.array(r)) for r in rows]

    calls = []
    decode = vq.decode
    monkeypatch.setattr(vq, "decode", lambda codes: calls.append(tuple(codes.shape)) or decode(codes))
    out = proc.batch_decode(batch, image_batch_size=2)
    # Three 2x3 grids in batches of at most 2, the 1x2 grid alone: 3 calls instead of 4.
    assert sorted(calls) == [(1, 1, 2), (1, 2, 3), (2, 2, 3)]
    for got, want in zip(out[:4], one_by_one[:4]):
        assert got[0] == want[0] and got[2].startswith(EOS)
        np.testing.assert_allclose(np.asarray(got[1], np.int32), np.asarray(want[1], np.int32), atol=1)
    assert out[4].startswith("only text")


def test_tokenize_image_encodes_a_repeated_image_once(proc, vq, monkeypatch):
    a, b = picture(16, 24, seed=5), picture(16, 24, seed=6)
    expected = proc.tokenize_image([a, b])
    calls = []
    encode = vq.encode
    monkeypatch.setattr(vq, "encode", lambda pixels: calls.append(pixels.shape[0]) or encode(pixels))
    grids = proc.tokenize_image([a, b, a, a, b])
    assert calls == [2]
    for grid, want in zip(grids, [expected[i] for i in (0, 1, 0, 0, 1)]):
        np.testing.assert_array_equal(grid, want)
    grids[0][0, 0] += 1  # each grid is its own array
    np.testing.assert_array_equal(grids[2], expected[0])


def test_decode_text_around_images(proc, tok):
    g1, g2 = np.zeros((1, 2), int), np.ones((2, 1), int)
    doc = "before" + BOI + "1*2" + IMG + vtok(0) + vtok(0) + EOL + EOF + EOI + "middle" + BOI + "2*1" + IMG \
        + vtok(1) + EOL + vtok(1) + EOL + EOF + EOI
    out = proc.multimodal_decode(doc)
    assert [type(o) for o in out] == [str, Image.Image, str, Image.Image]
    assert out[0] == "before" and out[2] == "middle"
    assert out[1].size == (16, 8) and out[3].size == (8, 16)
    np.testing.assert_array_equal(proc.image_grid(doc.split("middle")[0]), g1)
    np.testing.assert_array_equal(proc.image_grid(doc.split("middle")[1]), g2)
    # An unfinished image (no image end, e.g. generation cut short) stays text.
    assert proc.multimodal_decode("x" + BOI + "1*1" + IMG + vtok(3)) == "x" + BOI + "1*1" + IMG + vtok(3)
    assert proc.decode(tok.encode("just text")) == "just text"


def test_decode_ragged_rows_is_an_error(proc, tok):
    ids = tok.encode(BOI + "2*3" + IMG + vtok(1) + vtok(2) + vtok(3) + EOL + vtok(4) + vtok(5) + EOL + EOF + EOI)
    with pytest.raises(ValueError, match=r"different lengths \[2, 3\].*do not form a grid"):
        proc.decode(ids)
    with pytest.raises(ValueError, match="no visual tokens"):
        proc.multimodal_decode(BOI + "2*3" + IMG + EOL + EOF + EOI)


# ---- budget ---------------------------------------------------------------------------------------------------------
def test_prompt_budget(proc, tok, image_processor, vq):
    n = len(tok.encode(MODE_G_PROMPT))
    proc(GIRL, mode="G", max_position_embeddings=n + 8193)  # fits exactly
    with pytest.raises(ValueError, match=rf"prompt 0 has {n} tokens plus 8193 tokens for the 90x90 image .*"
                                         rf"max_position_embeddings = {n + 8192}.*smaller image_area"):
        proc(GIRL, mode="G", max_position_embeddings=n + 8192)

    class Config:
        max_position_embeddings = 4000

    limited = Emu3Processor(image_processor, vq, tok, model_config=Config())
    assert limited.max_position_embeddings == 4000
    limited(GIRL, mode="G", image_area=256 * 256)  # 32x32 grid: 1059 tokens
    with pytest.raises(ValueError, match="more than the model's max_position_embeddings = 4000"):
        limited(GIRL, mode="G")

    # Padding is not counted when the attention mask is given; mode U prompts hold their image already.
    check_prompt_budget([[0, 0, 5, 6]], 1, 1, 7, attention_mask=[[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="prompt 0 has 4 tokens"):
        check_prompt_budget([[0, 0, 5, 6]], 1, 1, 7)
    check_prompt_budget(np.zeros(5, np.int32), 0, 0, 5)
    with pytest.raises(ValueError, match="prompt 1 has 6 tokens = 6 positions.*fewer visual tokens"):
        check_prompt_budget([[1] * 5, [1] * 6], 0, 0, 5)
    u_len = len(proc("Q", picture(16, 24), mode="U")["input_ids"][0])
    with pytest.raises(ValueError, match=f"prompt 0 has {u_len} tokens"):
        proc("Q", picture(16, 24), mode="U", max_position_embeddings=u_len - 1)


# ---- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, message", [
    ("16-9", "separate width and height with ':'"), ("0:1", "both sides must be > 0"), ("a:b", "not numeric"),
    ("1:1:1", "W:H"), ("-4:3", "> 0"), (16, "of type int"),
])
def test_bad_ratio(proc, ratio, message):
    with pytest.raises(ValueError, match=message):
        proc("a cat", mode="G", ratio=ratio)


def test_image_area_too_small(proc):
    with pytest.raises(ValueError, match=r"gives a 0x0 token grid .* no tokens along one side\. Use image_area >= 17"):
        calculate_generate_size("1:1", 16, 8)
    with pytest.raises(ValueError, match=r"0x\d+ token grid"):
        proc("a cat", mode="G", ratio="16:1", image_area=16 * 16)
    for area in (0, -5, "big"):
        with pytest.raises(ValueError, match="image_area must be a positive number"):
            calculate_generate_size("1:1", area)


def test_bad_mode_and_image_counts(proc):
    image = picture(16, 16)
    with pytest.raises(ValueError, match="mode must be 'G' .* or 'U'"):
        proc("a cat", mode="X")
    with pytest.raises(ValueError, match="mode 'G' .* takes no input image.*mode='U'"):
        proc("a cat", image, mode="G")
    with pytest.raises(ValueError, match="mode 'U' .* needs an image"):
        proc("what is it", mode="U")
    with pytest.raises(ValueError, match=r"exactly one image per text; got 1 image\(s\) for 2 text\(s\)"):
        proc(["a", "b"], image, mode="U")
    with pytest.raises(ValueError, match=r"exactly one image per text; got 2 image\(s\) for 1 text\(s\)"):
        proc("a", [image, image], mode="U")
    with pytest.raises(ValueError, match="got 1 ratios for 2 prompts"):
        proc(["a", "b"], mode="G", ratio=["1:1"])
    with pytest.raises(ValueError, match="text must be a string or a non-empty list"):
        proc([], mode="G")
    with pytest.raises(ValueError, match="image 0 is a str"):
        proc("a", ["x.png"], mode="U")


def test_images_need_the_vision_tokenizer(tok):
    text_only = Emu3Processor(tokenizer=tok)
    assert text_only(GIRL, mode="G")["input_ids"][0] == tok.encode(MODE_G_PROMPT)
    with pytest.raises(ValueError, match="needs the image processor and the vision tokenizer"):
        text_only("q", picture(16, 16), mode="U")
    with pytest.raises(ValueError, match="needs the image processor and the vision tokenizer"):
        text_only.multimodal_decode(BOI + "1*1" + IMG + vtok(0) + EOL + EOF + EOI)


# ---- constrained decoding -------------------------------------------------------------------------------------------
def test_build_prefix_constrained_fn(proc, tok):
    pytest.importorskip("emu3.mllm.utils_emu3")
    fn = proc.build_prefix_constrained_fn(np.array([2]), np.array([3]))
    prompt = tok.encode(BOS + "a cat" + BOI + "2*3" + IMG)
    stream = generated_stream(tok, np.zeros((2, 3), int), "a cat")[len(prompt):]
    # Only the codes the vision tokenizer can decode (64 here; all 32,768 with the released one).
    visual = set(range(151854, 151854 + proc.vision_tokenizer.config.codebook_size))
    released = Emu3Processor(tokenizer=tok).build_prefix_constrained_fn(np.array([2]), np.array([3]))
    first = released(0, ms.Tensor(np.array(prompt, np.int64)))
    first = np.asarray(first.asnumpy() if hasattr(first, "asnumpy") else first).reshape(-1)
    assert set(first.tolist()) == set(range(151854, 184622))
    for step, token in enumerate(stream):
        allowed = fn(0, ms.Tensor(np.array(prompt + stream[:step], np.int64)))
        allowed = set(np.asarray(allowed.asnumpy() if hasattr(allowed, "asnumpy") else allowed).reshape(-1).tolist())
        assert allowed == ({token} if token not in visual else visual), step
    after = fn(0, ms.Tensor(np.array(prompt + stream + [151643], np.int64)))
    after = np.asarray(after.asnumpy() if hasattr(after, "asnumpy") else after).reshape(-1).tolist()
    assert after == [151643]  # only pad after eos


# ---- package surface ------------------------------------------------------------------------------------------------
def test_package_exports_are_lazy():
    code = (
        "import sys\n"
        "import emu3.mllm.special_tokens\n"
        "assert 'mindspore' not in sys.modules and 'tiktoken' not in sys.modules\n"
        "from emu3.mllm import Emu3ForCausalLM, Emu3Model, Emu3Config, Emu3Tokenizer, Emu3Processor\n"
        "from emu3.mllm.processing_emu3 import Emu3Processor as P\n"
        "assert Emu3Processor is P and Emu3Model.__name__ == 'Emu3Model'\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env, timeout=120)


# ---- command-line scripts -------------------------------------------------------------------------------------------
def _scripts():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "scripts"))
    import image_generation
    import multimodal_understanding

    return image_generation, multimodal_understanding


def test_image_generation_script_end_to_end(tok, tmp_path, capsys):
    image_generation, _ = _scripts()
    assert image_generation.POSITIVE_PROMPT == " masterpiece, film grained, best quality."
    assert image_generation.NEGATIVE_PROMPT == NEGATIVE_PROMPT
    defaults = image_generation.parse_args([])
    assert (defaults.guidance_scale, defaults.top_k, defaults.ratio, defaults.mode) == (3.0, 2048, "1:1", "graph")

    tokenizer_path = os.path.dirname(tok.vocab_file)  # the folder the fixture built
    out = tmp_path / "out"
    saved = image_generation.main(["--tokenizer-path", tokenizer_path, "--mode", "pynative", "--image-area", "256",
                                   "--ratio", "1:1", "--output-dir", str(out), "--prompt", "a cat"])
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "2x2 tokens = 16x16 px, 9 tokens to generate, CFG 3.0" in printed
    assert len(saved) == 1 and Image.open(saved[0]).size == (16, 16)

    with pytest.raises(SystemExit, match="separate width and height"):
        image_generation.main(["--tokenizer-path", tokenizer_path, "--ratio", "16-9", "--output-dir", str(out)])


def test_script_argument_errors(tmp_path):
    image_generation, multimodal_understanding = _scripts()
    with pytest.raises(SystemExit, match="is not a folder"):
        image_generation.main(["--tokenizer-path", str(tmp_path / "missing")])
    (tmp_path / "bare_model").mkdir()  # a model folder without tokenizer files
    with pytest.raises(SystemExit, match="pass --tokenizer-path"):
        image_generation.main(["--model-path", str(tmp_path / "bare_model"), "--output-dir", str(tmp_path / "o")])
    assert multimodal_understanding.parse_args([]).max_new_tokens == 1024
    picture(16, 16).save(tmp_path / "a.png")
    with pytest.raises(SystemExit, match="2 --prompt for 1 --image"):
        multimodal_understanding.main(["--image", str(tmp_path / "a.png"), "--prompt", "x", "--prompt", "y"])
    with pytest.raises(SystemExit, match="does not exist"):
        multimodal_understanding.main(["--image", str(tmp_path / "b.png")])
