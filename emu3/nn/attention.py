"""Scaled-dot-product attention with the kernel chosen by device.

One contract for every backend (the model never knows which one runs):

- ``query`` (B, N, Sq, D), ``key``/``value`` (B, N_kv, Sk, D), N a multiple of N_kv; with ``transposed_keys``
  the key is given as (B, N_kv, D, Sk) (how a CPU static cache stores it, see ``emu3.mllm.cache``).
  Grouped-query attention maps query head h to key/value head h // (N / N_kv), exactly like the original's
  ``repeat_kv``.
- ``mask`` is None, a bool tensor broadcastable to (B, 1, Sq, Sk) with **True = may attend**, or an additive float
  mask (0 = attend, a large negative value = masked).
- scores are scaled by 1/sqrt(D); the softmax runs in fp32; dropout on the probabilities only while training;
  the result is (B, N, Sq, D) in the query's dtype.

Backends:

- ``"math"``: matmul + fp32 softmax, runs everywhere (CPU, and Ascend when asked). Query heads sharing a kv head
  are stacked on the sequence axis so K/V are never copied; this is the same arithmetic as repeating them.
- ``"ascend"``: ``FlashAttentionScore`` (BNSD) for prefill and training, ``fused_infer_attention_score`` for
  one-token decoding. Both take GQA natively (no K/V repeat) and a uint8 mask whose **1 means discard** — the
  opposite polarity of ours. The input preparation is done by the plain functions ``flash_attention_inputs`` and
  ``decode_attention_inputs`` so that a CPU test can check them against a numpy model of each kernel's
  documented semantics (``tests/nn/test_attention_contract.py``).
"""

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..device import is_ascend

# Scores q·kᵀ without materialising kᵀ: a transposed copy of a long KV cache costs more than the matmul itself.
_matmul_nt = ops.BatchMatMul(transpose_b=True)
# The primitive rather than ops.matmul (MatMulExt): MatMulExt's gradient copies the probabilities transposed (an
# 8 MB Transpose per layer at 512 tokens, 3 ms each on CPU), BatchMatMul's reads them with transpose_a instead.
_matmul = ops.BatchMatMul()
_MASKED = float(np.finfo(np.float32).min)


def default_backend():
    return "ascend" if is_ascend() else "math"


# ---- portable math path ----------------------------------------------------------------------------------------


def math_attention(query, key, value, mask=None, scale=1.0, dropout=None, transposed_keys=False):
    """The reference semantics of the contract above; ``dropout`` is a Dropout cell (active in training only)."""
    b, n, sq, d = query.shape
    n_kv, sk = key.shape[1], value.shape[2]
    group = n // n_kv
    # Scaling the queries instead of the scores: the same product, on Sq*D values instead of Sq*Sk.
    q = (query * scale).reshape(b, n_kv, group * sq, d)
    scores = _matmul(q, key) if transposed_keys else _matmul_nt(q, key)
    scores = scores.astype(ms.float32).reshape(b, n_kv, group, sq, sk)
    if mask is not None:
        scores = scores + additive_mask(_grouped_mask(mask, group))
    probs = ops.softmax(scores, axis=-1).astype(query.dtype)
    if dropout is not None:
        probs = dropout(probs)
    out = _matmul(probs.reshape(b, n_kv, group * sq, sk), value)
    return out.reshape(b, n, sq, d)


def additive_mask(mask):
    """A bool mask (True = attend) -> fp32 0 / large negative; a float mask is taken as additive already.

    Converted at the mask's own (broadcast) shape, which is smaller than the scores it is added to.
    """
    if mask.dtype == ms.bool_:
        # masked_fill, not a bool->float cast: that cast is a slow kernel on CPU in pynative.
        return ops.masked_fill(ops.zeros(mask.shape, ms.float32), ops.logical_not(mask), _MASKED)
    return mask.astype(ms.float32)


