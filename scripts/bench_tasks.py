"""``benchmark.py t2i`` and ``benchmark.py vqa``: whole tasks timed as users run them, on a model folder pair (by
default the tiny world's, ``bash scripts/tiny_world.sh``), in the rows of mindone's README tables.

    benchmark.py t2i [--model-path DIR --vq-path DIR] [--batch 1 4] [--mode graph pynative] [--cfg batched unbatched]
    benchmark.py vqa [--model-path DIR --vq-path DIR] [--batch 1 8] [--mode graph pynative]   [--torch]

t2i: one picture per prompt (CFG 3.0 against the null prompt, prefix constraint, sampling), then the VQ decode;
vqa: a question about a picture of the world, greedy, ``--max-new-tokens``. Each row: the median of ``--repeat``
runs after a warm-up run (its time, with graph compilation, in its own column); s/step is the run's time per
generated token (prefill included), tokens/s counts every row of the batch. ``--torch`` adds HF transformers'
PyTorch Emu3 on the same weights and inputs (a child process that loads PyTorch first, as in the other
benchmarks): eager, and for t2i the original pipeline's unbatched CFG with transformers' own processors.
"""

import argparse
import os
import sys

from bench_common import REPO, parameter_arrays, timed, torch_reference, torch_rows

sys.path.insert(0, REPO)
import emu3  # noqa: E402,F401  (before MindSpore loads: see emu3/_openmp.py)

TINY_WORLD = os.path.join("outputs", "tiny-world")
CAPTION = "a large red triangle on a black background"
QUESTION = "What shape is it?"


def parse_args(task, argv):
    p = argparse.ArgumentParser(prog=f"benchmark.py {task}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default=os.environ.get("MODEL_PATH", os.path.join(TINY_WORLD, "Emu3-Tiny")))
    p.add_argument("--vq-path", default=os.environ.get("VQ_PATH",
                                                       os.path.join(TINY_WORLD, "Emu3-VisionTokenizer")))
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--mode", nargs="+", choices=("graph", "pynative"), default=["graph", "pynative"])
    p.add_argument("--cfg", nargs="+", choices=("batched", "unbatched"), default=["batched", "unbatched"],
                   help="t2i: classifier-free guidance as one doubled batch, or a second model pass")
    p.add_argument("--max-new-tokens", type=int, default=8, help="vqa: answer budget")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--torch", action="store_true",
                   help="also HF transformers' PyTorch Emu3 on the same weights and inputs (eager; CFG unbatched, "
                        "as the original pipeline)")
    p.add_argument("--torch-inputs", help=argparse.SUPPRESS)  # internal: this process runs PyTorch's rows only
    args = p.parse_args(argv)
    args.argv = [task, *argv]
    for name in ("model_path", "vq_path"):
        if not os.path.isdir(getattr(args, name)):
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)!r} is not a folder (run bash "
                    "scripts/tiny_world.sh for the default, or pass a model folder)")
    if min(args.batch) < 1 or args.repeat < 1 or args.max_new_tokens < 1:
        p.error("--batch, --repeat and --max-new-tokens must be positive")
    return args


def _t2i_inputs(processor, config, batch):
    """The positive and negative prompts of ``batch`` copies of CAPTION (numpy, left-padded)."""
    return processor.build_generation_inputs([CAPTION] * batch, "", image_area=config.image_area,
                                             padding="longest", return_tensors="np")


def _vqa_inputs(processor, batch):
    """``batch`` copies of QUESTION about a rendered picture of the world (numpy, left-padded)."""
    from train.world import shapes

    picture = shapes.render("large", "red", "triangle", "black", 12, 12)
    return processor([QUESTION] * batch, [picture] * batch, mode="U", padding_image=True, padding="longest",
                     return_tensors="np")


def _t2i_run(model, processor, batch, mode, cfg):
    from emu3.mllm.utils_emu3 import image_generation_kwargs

    pos, neg = _t2i_inputs(processor, model.config, batch)
    generation = image_generation_kwargs(model, processor, pos, neg, 3.0, cfg=cfg)

    def run():
        out = model.generate(pos["input_ids"], do_sample=True, mode=mode, seed=0, **generation)
        processor.decode(out.asnumpy()[0])  # the picture: VQ decode included
        return out.shape[1] - pos["input_ids"].shape[1]
    return run


def _vqa_run(model, processor, batch, mode, max_new_tokens):
    inputs = _vqa_inputs(processor, batch)

    def run():
        out = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False, mode=mode)
        return out.shape[1] - inputs["input_ids"].shape[1]
    return run


def _timed_row(task, run, repeat, batch, **columns):
    """One table row: ``run()`` (returning the tokens generated per prompt) once to warm up, then ``repeat`` times."""
    steps = []
    warmup, seconds = timed(lambda: steps.append(run()), repeat)
    steps = steps[-1]
    return {"task": task, "mode": columns["mode"], "batch": batch, "cfg": columns["cfg"],
            "s/step": f"{seconds / steps:.4f}", "tokens/s": f"{batch * steps / seconds:.1f}", "steps": steps,
            "s/run": f"{seconds:.2f}", "warm-up s": f"{warmup:.1f}", "precision": columns["precision"],
            "attention": columns["attention"]}


