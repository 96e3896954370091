"""The PyTorch oracle for the LLM: HF transformers' ``Emu3ForCausalLM`` with random weights.

transformers' text model uses the released tensor names, so ``make_reference`` builds it from one of our
``Emu3Config``s, randomises every tensor (norm weights included, or a swapped norm stays invisible) and writes the
weights in the released layout; our strict ``from_pretrained`` is exercised on the way.
"""

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import Emu3ForCausalLM as HFEmu3ForCausalLM
from transformers import Emu3TextConfig

from emu3.mllm.hf_compat import hf_text_config_kwargs


# Image-token ids inside a small test vocabulary (the released ones, 151846+, need the 184,622-token vocabulary).
SMALL_VOCAB_IMAGE_IDS = dict(img_token_id=3, boi_token_id=4, eoi_token_id=5, eol_token_id=6, eof_token_id=7)


def hf_config(config, attn_implementation="eager"):
    hf = Emu3TextConfig(**hf_text_config_kwargs(config))
    hf._attn_implementation = attn_implementation
    return hf


def random_state(model, seed=0):
    """Weights ~ N(0, 1/fan_in) for projections, N(0, 1) embeddings, 1 ± 0.2 norm weights; in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("norm.weight") or "layernorm" in name:
                tensor.copy_(1.0 + 0.2 * torch.randn(tensor.shape, generator=gen))
            elif "embed_tokens" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / np.sqrt(tensor.shape[1]))
    return {name: np.array(t.numpy(), order="C") for name, t in model.state_dict().items()}


def make_reference(config, out_dir, seed=0, attn_implementation="eager", rename=None):
    """Random HF model; its weights written to ``out_dir/model.safetensors`` (released names, or ``rename(name)``)."""
    torch.manual_seed(seed)
    model = HFEmu3ForCausalLM(hf_config(config, attn_implementation)).eval()
    state = random_state(model, seed)
    rename = rename or (lambda name: name)
    save_file({rename(k): v for k, v in state.items()}, f"{out_dir}/model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    return model


def reference_forward(model, input_ids, attention_mask=None, position_ids=None, labels=None):
    """(loss or None, logits) as numpy, from numpy inputs."""
    def t(x):
        return None if x is None else torch.from_numpy(np.asarray(x, dtype=np.int64))

    with torch.no_grad():
        out = model(input_ids=t(input_ids), attention_mask=t(attention_mask), position_ids=t(position_ids),
                    labels=t(labels), use_cache=False)
    loss = None if out.loss is None else float(out.loss)
    return loss, out.logits.float().numpy()
