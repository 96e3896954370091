"""Generation against the PyTorch oracle: transformers' Emu3ForCausalLM.generate with its own processors.

What these tests pin down: greedy decoding of a left-padded batch token for token (pynative and one compiled
graph); eos stops a row, which is then padded; text-to-image decoding with classifier-free guidance and the
prefix constraint identical to the original pipeline (transformers' UnbatchedClassifierFreeGuidance- and
PrefixConstrainedLogitsProcessor + the original helper's rules), producing h rows of w visual tokens + eol, then
eof, eoi, eos; batched CFG equal to the unbatched processor; the warpers equal to transformers' on random scores.

The "image" vocabulary is a tiny stand-in: visual tokens are ids 200..231 and the specials are small ids.
"""

import os

import numpy as np
import pytest
import torch
from transformers.generation import logits_process as hf

from emu3.mllm.configuration_emu3 import Emu3Config
from emu3.mllm.generation import (CachedDecoder, LogitsProcessorList, PrefixConstrainedLogitsProcessor,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
                                  UnbatchedClassifierFreeGuidanceLogitsProcessor, _sample)
from emu3.mllm.modeling_emu3 import Emu3ForCausalLM
from emu3.mllm.utils_emu3 import Emu3PrefixConstrainedLogitsHelper
from llm_reference import make_reference

PAD, BOS, EOS = 0, 1, 2
IMG, BOI, EOI, EOL, EOF = 10, 11, 12, 13, 14
VISUAL = list(range(200, 232))
H, W = 2, 3
IMAGE_TOKENS = H * (W + 1) + 3


def tiny_config(**overrides):
    kwargs = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, bos_token_id=BOS,
                  eos_token_id=EOS, attention_dropout=0.1, img_token_id=IMG, boi_token_id=BOI, eoi_token_id=EOI,
                  eol_token_id=EOL, eof_token_id=EOF)
    kwargs.update(overrides)
    return Emu3Config(**kwargs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("emu3_gen"))
    oracle = make_reference(tiny_config(), directory)
    return Emu3ForCausalLM.from_pretrained(directory), oracle


def left_padded(rng, lengths, low=20, high=200):
    total = max(lengths)
    ids = rng.integers(low, high, size=(len(lengths), total))
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, total - n:] = 1
        ids[row, :total - n] = PAD
    return ids, mask


def image_prompts(rng, lengths):
    """bos, text, boi, "h", "*", "w", img — left-padded; the header digits are ordinary text ids here."""
    rows = [[BOS] + list(rng.integers(20, 200, size=n)) + [BOI, 23, 24, 25, IMG] for n in lengths]
    total = max(len(r) for r in rows)
    ids = np.full((len(rows), total), PAD)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, total - len(r):] = r
        mask[i, total - len(r):] = 1
    return ids, mask


def torch_ids(x):
    return torch.from_numpy(np.asarray(x, dtype=np.int64))


def oracle_generate(oracle, ids, mask, max_new_tokens, processors=(), eos=EOS):
    with torch.no_grad():
        out = oracle.generate(torch_ids(ids), attention_mask=torch_ids(mask), max_new_tokens=max_new_tokens,
                              do_sample=False, eos_token_id=eos, pad_token_id=PAD,
                              logits_processor=hf.LogitsProcessorList(list(processors)))
    return out.numpy()


def reference_helper(height, width):
    """The original helper's rules (§4.4) written out literally, on torch rows — the oracle's constraint."""
    cache = {}

    def fn(batch_id, sent):
        if batch_id not in cache:
            cache[batch_id] = int(torch.nonzero(sent == IMG, as_tuple=True)[0][0])
        offset = sent.shape[0] - cache[batch_id]
        if offset % (width + 1) == 0:
            return [EOL]
        if offset == (width + 1) * height + 1:
            return [EOF]
        if offset == (width + 1) * height + 2:
            return [EOI]
        if offset == (width + 1) * height + 3:
            return [EOS]
        if offset > (width + 1) * height + 3:
            return [PAD]
        return VISUAL

    return fn


def our_helper(height=H, width=W):
    return Emu3PrefixConstrainedLogitsHelper(height, width, IMG, EOI, EOS, EOL, EOF, PAD, VISUAL)


