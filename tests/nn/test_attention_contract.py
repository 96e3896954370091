"""The attention contract, on CPU, for every backend.

The Ascend kernels cannot run here, so each is replaced by a numpy model of its *documented* semantics
(MindSpore API docs of ``FlashAttentionScore`` / ``fused_infer_attention_score``, read in 2.10): layouts, head
counts, mask dtype/shape/polarity (1 = discard), scale, outputs. The models also assert the documented input
constraints, so a wrapper that passes a wrong layout, head count, dtype or mask fails here, not on the NPU.
The portable math path is checked against a plain numpy attention that repeats K/V like the original.
"""

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor
from mindspore.ops.operations.nn_ops import FlashAttentionScore

from emu3.nn.attention import (Attention, additive_mask, decode_attention_inputs, default_backend, discard_mask,
                               flash_attention_inputs, math_attention)

B, N, N_KV, D = 2, 4, 2, 16  # D: both kernels need multiples of 16


# ---- numpy references --------------------------------------------------------------------------------------------


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def reference_attention(q, k, v, keep=None):
    """Original-style attention in float64: K/V repeated per query head (repeat_interleave), masked, softmax."""
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1).astype(np.float64), np.repeat(v, group, axis=1).astype(np.float64)
    scores = q.astype(np.float64) @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    return _softmax(scores) @ v


def _check_half(*arrays):
    for a in arrays:
        assert a.dtype == np.float16, f"the kernels take fp16/bf16 only, got {a.dtype}"


def _masked_attention(q, k, v, scale, discard):
    """Shared core of both kernel models: GQA by head index // group, masked positions excluded from softmax."""
    n1, n2 = q.shape[1], k.shape[1]
    kv_head = np.arange(n1) // (n1 // n2)
    scores = scale * (q.astype(np.float32) @ k[:, kv_head].astype(np.float32).swapaxes(-1, -2))
    if discard is not None:
        assert discard.max() <= 1 and discard.min() >= 0, "mask values must be 0 (keep) or 1 (discard)"
        assert (discard == 0).any(-1).all(), "a fully discarded row has undefined output in the kernels"
        scores = np.where(discard.astype(bool), -np.inf, scores)
    return (_softmax(scores) @ v[:, kv_head].astype(np.float32)).astype(q.dtype)


def flash_attention_score_model(prim):
    """A stand-in for a ``FlashAttentionScore`` primitive, with that primitive's attributes."""
    bnsd = FlashAttentionScore(head_num=1, input_layout="BNSD").input_layout

    def call(query, key, value, real_shift=None, drop_mask=None, padding_mask=None, attn_mask=None, prefix=None,
             actual_seq_qlen=None, actual_seq_kvlen=None):
        assert prim.input_layout == bnsd, "the wrapper passes BNSD tensors"
        q, k, v = query.asnumpy(), key.asnumpy(), value.asnumpy()
        _check_half(q, k, v)
        b, n1, s1, d = q.shape
        _, n2, s2, _ = k.shape
        assert v.shape == k.shape and k.shape[0] == b and k.shape[3] == d
        assert prim.head_num == n1, "head_num is the number of *query* heads (N1)"
        assert n1 % n2 == 0, "N2 must be a factor of N1"
        assert d % 16 == 0 and d <= 512
        assert real_shift is None and padding_mask is None and prefix is None
        assert actual_seq_qlen is None and actual_seq_kvlen is None
        if prim.keep_prob == 1.0:
            assert drop_mask is None, "keep_prob 1.0 requires drop_mask None"
        discard = None
        if attn_mask is not None:
            assert attn_mask.dtype in (ms.uint8, ms.bool_), f"attn_mask must be uint8 or bool, got {attn_mask.dtype}"
            discard = attn_mask.asnumpy()
            assert discard.shape in ((b, n1, s1, s2), (b, 1, s1, s2), (s1, s2)), f"bad attn_mask shape {discard.shape}"
        out = _masked_attention(q, k, v, prim.scale_value, discard)
        stats = np.zeros((b, n1, s1, 8), np.float32)
        return Tensor(stats), Tensor(stats), Tensor(np.zeros((0,), np.float16)), Tensor(out)

    return call


