"""DeepSpeed-Ulysses sequence parallelism for Emu3ForCausalLM, applied from outside the plain model.

Each of the P ranks of a sequence-parallel group holds 1/P of every sample's tokens (consecutive slices:
rank r has tokens [r S/P, (r+1) S/P)). Everything outside attention is per token, so it runs on the slice as
is; around the attention core an all-to-all trades the sequence split for a head split — q (B, N, S/P, D) ->
(B, N/P, S, D), k/v (B, N_kv, S/P, D) -> (B, N_kv/P, S, D) — so that the core sees every key, with the
full-sequence causal/padding mask, and a second all-to-all brings the output back to (B, N, S/P, D). RoPE is
applied before the exchange with each token's full-sequence position.

Unlike mindone's port, the hidden states are not gathered before the final norm: the labels are shifted in the
data (``train.data.next_token_targets``), so each token's loss needs only its own logits, and each rank computes
the norm, the lm_head and the loss of its own tokens — 1/P of the vocabulary projection each instead of P copies
of the whole one (184,622 x 4,200 fp32 logits are 3 GB). Each rank's loss is a sum over its tokens divided by the
step's global token count, so summing parameter gradients over all ranks (what the data-parallel / ZeRO
reduction does anyway) gives exactly the one-device gradient: no gradient rescaling anywhere.
"""

import mindspore as ms
from mindspore import nn, ops

from ..mllm.modeling_emu3 import causal_mask
from ..nn.attention import Attention, additive_mask
from .checks import check_sequence_parallel
from .collectives import AllToAll


class UlyssesAttention(nn.Cell):
    """An attention core run on all tokens and 1/P of the heads, between two all-to-alls."""

    def __init__(self, core, group):
        super().__init__()
        p = group.size
        self.core = Attention(core.num_heads // p, core.num_kv_heads // p, core.head_dim, core.dropout_p,
                              backend=core.backend)
        self.to_heads = AllToAll(group, split_dim=1, concat_dim=2)
        self.to_tokens = AllToAll(group, split_dim=2, concat_dim=1)

    def construct(self, query, key, value, mask=None, transposed_keys=False):
        if transposed_keys:
            raise ValueError("sequence parallelism is for training: no KV cache")
        out = self.core(self.to_heads(query), self.to_heads(key), self.to_heads(value), mask)
        return self.to_tokens(out)


class SequenceParallelCausalLM(nn.Cell):
    """``lm`` (an Emu3ForCausalLM) run on this rank's slice of the tokens.

    ``construct(input_ids, attention_mask)``: ``input_ids`` (B, S/P) this rank's tokens, ``attention_mask``
    (B, S) the whole samples' padding mask; returns (None, logits of this rank's tokens, None) as the model does.
    The attention cores of ``lm`` are replaced in place; parameter names are unchanged.
    """

    def __init__(self, lm, group):
        super().__init__(auto_prefix=False)
        check_sequence_parallel(lm.config, group.size)
        self.lm = lm
        self.size, self.rank = group.size, group.rank
        for layer in lm.model.layers:
            layer.self_attn.attention = UlyssesAttention(layer.self_attn.attention, group)

    def construct(self, input_ids, attention_mask):
        model = self.lm.model
        local = input_ids.shape[1]
        length = local * self.size
        positions = ops.arange(length, dtype=ms.int32)
        mask = additive_mask(causal_mask(attention_mask, positions, length))
        mine = positions[self.rank * local:(self.rank + 1) * local].reshape(1, local)
        cos, sin = model.rotary_emb(mine, positions[-1] + 1)
        hidden_states = model.dropout(model.embed_tokens(input_ids))
        for layer in model.layers:
            hidden_states = layer(hidden_states, cos, sin, mask)
        logits = self.lm.lm_head(model.norm(hidden_states)).astype(ms.float32)
        return None, logits, None


def split_sequence(array, group):
    """This rank's consecutive slice of a (B, S) host array."""
    local = array.shape[1] // group.size
    return array[:, group.rank * local:(group.rank + 1) * local]