# ---- greedy decoding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_greedy_matches_oracle_on_left_padded_batch(pair, rng, mode):
    model, oracle = pair
    ids, mask = left_padded(rng, [9, 6, 4])
    ref = oracle_generate(oracle, ids, mask, max_new_tokens=12)
    ours = model.generate(ids, mask, max_new_tokens=12, mode=mode, eos_token_id=EOS, pad_token_id=PAD)
    assert ours.shape == (3, 9 + 12)
    np.testing.assert_array_equal(ours.asnumpy(), ref)
    # Same shapes again: the kept step (and its cache, emptied in place) is reused and must give the same tokens.
    again = model.generate(ids, mask, max_new_tokens=12, mode=mode, eos_token_id=EOS, pad_token_id=PAD)
    np.testing.assert_array_equal(again.asnumpy(), ref)


def test_kept_steps_let_shapes_alternate_without_recompiling(pair, rng):
    model, _ = pair
    ids, mask = left_padded(rng, [7, 5])
    short = ids[:1, -4:]
    model.clear_generation_cache()
    model.generation_steps_kept = 2
    try:
        first = [model.generate(x, max_new_tokens=5, mode="graph", eos_token_id=[]).asnumpy() for x in (ids, short)]
        kept = dict(model._generation_steps["generate"])
        assert len(kept) == 2
        again = [model.generate(x, max_new_tokens=5, mode="graph", eos_token_id=[]).asnumpy() for x in (ids, short)]
        assert all(model._generation_steps["generate"][key] is entry for key, entry in kept.items())  # reused
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
        model.generate(ids[:, -3:], max_new_tokens=5, mode="graph", eos_token_id=[])  # a third shape
        assert len(model._generation_steps["generate"]) == 2  # the least recently used one was dropped
    finally:
        model.generation_steps_kept = 1
        model.clear_generation_cache()


def test_a_decoder_prefilled_again_starts_afresh(pair, rng):
    model, _ = pair
    ids, mask = left_padded(rng, [7, 5])
    decoder = CachedDecoder(model, mask, max_length=12, mode="graph")
    first = [decoder.prefill(ids), decoder.step([4, 5])]
    second = [decoder.prefill(ids), decoder.step([4, 5])]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_eos_finishes_a_row_and_pads_it(pair, rng):
    model, oracle = pair
    ids, mask = left_padded(rng, [8, 5])
    free = model.generate(ids, mask, max_new_tokens=10, eos_token_id=[]).asnumpy()[:, 8:]
    eos = int(free[1, 3])  # row 1 stops at its 4th new token
    ref = oracle_generate(oracle, ids, mask, max_new_tokens=10, eos=eos)
    ours = model.generate(ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD).asnumpy()
    np.testing.assert_array_equal(ours, ref)
    first = int(np.argmax(ours[1, 8:] == eos))
    assert first <= 3 and (ours[1, 8 + first + 1:] == PAD).all()

    # Every row finished -> generation stops before max_new_tokens.
    eos_both = [int(free[0, 2]), int(free[1, 2])]
    stopped = model.generate(ids, mask, max_new_tokens=10, eos_token_id=eos_both, pad_token_id=PAD).asnumpy()
    assert stopped.shape[1] <= 8 + 3
    np.testing.assert_array_equal(stopped, oracle_generate(oracle, ids, mask, 10, eos=eos_both))


def test_sampling_with_top_k_1_is_greedy(pair, rng):
    model, _ = pair
    ids, mask = left_padded(rng, [7, 5])
    greedy = model.generate(ids, mask, max_new_tokens=8, progress=True).asnumpy()
    sampled = model.generate(ids, mask, max_new_tokens=8, do_sample=True, top_k=1, temperature=0.7, seed=3)
    np.testing.assert_array_equal(sampled.asnumpy(), greedy)


def test_sampling_is_seeded_and_follows_the_distribution(pair, rng):
    model, _ = pair
    ids, mask = left_padded(rng, [6])
    a = model.generate(ids, mask, max_new_tokens=6, do_sample=True, top_p=0.9, seed=7).asnumpy()
    b = model.generate(ids, mask, max_new_tokens=6, do_sample=True, top_p=0.9, seed=7).asnumpy()
    np.testing.assert_array_equal(a, b)

    scores = np.array([[np.log(0.5), np.log(0.3), np.log(0.2), -np.inf]], np.float32)
    draws = np.concatenate([_sample(np.repeat(scores, 1000, 0), np.random.default_rng(s)) for s in range(20)])
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2, 0.0], atol=0.015)


# ---- warpers and processors on random scores ---------------------------------------------------------------------