def fused_infer_attention_score_model(query, key, value, *, atten_mask=None, num_heads=1, scale=1.0,
                                      input_layout="BSH", num_key_value_heads=0, **others):
    """A stand-in for ``ops.fused_infer_attention_score`` (the one-token, IncreFlashAttention branch)."""
    assert all(v is None or v == 0 or v is False for v in others.values()), f"unexpected arguments {others}"
    assert input_layout == "BNSD"
    q, k, v = query.asnumpy(), key.asnumpy(), value.asnumpy()
    _check_half(q, k, v)
    b, n, s1, d = q.shape
    assert s1 == 1, "the wrapper uses this kernel for one-token decoding only"
    assert num_heads == n
    kv_heads = num_key_value_heads or num_heads
    assert kv_heads == k.shape[1], "in BNSD, num_key_value_heads must equal the N axis of key/value"
    assert n % kv_heads == 0 and n // kv_heads <= 64
    assert d % 16 == 0 and d <= 512
    s2 = k.shape[2]
    discard = None
    if atten_mask is not None:
        assert atten_mask.dtype in (ms.int8, ms.uint8, ms.bool_)
        discard = atten_mask.asnumpy()
        assert discard.shape in ((b, s2), (b, 1, s2), (b, 1, 1, s2)), f"bad atten_mask shape {discard.shape}"
        discard = discard.reshape(b, 1, 1, s2)
    out = _masked_attention(q, k, v, scale, discard)
    return Tensor(out), Tensor(np.zeros((1,), np.float32))


# ---- inputs ------------------------------------------------------------------------------------------------------


def qkv(rng, sq, sk, dtype=np.float32):
    return (rng.normal(size=(B, N, sq, D)).astype(dtype), rng.normal(size=(B, N_KV, sk, D)).astype(dtype),
            rng.normal(size=(B, N_KV, sk, D)).astype(dtype))


def model_mask(sq, sk, pads=(0, 3)):
    """The LLM's kind of mask: causal (queries at the last sq slots), left padding, every query sees its own slot."""
    q_slots = np.arange(sk - sq, sk)[:, None]
    k_slots = np.arange(sk)[None]
    keep = np.zeros((B, 1, sq, sk), bool)
    for b, pad in enumerate(pads):
        keep[b, 0] = (k_slots <= q_slots) & (k_slots >= pad) | (k_slots == q_slots)
    return keep


def t(x):
    return None if x is None else Tensor(x)


# ---- tests -------------------------------------------------------------------------------------------------------


def test_cpu_uses_the_math_backend():
    assert default_backend() == "math"
    assert Attention(N, N_KV, D).backend == "math"


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_math_attention_matches_repeat_kv_reference(rng, mask_kind):
    q, k, v = qkv(rng, 5, 5)
    keep = model_mask(5, 5)
    mask = {"none": None, "bool": keep,
            "additive": np.where(keep, 0.0, np.finfo(np.float32).min).astype(np.float32)}[mask_kind]
    got = math_attention(t(q), t(k), t(v), t(mask), scale=D ** -0.5).asnumpy()
    want = reference_attention(q, k, v, None if mask is None else keep)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_math_attention_accepts_per_head_masks(rng):
    q, k, v = qkv(rng, 4, 6)
    keep = np.broadcast_to(model_mask(4, 6), (B, N, 4, 6)).copy()
    keep[:, 1, :, 0] = False  # one query head masked differently
    got = math_attention(t(q), t(k), t(v), t(keep), scale=D ** -0.5).asnumpy()
    np.testing.assert_allclose(got, reference_attention(q, k, v, keep), atol=1e-5)


def test_discard_mask_polarity():
    keep = np.array([[True, False, True]])
    np.testing.assert_array_equal(discard_mask(Tensor(keep)).asnumpy(), [[0, 1, 0]])
    additive = np.array([[0.0, np.finfo(np.float32).min, 0.0]], np.float32)
    out = discard_mask(Tensor(additive))
    assert out.dtype == ms.uint8
    np.testing.assert_array_equal(out.asnumpy(), [[0, 1, 0]])


