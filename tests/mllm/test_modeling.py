"""The Emu3 LLM against the PyTorch oracle (HF transformers' Emu3ForCausalLM) on a tiny GQA config.

What these tests pin down: logits on a left-padded batch, the loss rule (shifted, ignore_index -100, mean over
kept labels), incremental decoding with the static cache (pynative and one compiled graph), the dynamic cache,
RoPE scalings, strict checkpoint loading in the released and HF layouts, and config validation.
"""

import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from emu3.checkpoint import CheckpointError
from emu3.mllm.cache import DynamicCache, StaticCache
from emu3.mllm.configuration_emu3 import Emu3Config
from emu3.mllm.decoding import Emu3CachedStep
from emu3.mllm.modeling_emu3 import Emu3ForCausalLM, position_ids_from_attention_mask
from emu3.nn import PrecisionPolicy, apply_precision
from emu3.nn.rms_norm import RMSNorm
from llm_reference import SMALL_VOCAB_IMAGE_IDS, make_reference, reference_forward

ATOL = 1e-4


def tiny_config(**overrides):
    kwargs = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, attention_dropout=0.1, **SMALL_VOCAB_IMAGE_IDS)
    kwargs.update(overrides)
    return Emu3Config(**kwargs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(our model loaded strictly from the oracle's released-layout file, the oracle, the checkpoint dir)."""
    directory = str(tmp_path_factory.mktemp("emu3_llm"))
    config = tiny_config()
    oracle = make_reference(config, directory)
    return Emu3ForCausalLM.from_pretrained(directory), oracle, directory


def left_padded_batch(rng, lengths, total, vocab=300):
    ids = rng.integers(3, vocab, size=(len(lengths), total))
    mask = np.zeros((len(lengths), total), np.int64)
    for row, n in enumerate(lengths):
        mask[row, total - n:] = 1
        ids[row, : total - n] = 0  # pad id
    return ids, mask


def positions_for(mask):
    return np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)


def run(model, ids, mask=None, positions=None, labels=None):
    def t(x):
        return None if x is None else Tensor(np.asarray(x), ms.int32)

    loss, logits, _ = model(t(ids), t(mask), t(positions), labels=t(labels))
    return (None if loss is None else float(loss.asnumpy())), logits.asnumpy()


# ---- parity with the oracle --------------------------------------------------------------------------------------


def test_logits_match_oracle_on_left_padded_batch(pair, rng):
    model, oracle, _ = pair
    ids, mask = left_padded_batch(rng, lengths=[11, 8, 5], total=11)
    positions = positions_for(mask)
    _, ours = run(model, ids, mask, positions)
    _, ref = reference_forward(oracle, ids, mask, positions)
    keep = mask.astype(bool)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours[keep], ref[keep], atol=ATOL, rtol=0)


def test_logits_match_oracle_without_mask(pair, rng):
    model, oracle, _ = pair
    ids = rng.integers(0, 300, size=(2, 9))
    _, ours = run(model, ids)
    _, ref = reference_forward(oracle, ids)
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


def test_loss_matches_oracle_with_ignore_index(pair, rng):
    model, oracle, _ = pair
    ids, mask = left_padded_batch(rng, lengths=[10, 7], total=10)
    labels = np.where(mask == 1, ids, -100)
    labels[0, 2:5] = -100  # e.g. a prompt span that is not trained on
    # A padded row's first token would be predicted from a pad position, whose logits are arbitrary (they differ
    # between attention implementations); datasets mask it, and so does this test.
    labels[1, 3] = -100
    positions = positions_for(mask)
    ours, _ = run(model, ids, mask, positions, labels)
    ref, _ = reference_forward(oracle, ids, mask, positions, labels)
    assert abs(ours - ref) < 1e-5


def test_loss_is_mean_over_kept_labels(pair, rng):
    """Only the kept labels count, each once: the loss of a half-ignored batch is the mean of those tokens' NLLs."""
    model, _, _ = pair
    ids = rng.integers(3, 300, size=(1, 8))
    labels = ids.copy()
    labels[0, 1:4] = -100
    loss, logits = run(model, ids, labels=labels)
    logp = logits[0, :-1] - np.log(np.exp(logits[0, :-1]).sum(-1, keepdims=True))
    targets = labels[0, 1:]
    kept = targets != -100
    expected = -logp[np.arange(7)[kept], targets[kept]].mean()
    assert abs(loss - expected) < 1e-5


