"""The Emu3 language model (a Llama-architecture decoder with grouped-query attention) in MindSpore.

Module attributes are named like the released ``BAAI/Emu3-*`` checkpoints (``model.layers.N.self_attn.q_proj``,
``lm_head``…), so loading is a lookup; the HF ``-hf`` layout is mapped by ``checkpoint_rename``.

Shapes: B batch, S tokens in this call, K key slots (S without a cache; past + S with a ``DynamicCache``; the
cache length with a ``StaticCache``), N query heads, N_kv key/value heads, D head dim.

Incremental decoding (see ``emu3.mllm.decoding.Emu3CachedStep``): make a ``StaticCache``, run the prompt with
``cache_position = arange(S)``, then one token at a time with ``cache_position = [t]``. Keep the 2-D
``attention_mask`` at the cache length (B, max_length) so every decode step has the same shapes (one compile).
"""

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from ..modeling_utils import PreTrainedModel
from ..nn.attention import Attention, additive_mask
from ..nn.rms_norm import RMSNorm
from .cache import DynamicCache
from .configuration_emu3 import Emu3Config
from .generation import GenerationMixin

IGNORE_INDEX = -100


# ---- building blocks ---------------------------------------------------------------------------------------------


def _init(shape, std, dtype, random_init):
    # Zeros when the weights are about to be loaded: as large as the model in its target dtype, but instant.
    return initializer(Normal(std) if random_init else "zeros", shape, dtype)


def linear(in_features, out_features, config, dtype, random_init):
    """Bias-free projection with a torch-layout [out, in] ``weight``.

    ``nn.Dense`` is used because it is the fastest portable linear for decode shapes on CPU: it runs as one
    MatMul(transpose_b), while mint.nn.functional.linear and matmul(x, w.T) transpose the weight first, an order
    of magnitude slower in pynative (``scripts/benchmark.py decode`` times the step's matmul kernels).
    """
    return nn.Dense(in_features, out_features, has_bias=False, dtype=dtype,
                    weight_init=_init((out_features, in_features), config.initializer_range, dtype, random_init))


class Emu3Embedding(nn.Cell):
    """Token embedding whose parameter is called ``weight`` (``nn.Embedding`` calls it ``embedding_table``).

    ``padding_idx`` behaves as in the original's ``torch.nn.Embedding(..., padding_idx)``: its row is zeroed at
    init, and in training it gets no gradient — also where the pad id is a real token (Emu3's pad id is
    <|endoftext|>, which ends every SFT sample).
    """

    def __init__(self, num_embeddings, embedding_dim, config, dtype=ms.float32, random_init=True, padding_idx=None):
        super().__init__()
        self.weight = Parameter(_init((num_embeddings, embedding_dim), config.initializer_range, dtype, random_init))
        valid = padding_idx is not None and 0 <= padding_idx < num_embeddings
        self.padding_idx = padding_idx if valid else None
        if random_init and valid:
            table = self.weight.asnumpy()
            table[padding_idx] = 0
            self.weight.set_data(Tensor(table))

    def construct(self, input_ids):
        return embedding_lookup(self.weight, input_ids, self.padding_idx, self.training)


def embedding_lookup(weight, input_ids, padding_idx=None, training=False):
    """Rows of ``weight``; in training the ``padding_idx`` rows pass no gradient back."""
    embeds = ops.gather(weight, input_ids, 0)
    if training and padding_idx is not None:
        trained = (input_ids != padding_idx).expand_dims(-1)
        embeds = ops.where(trained, embeds, ops.stop_gradient(embeds))
    return embeds


class HalfSwap(nn.Cell):
    """Swaps the two halves of the last axis, ``cat(x2, x1)``, as one gather (rotate_half up to the sign that
    ``Emu3RotaryEmbedding``'s signed sin carries). Its gradient is the same gather, since the swap is its own
    inverse; MindSpore's generic gather gradient (a transpose and a scatter-add per call) took ~4 % of a training
    step of the tiny world's LLM."""

    def __init__(self, dim):
        super().__init__()
        half = dim // 2
        self.index = Tensor(np.concatenate([np.arange(half, dim), np.arange(half)]).astype(np.int32))

    def construct(self, x):
        return ops.gather(x, self.index, x.ndim - 1)

    def bprop(self, x, out, dout):
        return (ops.gather(dout, self.index, dout.ndim - 1),)


