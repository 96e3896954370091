"""``benchmark.py vq``: vision-tokenizer reconstruction (encode + decode), pynative / graph, beside PyTorch's."""

import os

import numpy as np

from bench_common import REPO, parameter_arrays, torch_reference, torch_threads, config_label, timed, torch_rows

VQ_CONFIGS = {name: os.path.join(REPO, "configs", "vision_tokenizer", f"{name}.json") for name in ("small", "released")}


def bench_vq(args):
    import mindspore as ms
    from emu3.device import device_target
    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel

    config = Emu3VisionVQConfig.from_pretrained(VQ_CONFIGS.get(args.config, args.config))
    ms.set_seed(args.seed)
    model = Emu3VisionVQModel.from_config(config, dtype=args.dtype)
    height, width = args.resolution
    frames = args.frames or 1
    shape = (args.batch, frames, 3, height, width) if args.frames else (args.batch, 3, height, width)
    pixels = np.random.default_rng(args.seed).uniform(-1, 1, shape).astype(np.float32)
    images = args.batch * frames
    label = f"{height}x{width}" + (f"x{frames}f" if args.frames else "")
    rows = []

    def row(impl, mode, precision, warmup, step):
        rows.append({"component": f"vq ({config_label(args.config)})",
                     "impl": impl, "mode": mode, "precision": precision, "resolution": label, "batch": args.batch,
                     "warm-up s": f"{warmup:.2f}", "s/step": f"{step:.3f}", "img/s": f"{images / step:.2f}"})

    x = ms.Tensor(pixels)
    for mode in args.mode:
        model.set_graph_mode(mode == "graph")
        warmup, step = timed(lambda: model.decode(model.encode(x)).asnumpy(), args.repeat)
        row(f"mindspore {ms.__version__} ({device_target()})", mode, str(model.compute_dtype).lower(), warmup, step)

    if args.torch:
        from emu3.tokenizer.hf_names import is_attention_projection, released_to_hf

        arrays = {"pixels": pixels, **parameter_arrays(model, released_to_hf, is_attention_projection)}
        row(*torch_rows(args, arrays))
    return rows


def torch_vq(args, arrays):
    """(impl, mode, precision, warm-up s, s/step) of HF transformers' VQ-VAE reconstructing ``arrays["pixels"]``."""
    import torch
    from transformers import Emu3VQVAE, Emu3VQVAEConfig
    from emu3.tokenizer import Emu3VisionVQConfig
    from emu3.tokenizer.hf_names import hf_config_kwargs

    impl = torch_threads(args)
    config = Emu3VisionVQConfig.from_pretrained(VQ_CONFIGS.get(args.config, args.config))
    reference = torch_reference(Emu3VQVAE, Emu3VQVAEConfig(**hf_config_kwargs(config)), arrays)
    tx = torch.from_numpy(arrays["pixels"])

    def reconstruct():
        with torch.no_grad():
            z = tx if tx.ndim == 5 else tx.unsqueeze(1).repeat(1, config.temporal_downsample_factor, 1, 1, 1)
            h = reference.quant_conv(reference.encoder(z).permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4)
            return reference.decode(reference.quantize(h)[:, 0] if tx.ndim == 4 else reference.quantize(h))

    return (impl, "eager", "float32", *timed(reconstruct, args.repeat))