def bench_tasks(task, argv):
    from emu3.nn.attention import default_backend
    from train.world.evaluate import load_models

    args = parse_args(task, argv)
    model, processor = load_models(args.model_path, args.vq_path)
    if args.torch_inputs:  # the child process of torch_rows: PyTorch's rows only
        import json

        print(json.dumps(torch_task_rows(task, args, model, processor)))
        return None
    precision = str(model.model.embed_tokens.weight.dtype).lower().replace("float", "fp")
    rows = []
    for mode in args.mode:
        processor.vision_tokenizer.set_graph_mode(mode == "graph")
        for batch in args.batch:
            for cfg in (args.cfg if task == "t2i" else ["-"]):
                run = _t2i_run(model, processor, batch, mode, cfg) if task == "t2i" else \
                    _vqa_run(model, processor, batch, mode, args.max_new_tokens)
                rows.append(_timed_row(task, run, args.repeat, batch, mode=mode, cfg=cfg, precision=precision,
                                       attention=default_backend()))
    if args.torch:
        rows += torch_rows(args, {})
    return rows


def torch_task_rows(task, args, model, processor):
    """The rows of HF transformers' PyTorch Emu3 (LLM + VQ-VAE, eager, fp32) holding our models' weights, on the
    inputs our processor builds; text-to-image with transformers' UnbatchedClassifierFreeGuidanceLogitsProcessor
    and PrefixConstrainedLogitsProcessor (the original pipeline), then its VQ-VAE's decode."""
    import torch
    from transformers import (Emu3ForCausalLM as TorchEmu3, Emu3TextConfig, Emu3VQVAE, Emu3VQVAEConfig,
                              LogitsProcessorList, PrefixConstrainedLogitsProcessor,
                              UnbatchedClassifierFreeGuidanceLogitsProcessor)
    from emu3.mllm.hf_compat import hf_text_config_kwargs
    from emu3.mllm.processing_emu3 import image_token_budget
    from emu3.tokenizer.hf_names import hf_config_kwargs, is_attention_projection, released_to_hf

    lm = torch_reference(TorchEmu3, Emu3TextConfig(**hf_text_config_kwargs(model.config)), parameter_arrays(model))
    vq_model = processor.vision_tokenizer
    vq = torch_reference(Emu3VQVAE, Emu3VQVAEConfig(**hf_config_kwargs(vq_model.config)),
                         parameter_arrays(vq_model, released_to_hf, is_attention_projection))
    config = model.config
    columns = dict(mode="eager", precision="fp32", attention=lm.config._attn_implementation)
    rows = []
    for batch in args.batch:
        if task == "t2i":
            pos, neg = _t2i_inputs(processor, config, batch)
            h, w = (int(v) for v in pos["image_size"][0])
            ids, mask = torch.from_numpy(pos["input_ids"]), torch.from_numpy(pos["attention_mask"])

            def run():
                torch.manual_seed(0)
                allowed = processor.build_prefix_constrained_fn(pos["image_size"][:, 0], pos["image_size"][:, 1])
                first_visual = int(allowed.visual_tokens[0])
                processors = LogitsProcessorList([
                    UnbatchedClassifierFreeGuidanceLogitsProcessor(3.0, lm, torch.from_numpy(neg["input_ids"])),
                    PrefixConstrainedLogitsProcessor(lambda b, seq: allowed(b, seq.numpy()).tolist(), num_beams=1)])
                with torch.no_grad():
                    out = lm.generate(ids, attention_mask=mask, max_new_tokens=image_token_budget(h, w),
                                      do_sample=True, logits_processor=processors, pad_token_id=config.pad_token_id)
                    # The first row's codes: h rows of w visual tokens + eol right after the prompt's img token.
                    grid = out[0, ids.shape[1]:ids.shape[1] + h * (w + 1)].reshape(h, w + 1)[:, :w] - first_visual
                    vq.decode(grid[None].long())  # the picture, as ours decodes it
                return out.shape[1] - ids.shape[1]
            rows.append(_timed_row(task, run, args.repeat, batch, cfg="unbatched", **columns))
        else:
            inputs = _vqa_inputs(processor, batch)
            ids, mask = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])

            def run():
                with torch.no_grad():
                    out = lm.generate(ids, attention_mask=mask, max_new_tokens=args.max_new_tokens, do_sample=False,
                                      pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id)
                return out.shape[1] - ids.shape[1]
            rows.append(_timed_row(task, run, args.repeat, batch, cfg="-", **columns))
    impl = f"torch {torch.__version__.split('+')[0]}"
    return [dict(row, mode=f"{row['mode']} ({impl})") for row in rows]
