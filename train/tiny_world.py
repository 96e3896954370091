"""The tiny world, end to end on this CPU: data -> vision tokenizer -> text tokenizer -> token shards -> Emu3 LLM ->
evaluation and report. ``bash scripts/tiny_world.sh`` runs it; each stage calls the project's own user-facing
scripts (``train/train_vision_tokenizer.py``, ``train/prepare_*_data.py``, ``scripts/t2i_sft_seq_parallel.sh``).

Every stage records its completion in ``OUT/.stages/``; running the command again skips finished stages (and says
so), and a stage that was interrupted resumes: the trainers continue from their newest checkpoint, the prepare
scripts keep the shard parts already written.

Outputs (OUT = outputs/tiny-world): ``Emu3-VisionTokenizer/`` and ``Emu3-Tiny/`` in the released layouts (the
inference scripts take them as ``--vq-path`` / ``--model-path``), ``report.html``, ``metrics.json``, and the working
folders ``data/``, ``tokenizer/``, ``prepared/``, ``runs/``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import emu3  # noqa: E402,F401  (before MindSpore loads: see emu3/_openmp.py)
from emu3.atomic import atomic_write_json  # noqa: E402

STAGES = ("data", "vision-tokenizer", "text-tokenizer", "prepare", "llm", "evaluate")
VQ_CONFIG = os.path.join(REPO, "configs", "tiny_world", "vision_tokenizer.json")
LLM_CONFIG = os.path.join(REPO, "configs", "tiny_world", "llm.json")
IMAGE_AREA = 64 * 64
TASKS = {"t2i": "prepare_vision_data.py", "vqa": "prepare_vqa_data.py"}  # task -> its prepare script
# Settings that shape the results: a rerun with other values must not mix its stages with the old ones.
SETTINGS = ("train_per_combination", "eval_per_combination", "vq_steps", "llm_steps", "seed", "vq_codebook_seeding")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="train/tiny_world.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--output-dir", default="outputs/tiny-world",
                   help="where the world, its checkpoints, report.html and metrics.json go (scripts/tiny_world.sh: "
                   "OUTPUT_DIR); an existing world made with other settings is refused")
    p.add_argument("--train-per-combination", type=int, default=30,
                   help="training pictures per (size, colour, shape, background) seen in training")
    p.add_argument("--eval-per-combination", type=int, default=2, help="evaluation pictures per combination")
    p.add_argument("--vq-steps", type=int, default=240, help="vision tokenizer training steps (batch 8)")
    p.add_argument("--llm-steps", type=int, default=800, help="LLM training steps (batch 16)")
    p.add_argument("--seed", type=int, default=42, help="initialisation and data order of both models")
    p.add_argument("--vq-codebook-seeding", choices=("random", "kmeans++"), default="random",
                   help="how the vision tokenizer's initial and restarted codes are drawn from latents (its "
                   "--codebook_seeding; docs/tiny-world.md, 'Tried': kmeans++ draws colour better, not shape)")
    p.add_argument("--npus", type=int, choices=(1, 2), default=1,
                   help="LLM training processes: 2 runs data parallelism over 2 msrun workers (slower on 2 cores)")
    args = p.parse_args(argv)
    for name in ("train_per_combination", "eval_per_combination", "vq_steps", "llm_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


# A stage compiles its graphs when its work is long enough to pay for the compile (AVX2 machine, 2026-12-03): the
# prepare scripts' encoder compiles in ~12 s, then encodes a 64x64 picture in ~5 ms instead of ~30 ms op by op (72
# pictures: 15.6 s compiled, 2.2 s op by op), so from ~500 pictures; the vision tokenizer's training step compiles in
# ~60 s, then takes ~0.6 s instead of ~2 s (batch 8), so from ~40 steps. The default world compiles both; a
# shortened one (the test suite's) runs op by op.
PREPARE_COMPILED_FROM_PICTURES = 500
VQ_COMPILED_FROM_STEPS = 40


class World:
    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.output_dir)
        self.marks = os.path.join(self.out, ".stages")
        self.timings = {}

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    # ---- stage bookkeeping -----------------------------------------------------------------------------------------
    def check_settings(self):
        os.makedirs(self.marks, exist_ok=True)
        settings = {k: getattr(self.args, k) for k in SETTINGS}
        # A setting added since that world was made was then at its default.
        differ = differing_settings(os.path.join(self.marks, "settings.json"), settings, vars(parse_args([])))
        if differ:
            # The flags that continue it: a world made before a default changed (e.g. --llm-steps) stays usable.
            flags = " ".join(f"--{k.replace('_', '-')} {recorded}" for k, (recorded, _) in differ.items())
            raise SystemExit(f"error: {self.out} holds a tiny world made with other settings "
                             f"({describe_differences(differ)}); pass another --output-dir, delete that folder to "
                             f"start over, or continue it with {flags}")

    def run_stage(self, number, name, fn):
        mark = os.path.join(self.marks, f"{name}.json")
        header = f"[{number}/{len(STAGES)}] {name}"
        if os.path.isfile(mark):
            with open(mark, encoding="utf-8") as f:
                self.timings[name] = json.load(f)["seconds"]
            print(f"{header}: done earlier, skipped (delete {mark} to redo it)", flush=True)
            return
        # Time spent in earlier, interrupted attempts at this stage counts too (the trainers resumed from them).
        partial = os.path.join(self.marks, f"{name}.partial.json")
        earlier = 0.0
        if os.path.isfile(partial):
            with open(partial, encoding="utf-8") as f:
                earlier = json.load(f)["seconds"]
        print(f"{header} ..." + (f" (resuming; {earlier:.0f} s spent on it before)" if earlier else ""), flush=True)
        start = time.time()
        try:
            fn()
        except BaseException:
            atomic_write_json(partial, {"seconds": round(earlier + time.time() - start, 1)}, indent=2)
            raise
        seconds = round(earlier + time.time() - start, 1)
        self.timings[name] = seconds
        atomic_write_json(mark, {"seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2)
        if os.path.isfile(partial):
            os.remove(partial)
        print(f"{header}: done in {seconds:.0f} s", flush=True)

    def run(self, command, env=None):
        """A user-facing script as a child process; its output streams to the console."""
        print("  $ " + " ".join(_short(c) for c in command), flush=True)
        full_env = dict(os.environ, **(env or {}))
        result = subprocess.run(command, env=full_env)
        if result.returncode:
            raise SystemExit(f"error: {os.path.basename(command[1])} failed (exit {result.returncode}); fix the "
                             "cause above and run the command again: finished stages are kept")

    # ---- stages ----------------------------------------------------------------------------------------------------
    def data(self):
        from train.world.dataset import write_world

        paths = write_world(self.path("data"), self.args.train_per_combination, self.args.eval_per_combination)
        with open(paths["t2i_train"], encoding="utf-8") as f:
            count = len(json.load(f))
        print(f"  {count} training pictures (held-out colour x shape pairs excluded) with their captions and a "
              f"question each, and evaluation pictures of every combination, in {self.path('data')}", flush=True)

    def vision_tokenizer(self):
        run_dir, steps = self.path("runs", "vision-tokenizer"), self.args.vq_steps
        self.run([sys.executable, os.path.join(REPO, "train", "train_vision_tokenizer.py"),
                  "--config_name", VQ_CONFIG, "--train_data_path", self.path("data", "t2i_train.json"),
                  "--eval_data_path", self.path("data", "eval.json"), "--output_dir", run_dir, "--image_size", "64",
                  "--per_device_train_batch_size", "8", "--max_steps", str(steps), "--reconstruction_loss", "l2",
                  "--learning_rate", "3e-3", "--lr_scheduler_type", "cosine",
                  "--warmup_steps", str(min(20, steps // 5)),
                  "--codebook_restart_steps", "25", "--codebook_seeding", self.args.vq_codebook_seeding,
                  "--logging_steps", _every(steps), "--save_steps", "100",
                  "--save_total_limit", "1", "--seed", str(self.args.seed),
                  "--mode", "0" if steps >= VQ_COMPILED_FROM_STEPS else "1"])
        _publish(run_dir, self.path("Emu3-VisionTokenizer"),
                 ("config.json", "model.safetensors", "preprocessor_config.json"))

    def text_tokenizer(self):
        from emu3.mllm.processing_emu3 import DEFAULT_CHAT_TEMPLATE
        from emu3.mllm.tokenization_emu3 import write_tiktoken_bpe
        from emu3.mllm.tokenizer_files import write_tokenizer_folder
        from emu3.tokenizer import Emu3VisionVQConfig
        from train.bpe import learn_bpe
        from train.world import shapes

        # The world's language: every caption of the grammar, the questions and their answers, and the chat prompt
        # that wraps every question (learned, its 40 tokens of byte pieces become 12: VQA samples 30 tokens shorter).
        texts = [shapes.caption(*a) for a in shapes.attributes()] + list(shapes.QUESTIONS.values())
        texts += [word for a in shapes.attributes() for word in a]
        texts += [DEFAULT_CHAT_TEMPLATE.format(image_prompt="", text_prompt=q) for q in shapes.QUESTIONS.values()]
        ranks = learn_bpe(texts, 1000)
        os.makedirs(self.path("tokenizer"), exist_ok=True)
        bpe = self.path("tokenizer", "world.tiktoken")
        write_tiktoken_bpe(bpe, ranks)
        codebook = Emu3VisionVQConfig.from_pretrained(self.path("Emu3-VisionTokenizer")).codebook_size
        write_tokenizer_folder(self.path("tokenizer"), bpe, codebook)
        print(f"  {len(ranks)} BPE ranks learned from the world's captions, questions and chat prompt, then the "
              f"special and {codebook} visual tokens, in {self.path('tokenizer')}", flush=True)

    def prepare(self):
        from train.world.dataset import task_of, write_evaluation_lists

        lists = [(task, self.path("data", f"{task}_train.json"), self.path("prepared", task)) for task in TASKS]
        # The LLM's evaluation sets (written here too for a world whose data stage predates them).
        lists += [(task_of(name), path, self.path("prepared", "eval", name))
                  for name, path in write_evaluation_lists(self.path("data")).items()]
        for task, data, output in lists:
            with open(data) as f:
                compiled = len(json.load(f)) >= PREPARE_COMPILED_FROM_PICTURES
            self.run([sys.executable, os.path.join(REPO, "train", TASKS[task]),
                      "--model-path", self.path("Emu3-VisionTokenizer"), "--data-path", data,
                      "--output-path", output, "--image-area", str(IMAGE_AREA),
                      "--batch-size", "32", "--mode", "graph" if compiled else "pynative"])

    def evaluation_sets(self):
        """{set name: prepared folder} of the LLM's evaluation sets (none in a world prepared before them)."""
        from train.world.dataset import EVALUATION_SETS

        folders = {name: self.path("prepared", "eval", name) for name in EVALUATION_SETS}
        return {name: folder for name, folder in folders.items() if os.path.isdir(folder)}

    def _initial_llm(self):
        """A randomly initialised LLM folder sized to the world's tokenizer (the starting point of training)."""
        import mindspore as ms

        from emu3.mllm import Emu3Config, Emu3ForCausalLM, Emu3Tokenizer
        from emu3.mllm.configuration_emu3 import SPECIAL_TOKEN_ID_FIELDS

        init_dir = self.path("runs", "llm-init")
        if os.path.isfile(os.path.join(init_dir, "model.safetensors")):
            return init_dir
        tokenizer = Emu3Tokenizer.from_pretrained(self.path("tokenizer"))
        fields = _llm_fields()
        ids = {name: getattr(tokenizer, name) for name in SPECIAL_TOKEN_ID_FIELDS}
        config = Emu3Config(vocab_size=len(tokenizer), **fields, **ids)
        ms.set_seed(self.args.seed)
        tmp = init_dir + ".tmp"
        for folder in (tmp, init_dir):  # leftovers of an interrupted start
            shutil.rmtree(folder, ignore_errors=True)
        Emu3ForCausalLM.from_config(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, init_dir)
        return init_dir

    def llm(self):
        init_dir = self._initial_llm()
        run_dir = self.path("runs", "llm")
        npus = self.args.npus
        if npus == 1:
            print("  one training process (scripts/t2i_sft_seq_parallel.sh with NPUS=1): on 2 CPU cores MindSpore's "
                  "kernels already use both, and 2 processes (--npus 2) measured slower (README, 'Fine-tuning on "
                  "several devices')", flush=True)
        else:
            print("  2 training processes (scripts/t2i_sft_seq_parallel.sh with NPUS=2: data parallelism under "
                  "msrun, 8 samples each)", flush=True)
        self.run(*llm_training(init_dir, [self.path("prepared", "t2i"), self.path("prepared", "vqa")], run_dir,
                               self.args.llm_steps, self.args.seed, npus, self.evaluation_sets()))
        _publish(run_dir, self.path("Emu3-Tiny"), None)

    def evaluate(self):
        from train.world.report import evaluate_and_report

        evaluate_and_report(self.out, self.timings, self.args.seed)