def test_position_ids_from_left_padded_mask():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    got = position_ids_from_attention_mask(Tensor(mask, ms.int32)).asnumpy()
    np.testing.assert_array_equal(got, [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])


# ---- incremental decoding ----------------------------------------------------------------------------------------


def _decode_case(rng, prompt_len=6, new_tokens=4):
    total = prompt_len + new_tokens
    ids, mask = left_padded_batch(rng, lengths=[total, total - 3], total=total)
    mask[:, prompt_len:] = 1
    return ids, mask, prompt_len


def _incremental_logits(model, ids, mask, prompt_len, step_fn, cache_len):
    """Prefill the prompt, then feed the remaining tokens one at a time (teacher forcing); logits per position."""
    b, total = ids.shape
    full_mask = np.zeros((b, cache_len), np.int64)
    full_mask[:, :total] = mask  # future slots are hidden by causality; their value does not matter
    positions = positions_for(full_mask)
    out = [step_fn(ids[:, :prompt_len], full_mask, positions[:, :prompt_len], np.arange(prompt_len))]
    for t in range(prompt_len, total):
        out.append(step_fn(ids[:, t:t + 1], full_mask, positions[:, t:t + 1], np.array([t])))
    return np.stack(out, axis=1)  # (B, 1 + new tokens, V): positions prompt_len-1 .. total-1


def _as_tensors(ids, mask, positions, cache_position):
    return (Tensor(ids, ms.int32), Tensor(mask, ms.int32), Tensor(positions, ms.int32),
            Tensor(cache_position, ms.int32))


def test_static_cache_decoding_matches_full_forward_pynative(pair, rng):
    model, _, _ = pair
    ids, mask, prompt_len = _decode_case(rng)
    _, full = run(model, ids, mask, positions_for(mask))
    cache = StaticCache.for_model(model.config, batch_size=2, max_length=16)

    def step(*args):
        _, logits, _ = model(*_as_tensors(*args)[:3], past_key_values=cache,
                             cache_position=_as_tensors(*args)[3], logits_to_keep=1)
        return logits.asnumpy()[:, -1]

    got = _incremental_logits(model, ids, mask, prompt_len, step, cache_len=16)
    np.testing.assert_allclose(got, full[:, prompt_len - 1:], atol=ATOL, rtol=0)


def test_static_cache_decoding_matches_full_forward_in_graph_mode(pair, rng):
    model, _, _ = pair
    ids, mask, prompt_len = _decode_case(rng)
    _, full = run(model, ids, mask, positions_for(mask))
    cache = StaticCache.for_model(model.config, batch_size=2, max_length=16)
    compiled = ms.jit(Emu3CachedStep(model, cache).construct)

    def step(*args):
        return compiled(*_as_tensors(*args)).asnumpy()

    got = _incremental_logits(model, ids, mask, prompt_len, step, cache_len=16)
    np.testing.assert_allclose(got, full[:, prompt_len - 1:], atol=ATOL, rtol=0)


class _CacheWriter(ms.nn.Cell):
    def __init__(self, cache):
        super().__init__()
        self.cache = cache

    def construct(self, key, value, cache_position):
        return self.cache.update(key, value, 0, cache_position)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("transposed_keys", [False, True])
def test_static_cache_writes_slots_in_place_and_reset_empties_them(rng, mode, transposed_keys):
    cache = StaticCache(num_layers=1, batch_size=2, num_kv_heads=3, head_dim=4, max_length=6,
                        transposed_keys=transposed_keys)

    def as_stored(keys):  # (B, N_kv, slots, D) -> the cache's key layout
        return keys.transpose(0, 1, 3, 2) if transposed_keys else keys

    writer = _CacheWriter(cache)
    write = ms.jit(writer.construct) if mode == "graph" else writer
    expected = np.zeros((2, 2, 3, 6, 4), np.float32)  # (key/value, B, N_kv, slots, D)
    for _ in range(2):  # the second round checks that reset() empties the slots for a new generation
        expected[:] = 0
        for slots in ([0, 1, 2], [3], [4]):  # a prompt, then one token at a time
            kv = rng.standard_normal((2, 2, 3, len(slots), 4)).astype(np.float32)
            keys, values = write(Tensor(kv[0]), Tensor(kv[1]), Tensor(np.array(slots), ms.int32))
            expected[:, :, :, slots] = kv
            np.testing.assert_array_equal(keys.asnumpy(), as_stored(expected[0]))
            np.testing.assert_array_equal(values.asnumpy(), expected[1])
        np.testing.assert_array_equal(cache.key_cache[0].asnumpy(), as_stored(expected[0]))  # the Parameter itself
        cache.reset()
        assert not cache.key_cache[0].asnumpy().any() and not cache.value_cache[0].asnumpy().any()


