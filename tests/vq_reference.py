"""The PyTorch oracle for the vision tokenizer: HF transformers' ``Emu3VQVAE`` with random weights.

``make_reference(config)`` builds it from one of our configs, randomises every tensor (BatchNorm running stats
and norm affine weights included, or wiring mistakes stay invisible) and writes the weights in the *released*
BAAI layout, so our strict ``from_pretrained`` is exercised on the way.
"""

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import Emu3VQVAE, Emu3VQVAEConfig

from emu3.tokenizer.hf_names import hf_config_kwargs, is_attention_projection, released_to_hf

def hf_config(config):
    return Emu3VQVAEConfig(**hf_config_kwargs(config))


def make_reference(config, released_names, out_dir, seed=0):
    """Random HF model + the same weights saved under ``released_names`` in ``out_dir/model.safetensors``."""
    torch.manual_seed(seed)
    model = Emu3VQVAE(hf_config(config)).eval()
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif name.endswith("running_mean") or name.endswith(".bias"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
            elif "norm" in name and name.endswith(".weight"):
                tensor.copy_(1.0 + 0.2 * torch.randn(tensor.shape, generator=gen))
            elif name == "quantize.embedding.weight":
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
            else:  # conv / projection weights, scaled to keep activations O(1) through the depth
                fan_in = int(np.prod(tensor.shape[1:])) if tensor.ndim > 1 else 1
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / np.sqrt(fan_in))
        _codebook_from_latents(model, gen)
    released = {}
    for name in released_names:
        tensor = state[released_to_hf(name)].numpy()
        if is_attention_projection(name):
            tensor = tensor.reshape(tensor.shape + (1, 1))  # linear [C, C] -> released 1x1 conv [C, C, 1, 1]
        released[name] = np.array(tensor, order="C")
    save_file(released, f"{out_dir}/model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    return model


def _codebook_from_latents(model, gen):
    """Random weights shrink the latents far below a N(0, 1) codebook, so every position would pick the same
    code; draw the codebook around latents of a calibration clip instead (as VQ training would place it)."""
    factor = 2 ** (len(model.config.channel_multiplier) - 1)
    clip = torch.rand((2, model.config.temporal_downsample_factor, 3, 4 * factor, 4 * factor), generator=gen) * 2 - 1
    latents = model.quant_conv(model.encoder(clip).permute(0, 2, 1, 3, 4)).permute(0, 1, 3, 4, 2)
    latents = latents.reshape(-1, latents.shape[-1])
    codebook = model.quantize.embedding.weight
    picks = torch.randint(0, latents.shape[0], (codebook.shape[0],), generator=gen)
    noise = torch.randn(codebook.shape, generator=gen) * latents.std(dim=0)
    codebook.copy_(latents[picks] + noise)


def reference_encode(model, pixels):
    """Codes from the oracle, bypassing its per-image crop (which slices the wrong axes for video)."""
    x = torch.from_numpy(pixels)
    if x.ndim == 4:
        x = x.unsqueeze(1).repeat(1, model.config.temporal_downsample_factor, 1, 1, 1)
    with torch.no_grad():
        h = model.encoder(x).permute(0, 2, 1, 3, 4)
        h = model.quant_conv(h).permute(0, 2, 1, 3, 4)
        codes = model.quantize(h)
    return codes[:, 0].numpy() if pixels.ndim == 4 else codes.numpy()


def reference_decode(model, codes):
    with torch.no_grad():
        return model.decode(torch.from_numpy(codes.astype(np.int64))).numpy()
