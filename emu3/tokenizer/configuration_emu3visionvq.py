"""Configuration of the Emu3 vision tokenizer (same fields and defaults as ``BAAI/Emu3-VisionTokenizer``)."""

import math

from ..configuration_utils import PretrainedConfig


class Emu3VisionVQConfig(PretrainedConfig):
    model_type = "Emu3VisionVQ"
    field_types = {"codebook_size": int, "embed_dim": int, "z_channels": int, "double_z": bool, "in_channels": int,
                   "out_channels": int, "temporal_downsample_factor": int, "ch": int, "ch_mult": list,
                   "num_res_blocks": int, "attn_resolutions": list, "dropout": float}

    def __init__(
        self,
        codebook_size: int = 32768,
        embed_dim: int = 4,
        z_channels: int = 4,
        double_z: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
        temporal_downsample_factor: int = 4,
        ch: int = 256,
        ch_mult=(1, 2, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions=(3,),
        dropout: float = 0.0,
        **kwargs,
    ):
        kwargs.pop("model_type", None)
        super().__init__(**kwargs)
        self.codebook_size = codebook_size
        self.embed_dim = embed_dim
        self.z_channels = z_channels
        self.double_z = double_z
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.temporal_downsample_factor = temporal_downsample_factor
        self.ch = ch
        self.ch_mult = list(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.attn_resolutions = list(attn_resolutions)
        self.dropout = dropout
        self._validate()

    def _validate(self):
        problems = self.type_problems()
        if problems:
            raise ValueError("invalid Emu3VisionVQConfig: " + "; ".join(problems))
        if self.embed_dim != self.z_channels:
            # The decoder runs z and zq through the same temporal blocks, stacked on the batch axis.
            problems.append(f"embed_dim ({self.embed_dim}) must equal z_channels ({self.z_channels})")
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % 32 for w in widths):
            problems.append(f"every stage width ch*ch_mult must be a multiple of 32 (GroupNorm groups); got {widths}")
        factor = self.temporal_downsample_factor
        if factor < 1 or 2 ** int(math.log2(factor)) != factor:
            problems.append(f"temporal_downsample_factor must be a power of two, got {factor}")
        if problems:
            raise ValueError("invalid Emu3VisionVQConfig: " + "; ".join(problems))

    @property
    def spatial_factor(self) -> int:
        """Pixels per token along each side: 2^(number of downsampling stages)."""
        return 2 ** (len(self.ch_mult) - 1)
