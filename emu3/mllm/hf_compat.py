"""HF transformers' PyTorch Emu3 (``Emu3TextConfig`` + ``Emu3ForCausalLM``) as a reference for our LLM.

Its text model uses the released tensor names, so only the config needs translating. Used by the parity tests
and the benchmarks to run the PyTorch implementation on our weights; nothing here imports transformers.
"""


def hf_text_config_kwargs(config):
    """``transformers.Emu3TextConfig`` arguments equivalent to one of our ``Emu3Config``s."""
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling:
        rope = {"rope_type": config.rope_scaling["type"], "factor": config.rope_scaling["factor"],
                "rope_theta": config.rope_theta}
    return dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
        # Its defaults are the full-size model's: pass every id and the dropout explicitly.
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        rope_parameters=rope, attention_dropout=config.attention_dropout,
        initializer_range=config.initializer_range, tie_word_embeddings=False, use_cache=False,
    )