def test_warpers_match_transformers(rng):
    scores = rng.normal(size=(4, 500)).astype(np.float32) * 3
    scores[1, :100] = -np.inf  # e.g. after a prefix constraint
    ids = rng.integers(0, 500, size=(4, 5))
    pairs = [(TopKLogitsWarper(20), hf.TopKLogitsWarper(20)),
             (TopKLogitsWarper(1000), hf.TopKLogitsWarper(1000)),
             (TopPLogitsWarper(0.8), hf.TopPLogitsWarper(0.8)),
             (TopPLogitsWarper(0.0), hf.TopPLogitsWarper(0.0)),  # min_tokens_to_keep=1 keeps the best one
             (TemperatureLogitsWarper(0.7), hf.TemperatureLogitsWarper(0.7))]
    for ours, theirs in pairs:
        expected = theirs(torch_ids(ids), torch.from_numpy(scores)).numpy()
        got = ours(ids, scores)
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-6)


def test_prefix_processor_matches_transformers(rng):
    ids, _ = image_prompts(rng, [4, 4])
    scores = rng.normal(size=(2, 300)).astype(np.float32)
    for extra in range(0, IMAGE_TOKENS + 4):
        seq = np.concatenate([ids, rng.integers(200, 232, size=(2, extra))], axis=1)
        expected = hf.PrefixConstrainedLogitsProcessor(reference_helper(H, W), 1)(torch_ids(seq),
                                                                                 torch.from_numpy(scores)).numpy()
        got = PrefixConstrainedLogitsProcessor(our_helper(), 1)(seq, scores)
        np.testing.assert_array_equal(got, expected)
    # All allowed ids already at -inf: the constraint is forced with score 0.
    hopeless = np.full((2, 300), -np.inf, np.float32)
    got = PrefixConstrainedLogitsProcessor(our_helper(), 1)(ids, hopeless)
    assert (got[:, VISUAL] == 0).all() and np.isneginf(np.delete(got, VISUAL, axis=1)).all()


def test_helper_follows_the_offset_rules():
    helper = Emu3PrefixConstrainedLogitsHelper(np.array([3, 2]), np.array([4, 1]), IMG, EOI, EOS, EOL, EOF, PAD,
                                               VISUAL)
    prompt = [BOS, 50, IMG]
    stream = []
    for _ in range(3 * 5 + 3 + 1):
        allowed = helper(0, np.array(prompt + stream))
        stream.append(int(allowed[0]) if len(allowed) == 1 else VISUAL[0])
    v = VISUAL[0]
    assert stream == [v, v, v, v, EOL] * 3 + [EOF, EOI, EOS, PAD]
    # Row 1 has its own 2 x 1 grid, and its image token at a different index (cached on first use).
    assert [len(helper(1, np.array([IMG] + [v] * k))) for k in range(6)] == [32, 1, 32, 1, 1, 1]
    assert helper(1, np.array([IMG, v, EOL, v, EOL]))[0] == EOF
    assert helper(1, np.array([7, 7, 7, IMG] + [v] * 2))[0] == EOL  # still the cached index 0: offset 6 -> eol
    helper.reset()
    assert len(helper(1, np.array([7, 7, 7, IMG, v]))) == 1  # recomputed: offset 2 -> eol


# ---- text-to-image decoding: CFG + prefix constraint -------------------------------------------------------------


def _image_case(rng):
    ids, mask = image_prompts(rng, [6, 3])
    negative, _ = image_prompts(rng, [5, 5])  # equal lengths: no padding for the unbatched processor to attend to
    return ids, mask, negative


def _check_image_stream(new_tokens):
    for row in new_tokens:
        grid = row[:H * (W + 1)].reshape(H, W + 1)
        assert np.isin(grid[:, :W], VISUAL).all() and (grid[:, W] == EOL).all()
        assert list(row[H * (W + 1):IMAGE_TOKENS]) == [EOF, EOI, EOS]


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_cfg_and_prefix_constraint_match_the_original_pipeline(pair, rng, mode):
    model, oracle = pair
    ids, mask, negative = _image_case(rng)
    ref = oracle_generate(oracle, ids, mask, IMAGE_TOKENS + 4, [
        hf.UnbatchedClassifierFreeGuidanceLogitsProcessor(3.0, oracle, unconditional_ids=torch_ids(negative)),
        hf.PrefixConstrainedLogitsProcessor(reference_helper(H, W), num_beams=1)])
    ours = model.generate(ids, mask, max_new_tokens=IMAGE_TOKENS + 4, mode=mode, logits_processor=[
        UnbatchedClassifierFreeGuidanceLogitsProcessor(3.0, model, unconditional_ids=negative),
        PrefixConstrainedLogitsProcessor(our_helper(), num_beams=1)]).asnumpy()
    np.testing.assert_array_equal(ours, ref)
    assert ours.shape[1] == ids.shape[1] + IMAGE_TOKENS  # stopped at eos
    _check_image_stream(ours[:, ids.shape[1]:])