def differing_settings(path, settings, defaults=None):
    """``settings`` against those recorded at ``path`` (recorded there the first time): {key: (recorded, now)} for
    each that differs; a key recorded before it existed counts at ``defaults[key]``."""
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_json(path, settings, indent=2)
        return {}
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    saved = {k: saved.get(k, (defaults or {}).get(k)) for k in settings}
    return {k: (saved[k], settings[k]) for k in settings if saved[k] != settings[k]}


def describe_differences(differ):
    """"key recorded -> now, ..." of a ``differing_settings`` result."""
    return ", ".join(f"{k} {recorded} -> {now}" for k, (recorded, now) in differ.items())


def llm_training(init_dir, data_paths, run_dir, steps, seed, npus=1, evaluation_sets=None):
    """(command, environment) of the world's LLM recipe: ``scripts/t2i_sft_seq_parallel.sh`` training the model in
    ``init_dir`` on the shard folders ``data_paths`` (T2I and VQA) into ``run_dir``, evaluating it on the named shard
    folders ``evaluation_sets`` ({name: folder}) every quarter of the steps."""
    positions = _llm_fields()["max_position_embeddings"]
    command = ["bash", os.path.join(REPO, "scripts", "t2i_sft_seq_parallel.sh"), "--train_data_path", *data_paths,
               "--apply_loss_on_only_vision", "True", "--apply_loss_on_only_text", "True",
               "--null_prompt_prob", "0.1", "--fp16", "False", "--gradient_checkpointing", "False",
               "--image_area", str(IMAGE_AREA), "--max_position_embeddings", str(positions),
               "--max_steps", str(steps),
               "--per_device_train_batch_size", str(16 // npus), "--learning_rate", "1e-3",
               "--min_learning_rate", "5e-5",
               "--warmup_steps", str(min(30, steps // 5)), "--weight_decay", "0.01", "--max_grad_norm", "1.0",
               "--adam_beta2", "0.98", "--save_strategy", "steps", "--save_steps", "100", "--save_total_limit", "1",
               "--logging_steps", _every(steps), "--seed", str(seed), "--mode", "0"]
    if evaluation_sets:
        command += ["--eval_data_path", *(f"{name}={folder}" for name, folder in evaluation_sets.items()),
                    "--eval_steps", str(max(1, steps // 4)), "--per_device_eval_batch_size", str(48 // npus)]
    env = {"MODEL_PATH": init_dir, "DATA_PATH": data_paths[0], "OUTPUT_DIR": run_dir, "NPUS": str(npus), "SP": "1",
           "ZERO_STAGE": "0", "PYTHON": sys.executable}
    return command, env


def _llm_fields():
    """The tiny world's LLM config (configs/tiny_world/llm.json) without its comment."""
    with open(LLM_CONFIG, encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def _every(steps):
    """Logging interval: every 25 steps, or often enough that a short run still logs a curve."""
    return str(max(1, min(25, steps // 8)))


def _short(arg):
    """A path argument relative to the working folder when it is inside it (shorter logs), else as given."""
    if os.path.isabs(arg) and not os.path.relpath(arg).startswith(".."):
        return os.path.relpath(arg)
    return arg


def _publish(run_dir, target, names):
    """Copy a run's final model files (``names``; None = the released-layout files of an LLM) into ``target``."""
    os.makedirs(target, exist_ok=True)
    if names is None:
        names = [n for n in os.listdir(run_dir) if n in ("config.json", "tokenizer_config.json", "emu3.tiktoken",
                                                         "emu3_vision_tokens.txt", "generation_config.json")
                 or n.endswith(".safetensors") or n == "model.safetensors.index.json"]
    for name in names:
        tmp = os.path.join(target, f".{name}.tmp")
        shutil.copyfile(os.path.join(run_dir, name), tmp)
        os.replace(tmp, os.path.join(target, name))


def main(argv=None):
    args = parse_args(argv)
    world = World(args)
    world.check_settings()
    start = time.time()
    print(f"tiny world in {world.out}: {', '.join(STAGES)}", flush=True)
    for i, name in enumerate(STAGES, 1):
        world.run_stage(i, name, getattr(world, name.replace("-", "_")))
    from train.world.evaluate import TOP_K

    print(f"finished in {time.time() - start:.0f} s. Report: {world.path('report.html')}\n"
          f"  draw:   .venv/bin/python scripts/image_generation.py --model-path {world.path('Emu3-Tiny')} "
          f"--vq-path {world.path('Emu3-VisionTokenizer')} --prompt 'a large red triangle on a black background' "
          f"--positive-prompt '' --negative-prompt '' --top-k {TOP_K}\n"
          f"  answer: .venv/bin/python scripts/multimodal_understanding.py --model-path {world.path('Emu3-Tiny')} "
          f"--vq-path {world.path('Emu3-VisionTokenizer')} --image PICTURE.png --prompt 'What shape is it?'",
          flush=True)


if __name__ == "__main__":
    main()