def apply_rotary(x, cos, signed_sin, half_swap):
    """Non-interleaved RoPE, x * cos + rotate_half(x) * sin with rotate_half(x) = (-x2, x1).

    x (B, N, S, D); cos and ``signed_sin`` (B or 1, S, D) fp32 from ``Emu3RotaryEmbedding``, whose sin already
    carries rotate_half's minus sign on the first half, so rotate_half is one gather (``HalfSwap``) instead of two
    slices, a negation and a concat: the same products, and on CPU each small op launched costs a noticeable share
    of a decode step. Applied in x's dtype, as the original does.
    """
    cos = cos.expand_dims(1).astype(x.dtype)
    sin = signed_sin.expand_dims(1).astype(x.dtype)
    return x * cos + half_swap(x) * sin


class Emu3RotaryEmbedding(nn.Cell):
    """cos/sin of RoPE for given positions, with the original's ``linear`` and ``dynamic`` (NTK) scalings.

    Computed from the positions on the fly (no table), which equals the original's cached table gathered by
    ``position_ids`` and needs no regrowth for long sequences.
    """

    def __init__(self, config: Emu3Config):
        super().__init__()
        self.dim = config.head_dim
        self.base = float(config.rope_theta)
        self.max_position_embeddings = config.max_position_embeddings
        scaling = config.rope_scaling or {}
        self.scaling_type = scaling.get("type", "none")
        self.factor = float(scaling.get("factor", 1.0))
        self.exponents = Tensor(np.arange(0, self.dim, 2, dtype=np.float32) / self.dim)
        half = self.dim // 2
        self.half_signs = Tensor(np.concatenate([-np.ones(half), np.ones(half)]).astype(np.float32))
        self.inv_freq = Tensor(1.0 / (np.float32(self.base) ** (np.arange(0, self.dim, 2, dtype=np.float32)
                                                                / np.float32(self.dim))))

    def construct(self, position_ids, kv_length):
        """(cos, signed_sin), each (B or 1, S, D) fp32; signed_sin is sin with its first half negated (see
        ``apply_rotary``). position_ids (B or 1, S) ints; kv_length: tokens in the sequence so far (only dynamic
        scaling uses it)."""
        t = position_ids.astype(ms.float32)
        inv_freq = self.inv_freq
        if self.scaling_type == "linear":
            t = t / self.factor
        elif self.scaling_type == "dynamic":
            # The original grows its table with a larger base once the sequence exceeds max_position_embeddings;
            # at or below it the expression below is exactly the unscaled base.
            seq_len = ops.maximum(kv_length.astype(ms.float32), float(self.max_position_embeddings))
            ratio = self.factor * seq_len / self.max_position_embeddings - (self.factor - 1)
            base = self.base * ops.pow(ratio, self.dim / (self.dim - 2))
            inv_freq = 1.0 / ops.pow(base, self.exponents)
        freqs = t.expand_dims(-1) * inv_freq
        emb = ops.cat((freqs, freqs), axis=-1)
        return ops.cos(emb), ops.sin(emb) * self.half_signs


class Emu3MLP(nn.Cell):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config, dtype=ms.float32, random_init=True):
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = linear(h, i, config, dtype, random_init)
        self.up_proj = linear(h, i, config, dtype, random_init)
        self.down_proj = linear(i, h, config, dtype, random_init)

    def construct(self, x):
        return self.down_proj(ops.silu(self.gate_proj(x)) * self.up_proj(x))