def test_static_cache_copy_from_keeps_slots_and_checks_layout(rng):
    small = StaticCache(num_layers=2, batch_size=1, num_kv_heads=2, head_dim=4, max_length=3, transposed_keys=True)
    kv = rng.standard_normal((2, 1, 2, 3, 4)).astype(np.float32)
    small.update(Tensor(kv[0]), Tensor(kv[1]), 1, Tensor(np.arange(3), ms.int32))
    large = StaticCache(num_layers=2, batch_size=1, num_kv_heads=2, head_dim=4, max_length=5, transposed_keys=True)
    large.copy_from(small)
    keys, values = large.key_cache[1].asnumpy(), large.value_cache[1].asnumpy()
    np.testing.assert_array_equal(keys[..., :3], kv[0].transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(values[:, :, :3], kv[1])
    assert not keys[..., 3:].any() and not values[:, :, 3:].any() and not large.key_cache[0].asnumpy().any()
    other_layout = StaticCache(num_layers=2, batch_size=1, num_kv_heads=2, head_dim=4, max_length=5)
    with pytest.raises(ValueError, match="same layout"):
        other_layout.copy_from(small)


def test_dynamic_cache_decoding_matches_full_forward(pair, rng):
    model, _, _ = pair
    ids, mask, prompt_len = _decode_case(rng)
    positions = positions_for(mask)
    _, full = run(model, ids, mask, positions)
    cache = DynamicCache()
    got = []
    for start, stop in [(0, prompt_len)] + [(t, t + 1) for t in range(prompt_len, ids.shape[1])]:
        _, logits, cache = model(Tensor(ids[:, start:stop], ms.int32), Tensor(mask[:, :stop], ms.int32),
                                 Tensor(positions[:, start:stop], ms.int32), past_key_values=cache, use_cache=True)
        got.append(logits.asnumpy()[:, -1])
    assert cache.get_seq_length() == ids.shape[1]
    np.testing.assert_allclose(np.stack(got, 1), full[:, prompt_len - 1:], atol=ATOL, rtol=0)


# ---- RoPE scalings, precision, dropout ---------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", [{"type": "linear", "factor": 2.0}, {"type": "dynamic", "factor": 2.0}])
def test_rope_scaling_matches_oracle(tmp_path, rng, scaling):
    # max_position_embeddings 8 < 12 tokens, so dynamic NTK actually rescales.
    config = tiny_config(num_hidden_layers=2, max_position_embeddings=8, rope_scaling=scaling)
    oracle = make_reference(config, str(tmp_path), seed=1)
    model = Emu3ForCausalLM.from_pretrained(str(tmp_path))
    ids = rng.integers(0, 300, size=(2, 12))
    _, ours = run(model, ids)
    _, ref = reference_forward(oracle, ids)
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


def test_rms_norm_is_an_fp32_island():
    norm = RMSNorm(8, eps=1e-5)
    weight = np.linspace(0.5, 1.5, 8).astype(np.float32)
    norm.weight.set_data(Tensor(weight))
    apply_precision(norm, PrecisionPolicy(param_dtype=ms.float16))
    assert norm.weight.dtype == ms.float32 and norm.compute_dtype == ms.float32
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float16) * 30
    out = norm(Tensor(x))
    assert out.dtype == ms.float16
    x32 = x.astype(np.float32)
    normed = (x32 / np.sqrt((x32 ** 2).mean(-1, keepdims=True) + 1e-5)).astype(np.float16)
    np.testing.assert_allclose(out.asnumpy(), normed * weight.astype(np.float16), rtol=2e-3, atol=2e-3)