def test_prefix_allowed_tokens_fn_is_the_constraint_processor(pair, rng):
    model, _ = pair
    ids, mask, _ = _image_case(rng)
    with_processor = model.generate(ids, mask, max_new_tokens=IMAGE_TOKENS, logits_processor=[
        PrefixConstrainedLogitsProcessor(our_helper(), num_beams=1)]).asnumpy()
    with_fn = model.generate(ids, mask, max_new_tokens=IMAGE_TOKENS, prefix_allowed_tokens_fn=our_helper()).asnumpy()
    np.testing.assert_array_equal(with_fn, with_processor)
    _check_image_stream(with_fn[:, ids.shape[1]:])


def test_batched_cfg_equals_unbatched(pair, rng):
    model, _ = pair
    ids, mask, negative = _image_case(rng)
    unbatched = model.generate(ids, mask, max_new_tokens=IMAGE_TOKENS, logits_processor=[
        UnbatchedClassifierFreeGuidanceLogitsProcessor(3.0, model, unconditional_ids=negative),
        PrefixConstrainedLogitsProcessor(our_helper())]).asnumpy()
    batched = model.generate(ids, mask, max_new_tokens=IMAGE_TOKENS, negative_prompt_ids=negative,
                             guidance_scale=3.0,
                             logits_processor=[PrefixConstrainedLogitsProcessor(our_helper())]).asnumpy()
    np.testing.assert_array_equal(batched, unbatched)
    _check_image_stream(batched[:, ids.shape[1]:])


def test_batched_cfg_masks_negative_prompt_padding(pair, rng):
    """Padded negative prompts behave like each unpadded one (the unbatched processor would attend to pads)."""
    model, _ = pair
    ids, mask, _ = _image_case(rng)
    negative, negative_mask = image_prompts(rng, [2, 7])
    batched = model.generate(ids, mask, max_new_tokens=IMAGE_TOKENS, negative_prompt_ids=negative,
                             negative_prompt_attention_mask=negative_mask, guidance_scale=3.0,
                             logits_processor=[PrefixConstrainedLogitsProcessor(our_helper())]).asnumpy()
    for row in range(2):
        real = mask[row] == 1
        alone = model.generate(ids[row:row + 1, real], max_new_tokens=IMAGE_TOKENS, logits_processor=[
            UnbatchedClassifierFreeGuidanceLogitsProcessor(
                3.0, model, unconditional_ids=negative[row:row + 1, negative_mask[row] == 1]),
            PrefixConstrainedLogitsProcessor(our_helper())]).asnumpy()
        np.testing.assert_array_equal(batched[row, ids.shape[1]:], alone[0, real.sum():])


def test_cfg_processor_on_its_own_matches_transformers(pair, rng):
    """Called outside generate (dynamic cache), step by step, with and without a cache; scale 1 is log_softmax."""
    model, oracle = pair
    ids, _ = left_padded(rng, [5, 5])
    negative, _ = left_padded(rng, [4, 4])
    for scale, use_cache in [(2.5, True), (2.5, False), (1.0, True)]:
        ours = UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, model, negative, use_cache=use_cache)
        theirs = hf.UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, oracle, torch_ids(negative),
                                                                   use_cache=use_cache)
        seq = ids
        for _ in range(3):
            scores = rng.normal(size=(2, 300)).astype(np.float32)
            with torch.no_grad():
                expected = theirs(torch_ids(seq), torch.from_numpy(scores)).numpy()
            np.testing.assert_allclose(ours(seq, scores), expected, atol=1e-4, rtol=0)
            seq = np.concatenate([seq, rng.integers(3, 300, size=(2, 1))], axis=1)


def test_logits_processor_list_applies_in_order(rng):
    scores = rng.normal(size=(1, 10)).astype(np.float32)
    chain = LogitsProcessorList([TemperatureLogitsWarper(0.5), TopKLogitsWarper(2)])
    got = chain(np.zeros((1, 1), np.int64), scores)
    assert np.isfinite(got).sum() == 2
    np.testing.assert_allclose(got.max(), scores.max() / 0.5, rtol=1e-6)


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_cache_grows_when_generation_outlasts_it(pair, rng, mode):
    model, oracle = pair
    ids, mask = left_padded(rng, [6, 4])
    ref = oracle_generate(oracle, ids, mask, max_new_tokens=9)
    ours = model.generate(ids, mask, max_new_tokens=9, mode=mode, cache_length=8)  # 8 -> 16 slots
    np.testing.assert_array_equal(ours.asnumpy(), ref)


