"""Configuration of the Emu3 language model (same fields and defaults as the released ``Emu3Config``).

The defaults describe Emu3-8B (Gen/Chat/Stage1 differ only in ``max_position_embeddings`` and ``image_area``).
Special token ids live here because the released ``config.json`` files carry them.
"""

from ..configuration_utils import PretrainedConfig


_INT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id",
               "img_token_id", "boi_token_id", "eoi_token_id", "eol_token_id", "eof_token_id", "image_area")
SPECIAL_TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "img_token_id", "boi_token_id",
                           "eoi_token_id", "eol_token_id", "eof_token_id")


class Emu3Config(PretrainedConfig):
    model_type = "Emu3"
    field_types = {**{name: int for name in _INT_FIELDS}, "rms_norm_eps": float, "rope_theta": float,
                   "attention_dropout": float, "initializer_range": float, "hidden_act": str}

    def __init__(
        self,
        vocab_size: int = 184622,
        hidden_size: int = 4096,
        intermediate_size: int = 14336,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int = 8,
        hidden_act: str = "silu",
        max_position_embeddings: int = 9216,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        use_cache: bool = True,
        pad_token_id: int = 151643,
        bos_token_id: int = 151849,
        eos_token_id: int = 151850,
        img_token_id: int = 151851,
        boi_token_id: int = 151852,
        eoi_token_id: int = 151853,
        eol_token_id: int = 151846,
        eof_token_id: int = 151847,
        image_area: int = 720 * 720,
        pretraining_tp: int = 1,
        tie_word_embeddings: bool = False,
        rope_theta: float = 1000000.0,
        rope_scaling: dict = None,
        attention_dropout: float = 0.1,
        **kwargs,
    ):
        kwargs.pop("model_type", None)
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        # Older configs leave it out: then every query head has its own key/value head (plain multi-head attention).
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.img_token_id = img_token_id
        self.boi_token_id = boi_token_id
        self.eoi_token_id = eoi_token_id
        self.eol_token_id = eol_token_id
        self.eof_token_id = eof_token_id
        self.image_area = image_area
        # > 1 only made the original slice its matmuls into partial sums: the same math, so it is stored, not used.
        self.pretraining_tp = pretraining_tp
        self.tie_word_embeddings = tie_word_embeddings
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attention_dropout = attention_dropout
        self._validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def _validate(self):
        problems = self.type_problems()
        if problems:  # the checks below would fail on the wrong types with a confusing message
            raise ValueError("invalid Emu3Config: " + "; ".join(problems))
        # An id outside the vocabulary fails much later as an opaque Gather error inside the model.
        outside = [f"{name}={getattr(self, name)}" for name in SPECIAL_TOKEN_ID_FIELDS
                   if getattr(self, name) is not None and not 0 <= getattr(self, name) < self.vocab_size]
        if outside:
            problems.append(f"special token ids must lie in [0, vocab_size={self.vocab_size}): {', '.join(outside)}")
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                            f"({self.num_attention_heads})")
        elif self.head_dim % 2:
            problems.append(f"head_dim = hidden_size / num_attention_heads must be even for rotary embeddings, "
                            f"got {self.head_dim}")
        if self.num_key_value_heads < 1 or self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                            f"num_key_value_heads ({self.num_key_value_heads}) for grouped-query attention")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act must be 'silu' (the released models' SwiGLU), got {self.hidden_act!r}")
        if self.tie_word_embeddings:
            problems.append("tie_word_embeddings=True is not supported: Emu3 has a separate lm_head")
        if not 0.0 <= self.attention_dropout < 1.0:
            problems.append(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        problems += self._rope_scaling_problems()
        if problems:
            raise ValueError("invalid Emu3Config: " + "; ".join(problems))

    def _rope_scaling_problems(self):
        scaling = self.rope_scaling
        if scaling is None:
            return []
        if not isinstance(scaling, dict) or set(scaling) != {"type", "factor"}:
            return [f"rope_scaling must be a dict with exactly the fields 'type' and 'factor', got {scaling!r}"]
        problems = []
        if scaling["type"] not in ("linear", "dynamic"):
            problems.append(f"rope_scaling['type'] must be 'linear' or 'dynamic', got {scaling['type']!r}")
        factor = scaling["factor"]
        if not isinstance(factor, float) or factor <= 1.0:
            problems.append(f"rope_scaling['factor'] must be a float > 1, got {factor!r}")
        return problems