class Emu3Attention(nn.Cell):
    """Projections + RoPE + cache update around the device's attention kernel (``emu3.nn.attention``)."""

    def __init__(self, config, layer_idx, dtype=ms.float32, random_init=True):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        h = config.hidden_size
        self.q_proj = linear(h, self.num_heads * self.head_dim, config, dtype, random_init)
        self.k_proj = linear(h, self.num_kv_heads * self.head_dim, config, dtype, random_init)
        self.v_proj = linear(h, self.num_kv_heads * self.head_dim, config, dtype, random_init)
        self.o_proj = linear(self.num_heads * self.head_dim, h, config, dtype, random_init)
        self.half_swap = HalfSwap(self.head_dim)
        self.attention = Attention(self.num_heads, self.num_kv_heads, self.head_dim, dropout=config.attention_dropout)

    def construct(self, hidden_states, cos, sin, mask, past_key_values=None, cache_position=None):
        b, s, _ = hidden_states.shape
        q = self.q_proj(hidden_states).reshape(b, s, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.k_proj(hidden_states).reshape(b, s, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.v_proj(hidden_states).reshape(b, s, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        q = apply_rotary(q, cos, sin, self.half_swap)
        k = apply_rotary(k, cos, sin, self.half_swap)
        transposed_keys = False
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx, cache_position)
            k, v = k.astype(q.dtype), v.astype(q.dtype)
            transposed_keys = past_key_values.transposed_keys
        out = self.attention(q, k, v, mask, transposed_keys)  # (B, N, S, D)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, s, self.num_heads * self.head_dim))


class Emu3DecoderLayer(nn.Cell):
    """Pre-norm block: x + Dropout(Attn(RMSNorm(x))), then + Dropout(MLP(RMSNorm(.)))."""

    def __init__(self, config, layer_idx, dtype=ms.float32, random_init=True):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = Emu3Attention(config, layer_idx, dtype, random_init)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = Emu3MLP(config, dtype, random_init)
        # The original reuses attention_dropout for the residual branches (training only).
        self.dropout = nn.Dropout(p=config.attention_dropout)

    def construct(self, hidden_states, cos, sin, mask, past_key_values=None, cache_position=None):
        attn = self.self_attn(self.input_layernorm(hidden_states), cos, sin, mask, past_key_values, cache_position)
        hidden_states = hidden_states + self.dropout(attn)
        return hidden_states + self.dropout(self.mlp(self.post_attention_layernorm(hidden_states)))


# ---- masks, positions, loss --------------------------------------------------------------------------------------


def causal_mask(attention_mask, cache_position, key_length):
    """Bool (B or 1, 1, S, K), True = may attend: key slot j <= the query's slot and not padding.

    ``attention_mask`` is the 2-D (B, M) padding mask (1 = token, 0 = pad) over slots 0..M-1, M <= K; slots
    beyond M count as padding (they are in the future anyway). Every query also sees its own slot, so no row is
    fully masked — padded queries produce finite garbage instead of NaN, which fused kernels need, and valid
    queries are unaffected (their own slot is already allowed).
    """
    s = cache_position.shape[0]
    slots = ops.arange(key_length, dtype=ms.int32).reshape(1, key_length)
    query_slots = cache_position.astype(ms.int32).reshape(s, 1)
    keep = slots <= query_slots
    if attention_mask is None:
        return keep.reshape(1, 1, s, key_length)
    width = attention_mask.shape[1]
    if width > key_length:
        raise ValueError(f"attention_mask covers {width} positions but attention has only {key_length} key slots")
    padding = attention_mask != 0
    if width < key_length:
        padding = ops.cat((padding, ops.zeros((attention_mask.shape[0], key_length - width), ms.bool_)), axis=1)
    keep = ops.logical_and(keep.reshape(1, 1, s, key_length), padding.reshape(-1, 1, 1, key_length))
    return ops.logical_or(keep, (slots == query_slots).reshape(1, 1, s, key_length))


def position_ids_from_attention_mask(attention_mask):
    """Positions for a left-padded batch, as the original's generation: cumsum(mask) - 1, padded slots set to 1."""
    mask = attention_mask.astype(ms.int32)
    positions = ops.cumsum(mask, axis=-1) - 1
    return ops.select(mask == 0, ops.ones_like(positions), positions)


def causal_lm_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """Next-token cross-entropy: logits[:, :-1] against labels[:, 1:], mean over labels != ignore_index."""
    vocab = logits.shape[-1]
    shifted_logits = logits[:, :-1].reshape(-1, vocab).astype(ms.float32)
    shifted_labels = labels[:, 1:].reshape(-1).astype(ms.int32)
    return ops.cross_entropy(shifted_logits, shifted_labels, ignore_index=ignore_index, reduction="mean")


# ---- models ------------------------------------------------------------------------------------------------------

# Published names -> ours. The release uses our names; the HF "-hf" checkpoints (Emu3ForConditionalGeneration)
# store the LLM as text_model.model.* / text_model.lm_head.* (as uploaded) or model.text_model.* / lm_head.*
# (as saved by current transformers).
_HF_PREFIXES = (("text_model.model.", "model."), ("text_model.lm_head.", "lm_head."), ("model.text_model.", "model."))


def released_name(name):
    """Our parameter name for a published tensor name; None for tensors that are not the LLM's (the -hf
    checkpoints also hold the vision tokenizer under ``vqmodel.`` / ``model.vqmodel.``)."""
    if name.startswith(("vqmodel.", "model.vqmodel.")):
        return None
    for old, new in _HF_PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


class Emu3PreTrainedModel(PreTrainedModel):
    config_class = Emu3Config
    checkpoint_rename = staticmethod(released_name)

    @classmethod
    def _empty_for_loading(cls, config, policy):
        # Built directly in the target dtype with zero (lazy) weights; the loader then streams the shards in,
        # casting tensor by tensor, so peak host memory is about the model in its target dtype plus the largest
        # single tensor — never an fp32 copy of the model.
        return cls(config, dtype=policy.param_dtype, random_init=False)


class Emu3Model(Emu3PreTrainedModel):
    """Embeddings -> decoder layers -> final norm; returns (hidden_states, past_key_values)."""

    def __init__(self, config: Emu3Config, dtype=ms.float32, random_init=True):
        super().__init__(config)
        self.embed_tokens = Emu3Embedding(config.vocab_size, config.hidden_size, config, dtype, random_init,
                                          padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(p=config.attention_dropout)
        self.layers = nn.CellList([Emu3DecoderLayer(config, i, dtype, random_init)
                                   for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Emu3RotaryEmbedding(config)

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, use_cache=None, cache_position=None):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        seq_len = inputs_embeds.shape[1]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()  # pynative only; graph mode passes a StaticCache
        if cache_position is None:
            past = 0 if past_key_values is None else past_key_values.get_seq_length()
            cache_position = ops.arange(past, past + seq_len, dtype=ms.int32)
        key_length = seq_len if past_key_values is None else past_key_values.key_length(seq_len)
        # Additive once here rather than in each layer's attention.
        mask = additive_mask(causal_mask(attention_mask, cache_position, key_length))
        if position_ids is None:
            position_ids = cache_position.reshape(1, seq_len)
        cos, sin = self.rotary_emb(position_ids, cache_position[-1] + 1)

        hidden_states = self.dropout(inputs_embeds)
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos, sin, mask, past_key_values, cache_position)
        return self.norm(hidden_states), past_key_values


class Emu3ForCausalLM(Emu3PreTrainedModel, GenerationMixin):
    """Emu3Model + untied lm_head. ``construct`` returns (loss or None, logits fp32 (B, S, V), past_key_values)."""

    def __init__(self, config: Emu3Config, dtype=ms.float32, random_init=True):
        super().__init__(config)
        self.model = Emu3Model(config, dtype, random_init)
        self.lm_head = linear(config.hidden_size, config.vocab_size, config, dtype, random_init)

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, cache_position=None, logits_to_keep=0):
        """``logits_to_keep`` = n > 0 computes logits for the last n positions only (generation needs 1)."""
        hidden_states, past_key_values = self.model(input_ids, attention_mask, position_ids, past_key_values,
                                                    inputs_embeds, use_cache, cache_position)
        if 0 < logits_to_keep < hidden_states.shape[1]:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states).astype(ms.float32)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
        return loss, logits, past_key_values