def _grouped_mask(mask, group):
    """(Bm, 1 or N, Sq, Sk) -> (Bm, 1 or N_kv, 1 or group, Sq, Sk), matching the grouped score layout."""
    bm, heads, sq, sk = mask.shape
    if heads == 1:
        return mask.reshape(bm, 1, 1, sq, sk)
    return mask.reshape(bm, heads // group, group, sq, sk)


# ---- Ascend kernels: input preparation (plain functions, testable without the kernels) --------------------------


def ascend_dtype(dtype):
    """The Ascend attention kernels take fp16/bf16 only; an fp32 model runs them in fp16 (as mindone does)."""
    return dtype if dtype in (ms.float16, ms.bfloat16) else ms.float16


def discard_mask(mask):
    """Our mask (True / 0 = attend) -> the kernels' uint8 mask (1 = discard, 0 = keep)."""
    if mask.dtype == ms.bool_:
        return ops.logical_not(mask).astype(ms.uint8)
    return (mask < 0).astype(ms.uint8)  # an additive mask: only masking is expressible, not finite biases


def flash_attention_inputs(query, key, value, mask=None):
    """Arguments for ``FlashAttentionScore(head_num=N, input_layout="BNSD")``: (q, k, v, attn_mask).

    The kernel accepts masks of shape (B, N1, S1, S2), (B, 1, S1, S2) or (S1, S2), so a mask shared by the
    batch is broadcast to B.
    """
    dtype = ascend_dtype(query.dtype)
    attn_mask = None
    if mask is not None:
        b, _, sq, _ = query.shape
        sk = key.shape[2]
        attn_mask = discard_mask(ops.broadcast_to(mask, (b, mask.shape[1], sq, sk)))
    return query.astype(dtype), key.astype(dtype), value.astype(dtype), attn_mask


def decode_attention_inputs(query, key, value, mask=None):
    """Arguments for ``fused_infer_attention_score(..., input_layout="BNSD")`` with one query token.

    Its one-token branch accepts masks (B, S2), (B, 1, S2) or (B, 1, 1, S2): ours is (B, 1, 1, S2).
    """
    dtype = ascend_dtype(query.dtype)
    atten_mask = None
    if mask is not None:
        b, sk = query.shape[0], key.shape[2]
        atten_mask = discard_mask(ops.broadcast_to(mask, (b, 1, 1, sk)))
    return query.astype(dtype), key.astype(dtype), value.astype(dtype), atten_mask


class Attention(nn.Cell):
    """Attention core (no projections) with the contract of this module; ``backend`` defaults by device."""

    def __init__(self, num_heads, num_kv_heads, head_dim, dropout=0.0, backend=None):
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.backend = backend or default_backend()
        if self.backend not in ("math", "ascend"):
            raise ValueError(f"unknown attention backend {self.backend!r}; use 'math' or 'ascend'")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        if self.backend == "ascend":
            from mindspore.ops.operations.nn_ops import FlashAttentionScore

            self.flash_op = FlashAttentionScore(head_num=num_heads, scale_value=self.scale, input_layout="BNSD")
            # The kernel's keep_prob is fixed when it is built, so training with dropout gets its own instance.
            self.flash_train_op = None
            if dropout > 0:
                self.flash_train_op = FlashAttentionScore(head_num=num_heads, keep_prob=1.0 - dropout,
                                                          scale_value=self.scale, input_layout="BNSD")
                self.drop_gen_mask = ops.DropoutGenMask()
                self.keep_prob = Tensor(1.0 - dropout, ms.float32)
            self.decode_op = ops.fused_infer_attention_score

    def construct(self, query, key, value, mask=None, transposed_keys=False):
        if self.backend == "math":
            return math_attention(query, key, value, mask, self.scale, self.dropout if self.training else None,
                                  transposed_keys)
        if transposed_keys:  # the kernels take BNSD keys (a cache built for them stores keys that way)
            key = key.transpose(0, 1, 3, 2)
        if query.shape[2] == 1 and not self.training:
            return self._decode(query, key, value, mask)
        return self._flash(query, key, value, mask)

    def _flash(self, query, key, value, mask):
        q, k, v, attn_mask = flash_attention_inputs(query, key, value, mask)
        if self.training and self.flash_train_op is not None:
            out = self.flash_train_op(q, k, v, None, self._drop_mask(q, k), None, attn_mask, None)[3]
        else:
            out = self.flash_op(q, k, v, None, None, None, attn_mask, None)[3]
        return out.astype(query.dtype)

    def _drop_mask(self, q, k):
        # Bit-packed keep mask, 8 positions per byte: (B, N1, S1, S2 // 8); needs S2 % 8 == 0.
        b, n, sq, _ = q.shape
        sk = k.shape[2]
        bits = self.drop_gen_mask((b, n, sq, sk), self.keep_prob)
        return bits.reshape(b, n, sq, sk // 8)

    def _decode(self, query, key, value, mask):
        q, k, v, atten_mask = decode_attention_inputs(query, key, value, mask)
        out = self.decode_op(q, k, v, atten_mask=atten_mask, num_heads=self.num_heads, scale=self.scale,
                             input_layout="BNSD", num_key_value_heads=self.num_kv_heads)[0]
        return out.astype(query.dtype)