# ---- bad input is refused before any work (issue: "no silent wrong results") --------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(input_ids=np.array([[5, -1, 7]])), r"must lie in \[0, 300\)"),
    (dict(input_ids=np.array([[5, 300, 7]])), r"must lie in \[0, 300\)"),
    (dict(input_ids=np.array([[5.0, 6.0, 7.0]])), "integer token ids"),
    (dict(attention_mask=np.array([[1, 2, 1]])), "only 0 .padding. and 1"),
    (dict(attention_mask=np.array([[1, 1, 0]])), "right-padded"),
    (dict(attention_mask=np.array([[0, 0, 0]])), "without any token"),
    (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=2.5), "max_new_tokens must be a whole number"),
    (dict(do_sample=True, temperature=0.0), "temperature must be"),
    (dict(guidance_scale=float("nan"), negative_prompt_ids=np.array([[5, 6, 7]])), "guidance_scale must be"),
])
def test_generate_refuses_bad_input(pair, kwargs, message):
    model = pair[0]
    call = dict(input_ids=np.array([[5, 6, 7]]), max_new_tokens=2)
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        model.generate(**call)


def test_generate_stops_at_the_models_positions(pair):
    model = pair[0]
    prompt = np.arange(20, 140)[None] % 250 + 20  # 120 tokens of a 128-position model
    with pytest.warns(UserWarning, match="generating at most 8 new tokens"):
        out = model.generate(prompt, max_new_tokens=100, eos_token_id=[], mode="pynative")
    assert out.shape[1] == 128
    with pytest.raises(ValueError, match="as many as the model's max_position_embeddings"):
        model.generate(np.full((1, 128), 20), max_new_tokens=1)


def test_long_generations_take_the_compiled_path_by_default(pair):
    from emu3.mllm.generation import GRAPH_MODE_FROM_TOKENS

    model = pair[0]
    model.clear_generation_cache()
    ids = np.array([[5, 6, 7]])
    short = model.generate(ids, max_new_tokens=4, eos_token_id=[])
    assert [key[2] for role in model._generation_steps.values() for key in role] == ["pynative"]
    model.clear_generation_cache()
    long = model.generate(ids, max_new_tokens=GRAPH_MODE_FROM_TOKENS + 1, eos_token_id=[])
    assert [key[2] for role in model._generation_steps.values() for key in role] == ["graph"]
    np.testing.assert_array_equal(long.asnumpy()[:, :7], short.asnumpy()), "same greedy tokens either way"


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_compiled_decode_step_prints_no_analyzer_warnings(tmp_path, dtype):
    """A user of the Python API sees no MindSpore noise: no Ascend probing warnings, no 'side effect nodes', and
    in fp16 no AKG compiler stack (fusion is not tried on low-precision graphs)."""
    import subprocess
    import sys

    code = ("import emu3, numpy as np\n"
            "from emu3.mllm import Emu3ForCausalLM, Emu3Config\n"
            "m = Emu3ForCausalLM.from_config(Emu3Config(vocab_size=300, hidden_size=32, intermediate_size=64, "
            "num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, "
            "eos_token_id=2, img_token_id=3, boi_token_id=4, eoi_token_id=5, eol_token_id=6, eof_token_id=7), "
            f"dtype='{dtype}')\n"
            "m.generate(np.array([[5, 6, 7]]), max_new_tokens=3, mode='graph')\n")
    env = {k: v for k, v in os.environ.items() if k != "GLOG_v"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WARNING" not in result.stderr and "Device Ascend" not in result.stderr, result.stderr[:2000]
    assert "Check failed" not in result.stdout + result.stderr and "could not compile" not in result.stderr
    assert not os.listdir(tmp_path), "nothing written to the working directory"


def test_alternating_lengths_keep_memory_flat():
    """A long-lived process calling generate with alternating lengths compiles once (nearby lengths share a cache
    bucket) and its memory does not grow."""
    import psutil

    from emu3.mllm.generation import initial_cache_length

    config = tiny_config(max_position_embeddings=4096)
    assert initial_cache_length(config, 4, 128) == initial_cache_length(config, 4, 40) == 256
    assert initial_cache_length(config, 4, 600) == 1024 and initial_cache_length(config, 4000, 90) == 4096
    model = Emu3ForCausalLM.from_config(config)
    ids = np.array([[5, 6, 7, 8]])
    process = psutil.Process()
    rss = []
    for i in range(20):
        model.generate(ids, max_new_tokens=128 if i % 2 == 0 else 40, mode="graph", eos_token_id=[], progress=False)
        rss.append(process.memory_info().rss)
    assert len(model._generation_steps["generate"]) == 1
    growth = (rss[-1] - rss[2]) / 2 ** 20
    assert growth < 20, f"memory grew {growth:.0f} MB over 18 alternating calls"
