"""``benchmark.py t2i`` and ``benchmark.py vqa``: whole tasks timed as users run them, on a model folder pair (by
default the tiny world's, ``bash scripts/tiny_world.sh``), in the rows of mindone's README tables.

    benchmark.py t2i [--model-path DIR --vq-path DIR] [--batch 1 4] [--mode graph pynative] [--cfg batched unbatched]
    benchmark.py vqa [--model-path DIR --vq-path DIR] [--batch 1 8] [--mode graph pynative]

t2i: one picture per prompt (CFG 3.0 against the null prompt, prefix constraint, sampling), then the VQ decode;
vqa: a question about a picture of the world, greedy, ``--max-new-tokens``. Each row: the median of ``--repeat``
runs after a warm-up run (its time, with graph compilation, in its own column); s/step is the run's time per
generated token (prefill included), tokens/s counts every row of the batch.
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    args = p.parse_args(argv)
    for name in ("model_path", "vq_path"):
        if not os.path.isdir(getattr(args, name)):
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)!r} is not a folder (run bash "
                    "scripts/tiny_world.sh for the default, or pass a model folder)")
    if min(args.batch) < 1 or args.repeat < 1 or args.max_new_tokens < 1:
        p.error("--batch, --repeat and --max-new-tokens must be positive")
    return args


def _t2i_run(model, processor, batch, mode, cfg):
    from emu3.mllm.utils_emu3 import image_generation_kwargs

    pos, neg = processor.build_generation_inputs([CAPTION] * batch, "", image_area=model.config.image_area,
                                                 padding="longest", return_tensors="np")
    generation = image_generation_kwargs(model, processor, pos, neg, 3.0, cfg=cfg)

    def run():
        out = model.generate(pos["input_ids"], do_sample=True, mode=mode, seed=0, **generation)
        processor.decode(out.asnumpy()[0])  # the picture: VQ decode included
        return out.shape[1] - pos["input_ids"].shape[1]
    return run


def _vqa_run(model, processor, batch, mode, max_new_tokens):
    from train.world import shapes

    picture = shapes.render("large", "red", "triangle", "black", 12, 12)
    inputs = processor([QUESTION] * batch, [picture] * batch, mode="U", padding_image=True, padding="longest",
                       return_tensors="np")

    def run():
        out = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False, mode=mode)
        return out.shape[1] - inputs["input_ids"].shape[1]
    return run


def bench_tasks(task, argv):
    from emu3.nn.attention import default_backend
    from train.world.evaluate import load_models

    args = parse_args(task, argv)
    model, processor = load_models(args.model_path, args.vq_path)
    precision = str(model.model.embed_tokens.weight.dtype).lower().replace("float", "fp")
    rows = []
    for mode in args.mode:
        processor.vision_tokenizer.set_graph_mode(mode == "graph")
        for batch in args.batch:
            for cfg in (args.cfg if task == "t2i" else ["-"]):
                run = _t2i_run(model, processor, batch, mode, cfg) if task == "t2i" else \
                    _vqa_run(model, processor, batch, mode, args.max_new_tokens)
                start = time.perf_counter()
                run()
                warmup = time.perf_counter() - start
                times, steps = [], 0
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    steps = run()
                    times.append(time.perf_counter() - start)
                seconds = statistics.median(times)
                rows.append({"task": task, "mode": mode, "batch": batch, "cfg": cfg, "s/step": f"{seconds / steps:.4f}",
                             "tokens/s": f"{batch * steps / seconds:.1f}", "steps": steps,
                             "s/run": f"{seconds:.2f}", "warm-up s": f"{warmup:.1f}", "precision": precision,
                             "attention": default_backend()})
    return rows