def test_dropout_only_in_training(pair, rng):
    model, _, _ = pair
    ids = rng.integers(0, 300, size=(1, 6))
    _, a = run(model, ids)
    _, b = run(model, ids)
    np.testing.assert_array_equal(a, b)
    model.set_train(True)
    try:
        _, c = run(model, ids)
    finally:
        model.set_train(False)
    assert not np.allclose(a, c)


# ---- checkpoints -------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(pair, tmp_path, rng):
    model, _, _ = pair
    model.save_pretrained(str(tmp_path))
    again = Emu3ForCausalLM.from_pretrained(str(tmp_path))
    ids = rng.integers(0, 300, size=(1, 5))
    np.testing.assert_array_equal(run(model, ids)[1], run(again, ids)[1])
    assert again.config.num_key_value_heads == 2


def test_loads_hf_layout(tmp_path, rng):
    config = tiny_config(num_hidden_layers=1)
    for layout, rename in [("hub", lambda n: "text_model." + n),
                           ("saved", lambda n: "lm_head.weight" if n == "lm_head.weight"
                            else "model.text_model." + n[len("model."):])]:
        directory = tmp_path / layout
        directory.mkdir()
        oracle = make_reference(config, str(directory), rename=rename)
        # -hf files also carry the vision tokenizer: those tensors are skipped, not "unexpected".
        _tamper(str(directory), lambda t: t.update({"model.vqmodel.quantize.embedding.weight": np.zeros((4, 4), np.float32)}))
        model = Emu3ForCausalLM.from_pretrained(str(directory))
        ids = rng.integers(0, 300, size=(1, 5))
        np.testing.assert_allclose(run(model, ids)[1], reference_forward(oracle, ids)[1], atol=ATOL, rtol=0)


def _tamper(directory, change):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("model.layers.0.mlp.up_proj.weight"), "missing from the checkpoint: model.layers.0.mlp.up_proj"),
    (lambda t: t.update({"model.layers.9.mlp.up_proj.weight": np.zeros((2, 2), np.float32)}),
     "unexpected in the checkpoint: model.layers.9.mlp.up_proj.weight"),
    (lambda t: t.update({"model.norm.weight": np.ones(63, np.float32)}), "model.norm.weight [63] vs [64]"),
])
def test_strict_loading_names_the_problem(tmp_path, change, message):
    config = tiny_config(num_hidden_layers=1)
    make_reference(config, str(tmp_path))
    _tamper(str(tmp_path), change)
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Emu3ForCausalLM.from_pretrained(str(tmp_path))


def test_from_pretrained_builds_in_the_target_dtype(pair):
    _, _, directory = pair
    model = Emu3ForCausalLM.from_pretrained(directory, dtype="fp16")
    dtypes = {name: p.dtype for name, p in model.parameters_and_names()}
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == ms.float16
    assert dtypes["model.embed_tokens.weight"] == ms.float16
    assert dtypes["model.layers.0.input_layernorm.weight"] == ms.float32  # the fp32 island


# ---- config ------------------------------------------------------------------------------------------------------


def test_config_defaults_are_the_released_ones():
    config = Emu3Config()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.head_dim) == (184622, 4096, 32, 128)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (151643, 151849, 151850)
    assert config.rope_theta == 1e6 and config.attention_dropout == 0.1 and config.max_position_embeddings == 9216


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_size=60, num_attention_heads=8), "divisible by num_attention_heads"),
    (dict(num_attention_heads=4, num_key_value_heads=3), "multiple of num_key_value_heads"),
    (dict(rope_scaling={"type": "yarn", "factor": 2.0}), "'linear' or 'dynamic'"),
    (dict(rope_scaling={"type": "linear", "factor": 1.0}), "float > 1"),
    (dict(rope_scaling={"type": "linear", "factor": 2}), "float > 1"),
    (dict(rope_scaling={"type": "linear"}), "exactly the fields"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_config_round_trip(tmp_path):
    config = tiny_config(rope_scaling={"type": "dynamic", "factor": 4.0})
    config.save_pretrained(str(tmp_path))
    again = Emu3Config.from_pretrained(str(tmp_path))
    assert again.to_dict() == config.to_dict()
