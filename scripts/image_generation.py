#!/usr/bin/env python
"""Text-to-image generation with Emu3 (Emu3-Gen, or Emu3-Stage1 at 512x512).

The released recipe: the prompt gets POSITIVE_PROMPT appended, NEGATIVE_PROMPT is the unconditional branch of
classifier-free guidance (scale 3.0), sampling with top-k 2048, and every step is constrained to the image layout
(h rows of w visual tokens + end-of-line, then end-of-frame, end-of-image, eos). Saves one PNG per prompt.

Without --model-path / --vq-path it builds models with RANDOM weights (a tiny LLM, the small vision tokenizer of
configs/vision_tokenizer) and says so: that checks the pipeline end to end; the pictures are noise.
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu3  # noqa: E402,F401  (before MindSpore loads: see emu3/_openmp.py)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from autoencode import check_dtype, check_folder, check_output_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VQ_CONFIG = os.path.join(REPO, "configs", "vision_tokenizer", "small.json")

POSITIVE_PROMPT = " masterpiece, film grained, best quality."
NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)
DEFAULT_PROMPT = "a portrait of young girl."

# The LLM built when no --model-path is given: the released vocabulary and token ids, a few tiny layers.
TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=9216, image_area=64 * 64)
TOKENIZER_HINT = ("pass --tokenizer-path (the released model folders hold the tokenizer files), or build a "
                  "tokenizer folder with `python -m emu3.mllm.tokenizer_files OUT_DIR`")


def add_model_args(p):
    """Arguments shared with multimodal_understanding.py."""
    p.add_argument("--model-path", help="folder of an Emu3 LLM (config.json + safetensors); omit for random weights")
    p.add_argument("--vq-path", help="folder of Emu3-VisionTokenizer (config.json, weights, preprocessor_config.json);"
                                     " omit for random weights from --vq-config")
    p.add_argument("--vq-config", default=DEFAULT_VQ_CONFIG, help="vision tokenizer config for random weights")
    p.add_argument("--tokenizer-path", help="folder with emu3.tiktoken + emu3_vision_tokens.txt "
                                            "(default: --model-path)")
    p.add_argument("--mode", choices=("graph", "pynative"), default="graph",
                   help="graph: compiled forward steps (fast after compiling); pynative: op by op")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                   help="default: bf16 on Ascend, fp32 on CPU")
    p.add_argument("--seed", type=int, default=0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--prompt", action="append", help=f"repeat for a batch (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--positive-prompt", default=POSITIVE_PROMPT, help="appended to every prompt ('' for none)")
    p.add_argument("--negative-prompt", default=NEGATIVE_PROMPT)
    p.add_argument("--ratio", default="1:1", help='aspect ratio "W:H", e.g. 1:1, 16:9, 4:3')
    p.add_argument("--image-area", type=int, default=None,
                   help="pixels of the generated image (default: the model config's image_area, 720*720 for "
                        "Emu3-Gen, 512*512 for Stage1)")
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--cfg", choices=("batched", "unbatched"), default="batched",
                   help="batched: both branches in one forward per step; unbatched: the original's separate "
                        "unconditional pass (same scores for unpadded negative prompts)")
    p.add_argument("--top-k", type=int, default=2048)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: exactly the image's h*(w+1)+3 tokens (the original allowed 40960)")
    p.add_argument("--output-dir", default="outputs/image_generation")
    return p.parse_args(argv)


def check_model_folders(args):
    """The model paths name folders (checked before MindSpore loads: a wrong path is an answer within a second)."""
    for flag in ("model_path", "vq_path", "tokenizer_path"):
        check_folder(f"--{flag.replace('_', '-')}", getattr(args, flag))


def check_model_paths(args):
    """Paths and dtype, before any model is loaded."""
    check_model_folders(args)
    check_dtype(args.dtype)


def default_tokenizer_dir():
    """Without model or tokenizer paths: the released tokenizer files, built once into the cache from
    dashscope's Qwen vocabulary (what the random-weight models use)."""
    from emu3.device import cache_root
    from emu3.mllm.tokenizer_files import build_tokenizer_files

    folder = os.path.join(cache_root(), "tokenizer")
    if not os.path.isfile(os.path.join(folder, "emu3_vision_tokens.txt")):
        try:
            build_tokenizer_files(folder)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise SystemExit(f"error: no tokenizer: {e}\n{TOKENIZER_HINT}") from None
        print(f"built the Emu3 tokenizer files into {folder}")
    return folder