def test_flash_inputs_through_kernel_model_equal_math(rng):
    """Prefill/training: prepared inputs (fp16, BNSD, GQA unrepeated, uint8 1=discard) -> documented semantics."""
    q, k, v = qkv(rng, 7, 7)
    keep = model_mask(7, 7)
    prim = FlashAttentionScore(head_num=N, scale_value=D ** -0.5, input_layout="BNSD")
    fq, fk, fv, fmask = flash_attention_inputs(t(q), t(k), t(v), Tensor(keep[:1]))  # a batch-shared mask
    assert fq.dtype == ms.float16 and fmask.dtype == ms.uint8 and fmask.shape == (B, 1, 7, 7)
    out = flash_attention_score_model(prim)(fq, fk, fv, None, None, None, fmask, None)[3].asnumpy()
    halves = [x.astype(np.float16).astype(np.float32) for x in (q, k, v)]
    want = math_attention(*map(t, halves), Tensor(np.broadcast_to(keep[:1], keep.shape).copy()),
                          scale=D ** -0.5).asnumpy()
    np.testing.assert_allclose(out.astype(np.float32), want, atol=2e-3)


def test_decode_inputs_through_kernel_model_equal_math(rng):
    """One-token decode over a static cache of 12 slots of which 9 are written."""
    q, k, v = qkv(rng, 1, 12)
    keep = model_mask(1, 9)
    keep = np.concatenate([keep, np.zeros((B, 1, 1, 3), bool)], axis=-1)  # unwritten future slots
    dq, dk, dv, dmask = decode_attention_inputs(t(q), t(k), t(v), t(keep))
    assert dmask.shape == (B, 1, 1, 12)
    out = fused_infer_attention_score_model(dq, dk, dv, atten_mask=dmask, num_heads=N, scale=D ** -0.5,
                                            input_layout="BNSD", num_key_value_heads=N_KV)[0].asnumpy()
    halves = [x.astype(np.float16).astype(np.float32) for x in (q, k, v)]
    want = math_attention(*map(t, halves), t(keep), scale=D ** -0.5).asnumpy()
    np.testing.assert_allclose(out.astype(np.float32), want, atol=2e-3)


def test_ascend_backend_cell_with_kernel_models_equals_math_backend(rng):
    """The whole Ascend wrapper (kernel choice by query length, call signature, output index, casts back)."""
    ascend = Attention(N, N_KV, D, dropout=0.1, backend="ascend")
    ascend.flash_op = flash_attention_score_model(ascend.flash_op)
    ascend.decode_op = fused_infer_attention_score_model
    ascend.set_train(False)
    math = Attention(N, N_KV, D, dropout=0.1, backend="math")
    math.set_train(False)
    for sq, sk in [(6, 6), (1, 10)]:  # prefill -> FlashAttentionScore, decode -> fused_infer_attention_score
        q, k, v = [x.astype(np.float16).astype(np.float32) for x in qkv(rng, sq, sk)]
        keep = t(model_mask(sq, sk))
        got = ascend(t(q), t(k), t(v), keep)
        assert got.dtype == ms.float32 and got.shape == (B, N, sq, D)
        np.testing.assert_allclose(got.asnumpy(), math(t(q), t(k), t(v), keep).asnumpy(), atol=2e-3)


def test_ascend_training_uses_keep_prob_kernel():
    ascend = Attention(N, N_KV, D, dropout=0.1, backend="ascend")
    assert ascend.flash_op.keep_prob == 1.0
    assert abs(ascend.flash_train_op.keep_prob - 0.9) < 1e-7
    assert Attention(N, N_KV, D, dropout=0.0, backend="ascend").flash_train_op is None


def test_both_backends_take_what_the_model_passes_them(rng):
    """The LLM hands attention an additive mask built once per forward, and keys transposed (B, N_kv, D, Sk) when
    they come from a CPU static cache: either backend gives the bool-mask, BNSD-key result."""
    ascend = Attention(N, N_KV, D, backend="ascend")
    ascend.flash_op = flash_attention_score_model(ascend.flash_op)
    ascend.decode_op = fused_infer_attention_score_model
    ascend.set_train(False)
    math = Attention(N, N_KV, D, backend="math")
    math.set_train(False)
    for sq, sk in [(5, 5), (1, 9)]:
        q, k, v = [x.astype(np.float16).astype(np.float32) for x in qkv(rng, sq, sk)]
        keep = t(model_mask(sq, sk))
        want = math(t(q), t(k), t(v), keep).asnumpy()
        k_t = t(np.ascontiguousarray(k.transpose(0, 1, 3, 2)))
        for cell, tol in ((math, 1e-5), (ascend, 2e-3)):
            got = cell(t(q), k_t, t(v), additive_mask(keep), True)
            np.testing.assert_allclose(got.asnumpy(), want, atol=tol)
