"""Tensor names of the vision tokenizer: the released BAAI layout (ours) -> HF transformers' ``Emu3VQVAE``.

Used to run transformers' PyTorch implementation on our weights (parity tests, benchmarks). Attention
projections are 1x1 convs [C, C, 1, 1] in the release and linears [C, C] in transformers.
"""

import re

# First match wins; anything else keeps its name.
_RULES = [
    (r"^(encoder|decoder)\.mid\.attn_1\.(q|k|v)\.", r"\1.middle_block.attn_1.\2_proj."),
    (r"^(encoder|decoder)\.mid\.attn_1\.proj_out\.", r"\1.middle_block.attn_1.out_proj."),
    (r"^(encoder|decoder)\.mid\.attn_1\.norm\.", r"\1.middle_block.attn_norm."),
    (r"^(encoder|decoder)\.mid\.", r"\1.middle_block."),
    (r"^encoder\.down\.(\d+)\.attn\.(\d+)\.(q|k|v)\.", r"encoder.down_block.down.\1.attn.\2.\3_proj."),
    (r"^encoder\.down\.(\d+)\.attn\.(\d+)\.proj_out\.", r"encoder.down_block.down.\1.attn.\2.out_proj."),
    (r"^encoder\.down\.(\d+)\.attn\.(\d+)\.norm\.", r"encoder.down_block.down.\1.attn_norms.\2."),
    (r"^encoder\.down\.", r"encoder.down_block.down."),
    (r"^decoder\.up\.(\d+)\.attn\.(\d+)\.(q|k|v)\.", r"decoder.up_block.up.\1.attn.\2.\3_proj."),
    (r"^decoder\.up\.(\d+)\.attn\.(\d+)\.proj_out\.", r"decoder.up_block.up.\1.attn.\2.out_proj."),
    (r"^decoder\.up\.(\d+)\.attn\.(\d+)\.norm\.", r"decoder.up_block.up.\1.attn_norms.\2."),
    (r"^decoder\.up\.", r"decoder.up_block.up."),
]
_ATTENTION_PROJECTION = re.compile(r"attn(_1|\.\d+)\.(q|k|v|proj_out)\.weight$")


def released_to_hf(name):
    for pattern, repl in _RULES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return name


def is_attention_projection(released_name):
    """True for the 1x1-conv attention weights that transformers stores as [C, C] linears."""
    return bool(_ATTENTION_PROJECTION.search(released_name))


def hf_config_kwargs(config):
    """``transformers.Emu3VQVAEConfig`` arguments for one of our configs."""
    return dict(
        codebook_size=config.codebook_size, embed_dim=config.embed_dim, latent_channels=config.z_channels,
        double_latent=config.double_z, in_channels=config.in_channels, out_channels=config.out_channels,
        temporal_downsample_factor=config.temporal_downsample_factor, base_channels=config.ch,
        channel_multiplier=list(config.ch_mult), num_res_blocks=config.num_res_blocks,
        attn_resolutions=list(config.attn_resolutions), hidden_size=config.ch * config.ch_mult[-1],
        num_attention_heads=1, attention_dropout=config.dropout,
    )