def load_components(args, padding_side="left"):
    """(model, processor) from the paths in args, with random weights where a path is missing."""
    import mindspore as ms

    from autoencode import load_vision_tokenizer
    from emu3.mllm import Emu3Config, Emu3ForCausalLM, Emu3Processor, Emu3Tokenizer

    check_model_paths(args)
    tokenizer_path = args.tokenizer_path or args.model_path or default_tokenizer_dir()
    try:
        tokenizer = Emu3Tokenizer.from_pretrained(tokenizer_path, padding_side=padding_side)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}\n{TOKENIZER_HINT}") from None

    ms.set_seed(args.seed)
    if args.model_path:
        model = Emu3ForCausalLM.from_pretrained(args.model_path, dtype=args.dtype)
        print(f"model: {args.model_path}")
    else:
        model = Emu3ForCausalLM.from_config(Emu3Config(**TINY_LLM), dtype=args.dtype)
        print("NOTE: no --model-path: a tiny LLM with RANDOM weights — this exercises the pipeline end to end; "
              "its output means nothing.")
    vq, image_processor = load_vision_tokenizer(args.vq_path, args.vq_config, args.dtype)
    vq.set_graph_mode(args.mode == "graph")
    processor = Emu3Processor(image_processor, vq, tokenizer, model_config=model.config)
    return model, processor


def slug(text, limit=40):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "image"


def main(argv=None):
    args = parse_args(argv)
    prompts = args.prompt or [DEFAULT_PROMPT]
    check_output_dir("--output-dir", args.output_dir)
    check_model_paths(args)
    from emu3.device import device_target
    from emu3.mllm.processing_emu3 import image_token_budget
    from emu3.mllm.utils_emu3 import image_generation_kwargs

    model, processor = load_components(args)
    image_area = args.image_area or getattr(model.config, "image_area", None) or 720 * 720
    try:
        pos, neg = processor.build_generation_inputs(
            [p + args.positive_prompt for p in prompts], args.negative_prompt, ratio=args.ratio,
            image_area=image_area, padding="longest", return_tensors="np")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    (h, w) = pos["image_size"][0].tolist()
    budget = image_token_budget(h, w)
    max_new_tokens = args.max_new_tokens or budget
    if max_new_tokens < budget:
        raise SystemExit(f"error: --max-new-tokens {max_new_tokens} is less than the {budget} tokens a {h}x{w} "
                         "image needs; raise it or leave it unset")

    generation = image_generation_kwargs(model, processor, pos, neg, args.guidance_scale, cfg=args.cfg)
    generation["max_new_tokens"] = max_new_tokens
    f = processor.vis_tok_spatial_factor
    print(f"device {device_target()}, mode {args.mode}, {len(prompts)} prompt(s), ratio {args.ratio}, "
          f"{h}x{w} tokens = {f * h}x{f * w} px, {budget} tokens to generate, CFG {args.guidance_scale} "
          f"({args.cfg}), top-k {args.top_k}")

    start = time.perf_counter()
    outputs = model.generate(pos["input_ids"], do_sample=True, top_k=args.top_k, mode=args.mode, seed=args.seed,
                             **generation)
    elapsed = time.perf_counter() - start
    new_tokens = outputs.shape[1] - pos["input_ids"].shape[1]
    note = ", includes graph compilation" if args.mode == "graph" else ""
    print(f"generated {new_tokens} tokens per prompt in {elapsed:.1f} s "
          f"({new_tokens * len(prompts) / elapsed:.1f} tok/s{note})")

    os.makedirs(args.output_dir, exist_ok=True)
    saved = []
    for i, (prompt, chunks) in enumerate(zip(prompts, processor.batch_decode(outputs.asnumpy()))):
        chunks = chunks if isinstance(chunks, list) else [chunks]
        images = [c for c in chunks if not isinstance(c, str)]
        if not images:
            print(f"[{i}] no complete image in the output (generation stopped early?): "
                  f"{''.join(c for c in chunks if isinstance(c, str))[:200]!r}")
            continue
        path = os.path.join(args.output_dir, f"{i:03d}_{slug(prompt)}.png")
        images[0].save(path)
        saved.append(path)
        print(f"[{i}] {prompt!r} -> {path} ({images[0].width}x{images[0].height})")
    return saved


if __name__ == "__main__":
    main()
