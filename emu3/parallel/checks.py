"""Layout checks that need no MindSpore: the msrun launcher runs them before starting any process."""


def check_sequence_parallel(config, size, sequence_length=None):
    """Raise ValueError unless a model of ``config`` can run with ``size`` sequence-parallel ranks."""
    problems = []
    if config.num_attention_heads % size:
        problems.append(f"num_attention_heads ({config.num_attention_heads})")
    if config.num_key_value_heads % size:
        problems.append(f"num_key_value_heads ({config.num_key_value_heads})")
    if sequence_length is not None and sequence_length % size:
        problems.append(f"the padded sequence length max_position_embeddings ({sequence_length})")
    if problems:
        raise ValueError(f"--sequence_parallel_shards {size} must divide {', '.join(problems)}: each rank takes an "
                         "equal share of the heads and of the tokens; choose a divisor"
                         + (" or change --max_position_embeddings" if sequence_length is not None
                            and sequence_length % size else ""))
