#!/usr/bin/env python
"""Image understanding (VQA / captioning) with Emu3 (Emu3-Chat, or Emu3-Stage1 with its plain template).

Each image is tokenized into visual tokens inside a chat prompt; the answer is decoded greedily (up to
--max-new-tokens, default 1024, as released) and printed. Several --image/--prompt pairs run as one batch
(images of different sizes are padded together and their token grids cropped back).

Without --model-path / --vq-path it builds models with RANDOM weights and says so: a pipeline check only.
"""

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emu3  # noqa: E402,F401  (before MindSpore loads: see emu3/_openmp.py)

from autoencode import check_dtype, check_output_dir, open_image  # noqa: E402
from image_generation import add_model_args, check_model_folders, load_components  # noqa: E402

DEFAULT_PROMPT = "Please describe the image"
STAGE1_CHAT_TEMPLATE = "{image_prompt}{text_prompt}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--image", action="append", help="an image file; repeat for a batch (default: a generated "
                                                    "test picture)")
    p.add_argument("--prompt", action="append", help=f"one per image, or one for all (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--chat-template", default=None,
                   help=f"default: Emu3-Chat's; use {STAGE1_CHAT_TEMPLATE!r} for Emu3-Stage1")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--output-dir", default=None, help="also write the answers to OUTPUT_DIR/answers.txt")
    return p.parse_args(argv)


def test_image(size=384, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([x, y, 0.5 + 0.5 * np.sin(8 * x * y)], axis=-1)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    image[(y - cy) ** 2 + (x - cx) ** 2 < 0.02] = (1.0, 0.2, 0.1)
    return Image.fromarray((255 * image).astype(np.uint8))


def load_images(args):
    if not args.image:
        return [test_image(seed=args.seed)]
    return [open_image(path) for path in args.image]


def main(argv=None):
    args = parse_args(argv)
    # The user's input is checked before MindSpore loads (seconds): a wrong path is an answer at once.
    check_model_folders(args)
    if args.output_dir:
        check_output_dir("--output-dir", args.output_dir)
    images = load_images(args)
    check_dtype(args.dtype)
    from emu3.device import device_target

    prompts = args.prompt or [DEFAULT_PROMPT]
    if len(prompts) == 1:
        prompts = prompts * len(images)
    if len(prompts) != len(images):
        raise SystemExit(f"error: {len(prompts)} --prompt for {len(images)} --image; give one prompt per image or "
                         "one for all")
    if args.max_new_tokens < 1:
        raise SystemExit("error: --max-new-tokens must be >= 1")
    model, processor = load_components(args)
    if args.chat_template:
        processor.chat_template = args.chat_template
    try:
        inputs = processor(prompts, images, mode="U", padding_image=True, padding="longest", return_tensors="np")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    prompt_len = inputs["input_ids"].shape[1]
    print(f"device {device_target()}, mode {args.mode}, {len(images)} image(s), token grids "
          f"{[tuple(s) for s in inputs['image_size'].tolist()]}, prompt {prompt_len} tokens")

    start = time.perf_counter()
    outputs = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=args.max_new_tokens, do_sample=False, mode=args.mode)
    elapsed = time.perf_counter() - start
    answers = processor.batch_decode(outputs.asnumpy()[:, prompt_len:], skip_special_tokens=True)
    answers = [a if isinstance(a, str) else "".join(x for x in a if isinstance(x, str)) for a in answers]
    new_tokens = outputs.shape[1] - prompt_len
    print(f"generated up to {new_tokens} tokens in {elapsed:.1f} s"
          f"{' (includes graph compilation)' if args.mode == 'graph' else ''}")
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        print(f"[{i}] Q: {prompt}\n[{i}] A: {answer}")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "answers.txt"), "w", encoding="utf-8") as f:
            for prompt, answer in zip(prompts, answers):
                f.write(f"Q: {prompt}\nA: {answer}\n\n")
        print(f"answers saved to {os.path.abspath(os.path.join(args.output_dir, 'answers.txt'))}")
    else:
        print("answers not saved (pass --output-dir, or OUTPUT_DIR to scripts/infer_vqa.sh, to keep them)")
    return answers


if __name__ == "__main__":
    main()
