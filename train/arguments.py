"""Command-line flags of ``train/train.py``: the names of mindone's ``train_seq_parallel.py`` / HF
``TrainingArguments`` (``--data_path`` is accepted as the original's alias of ``--train_data_path``).

Booleans take values as HF's parser does (``--fp16 True``, ``--fp16 false``, a bare ``--fp16``). Unknown flags
are an error that names them: a flag that is silently ignored is a recipe that silently changes.
"""

import argparse
import os
import re

from .schedules import SCHEDULES

EVAL_SET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def str_to_bool(value):
    if isinstance(value, bool):
        return value
    v = value.lower()
    if v in ("yes", "true", "t", "y", "1"):
        return True
    if v in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def _bool(parser, name, default, help):
    parser.add_argument(name, type=str_to_bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


def add_adamw_arguments(group, learning_rate, schedule):
    """AdamW and its learning-rate schedule, with HF TrainingArguments' names (shared by the trainers)."""
    group.add_argument("--learning_rate", type=float, default=learning_rate)
    group.add_argument("--min_learning_rate", type=float, default=None, help="final lr of cosine_with_min_lr")
    group.add_argument("--lr_scheduler_type", choices=SCHEDULES, default=schedule)
    group.add_argument("--warmup_steps", type=int, default=0)
    group.add_argument("--weight_decay", type=float, default=0.0)
    group.add_argument("--adam_beta1", type=float, default=0.9)
    group.add_argument("--adam_beta2", type=float, default=0.999)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)


def build_parser():
    p = argparse.ArgumentParser(prog="train/train.py", description="Supervised fine-tuning of an Emu3 LLM on token "
                                "shards (text-to-image, VQA, text).", allow_abbrev=False)
    g = p.add_argument_group("model and data")
    g.add_argument("--model_name_or_path", required=True,
                   help="folder of the model to fine-tune (config.json, safetensors, tokenizer files)")
    g.add_argument("--train_data_path", "--data_path", dest="train_data_path", required=True, nargs="+",
                   help="folder(s) written by train/prepare_*_data.py")
    g.add_argument("--output_dir", required=True, help="run folder: checkpoint-{step}/, the final model, logs")
    g.add_argument("--null_prompt_prob", type=float, default=0.05,
                   help="probability that a caption is replaced by '' (trains the CFG branch; default 0.05)")
    _bool(g, "--apply_loss_on_only_vision", True, "supervise the visual tokens only (text-to-image; default True)")
    _bool(g, "--apply_loss_on_only_text", False, "supervise the response only (VQA / text; default False)")
    _bool(g, "--group_by_task", False, "every batch holds samples of one task (T2I, VQA or text), so VQA answers "
          "are not outweighed by T2I's visual tokens in the token-averaged loss (as LLaVA's "
          "--group_by_modality_length; default False: mixed batches, as the original)")
    g.add_argument("--image_area", type=int, default=None, help="written into the model config (default: config's)")
    g.add_argument("--max_position_embeddings", type=int, default=None,
                   help="sequence budget; samples are padded to it (default: the model config's)")
    g.add_argument("--eval_data_path", nargs="+", default=None, metavar="[NAME=]FOLDER",
                   help="folder(s) of held-out samples (as --train_data_path): their loss is logged as eval_loss; "
                        "NAME=FOLDER entries form named sets, each logged as eval_NAME_loss (HF's dict of "
                        "eval datasets); entries with the same name are one set")

    g = p.add_argument_group("optimisation")
    add_adamw_arguments(g, learning_rate=5e-5, schedule="linear")
    g.add_argument("--optim", choices=("adamw", "adamw_torch", "adamw_mindspore"), default="adamw",
                   help="AdamW as torch's (the only optimizer; the other names are aliases)")
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="global-norm clipping (0 = off)")
    g.add_argument("--num_train_epochs", type=float, default=3.0)
    g.add_argument("--max_steps", type=int, default=-1, help="optimizer steps; > 0 overrides --num_train_epochs")
    g.add_argument("--per_device_train_batch_size", type=int, default=1)
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--trainable_hidden_layers", type=int, default=None,
                   help="train only the last N decoder layers (plus embeddings, final norm, lm_head)")
    _bool(g, "--gradient_checkpointing", False, "recompute each decoder layer in backward")
    g.add_argument("--seed", type=int, default=42)

    g = p.add_argument_group("precision and execution")
    _bool(g, "--fp16", False, "fp16 weights/activations, fp32 master weights, RMSNorm and loss (dynamic loss scale)")
    _bool(g, "--bf16", False, "bf16 (Ascend only)")
    g.add_argument("--loss_scaler_type", choices=("dynamic", "static"), default=None,
                   help="fp16 loss scaling (default dynamic with --fp16)")
    g.add_argument("--init_loss_scale", type=float, default=1024.0)
    g.add_argument("--loss_scale_factor", type=float, default=2.0)
    g.add_argument("--scale_window", type=int, default=1000)
    g.add_argument("--mode", type=int, choices=(0, 1), default=0, help="0: compiled train step (graph), 1: pynative")

    g = p.add_argument_group("parallelism (under msrun: scripts/*_sft_seq_parallel.sh)")
    g.add_argument("--sequence_parallel_shards", type=int, default=1,
                   help="Ulysses sequence parallelism: ranks sharing each sample's tokens (divides the process "
                        "count, the attention and KV heads and --max_position_embeddings)")
    g.add_argument("--ms_zero_stage", type=int, choices=(0, 1, 2, 3), default=0,
                   help="ZeRO over all ranks: 1 optimizer state, 2 + gradients, 3 + parameters sharded")
    _bool(g, "--is_distribute", False, "mindone's flag: accepted; the launch (msrun or not) decides")

    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--save_strategy", choices=("steps", "epoch", "no"), default="steps")
    g.add_argument("--save_steps", type=int, default=500)
    g.add_argument("--save_total_limit", type=int, default=None, help="keep only the newest N checkpoints")
    g.add_argument("--logging_steps", type=int, default=10)
    g.add_argument("--eval_strategy", "--evaluation_strategy", dest="eval_strategy",
                   choices=("no", "steps", "epoch"), default=None,
                   help="when to evaluate on --eval_data_path during training (default: steps when it is given, "
                        "else no); with --eval_data_path the final model is evaluated too, into eval_results.json")
    g.add_argument("--eval_steps", type=int, default=None, help="evaluate every N steps (default: --logging_steps)")
    g.add_argument("--per_device_eval_batch_size", type=int, default=8)
    _bool(g, "--load_best_model_at_end", False,
          "the final model is the checkpoint (or the final weights) with the best --metric_for_best_model; needs "
          "--eval_data_path, the same --eval_strategy and --save_strategy, and --save_steps a multiple of "
          "--eval_steps (as HF); the best checkpoint outlives --save_total_limit")
    g.add_argument("--metric_for_best_model", default=None,
                   help="the evaluation to compare checkpoints by: eval_loss or eval_NAME_loss ('eval_' may be left "
                        "out); default with --load_best_model_at_end: the first evaluation set's loss")
    g.add_argument("--greater_is_better", type=str_to_bool, default=None, metavar="BOOL",
                   help="whether a larger --metric_for_best_model is better (default: False for a loss)")
    g.add_argument("--run_name", default=None, help="a name for the logs (default: the output folder's)")
    g.add_argument("--resume", default=None, help="a checkpoint-{step} folder; by default the newest checkpoint in "
                                                  "--output_dir is resumed, as the original does")
    return p


def eval_sets(entries):
    """--eval_data_path's entries as {name: [folder, ...]} in the order given; name None for the unnamed set.
    ``NAME=FOLDER`` names a set unless the whole entry is a folder (a folder may have '=' in its name)."""
    sets = {}
    for entry in map(str, entries):
        name, folder = None, entry
        if "=" in entry and not os.path.isdir(entry):
            name, folder = entry.split("=", 1)
            if not EVAL_SET_NAME.fullmatch(name) or not folder:
                raise ValueError(f"--eval_data_path {entry!r}: a named set is NAME=FOLDER with NAME of letters, "
                                 "digits and '_' starting with a letter (it becomes the eval_NAME_loss record)")
        sets.setdefault(name, []).append(folder)
    return sets


def parse_args(argv=None):
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [u for u in unknown if u.startswith("-")] or unknown
        parser.error(f"unknown argument(s): {' '.join(flags)} (see --help for the flags train.py takes)")
    problems = []
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
        if getattr(args, name) < 1:
            problems.append(f"--{name} must be >= 1")
    if args.learning_rate < 0 or args.weight_decay < 0 or args.max_grad_norm < 0:
        problems.append("--learning_rate, --weight_decay and --max_grad_norm must be >= 0")
    if not (0 <= args.adam_beta1 < 1 and 0 <= args.adam_beta2 < 1 and args.adam_epsilon > 0):
        problems.append("--adam_beta1/--adam_beta2 must be in [0, 1) and --adam_epsilon > 0")
    if args.fp16 and args.bf16:
        problems.append("--fp16 and --bf16 are exclusive")
    if args.max_steps <= 0 and args.num_train_epochs <= 0:
        problems.append("give --num_train_epochs > 0 or --max_steps > 0")
    if args.lr_scheduler_type == "cosine_with_min_lr" and args.min_learning_rate is None:
        problems.append("--lr_scheduler_type cosine_with_min_lr needs --min_learning_rate")
    if args.sequence_parallel_shards < 1:
        problems.append("--sequence_parallel_shards must be >= 1")
    if args.trainable_hidden_layers is not None and args.trainable_hidden_layers < 0:
        problems.append("--trainable_hidden_layers must be >= 0")
    if args.eval_strategy is None:
        args.eval_strategy = "steps" if args.eval_data_path else "no"
    elif args.eval_strategy != "no" and not args.eval_data_path:
        problems.append(f"--eval_strategy {args.eval_strategy} needs --eval_data_path (the samples to evaluate on)")
    if args.eval_data_path:
        try:
            eval_sets(args.eval_data_path)
        except ValueError as e:
            problems.append(str(e))
    if args.eval_steps is None:
        args.eval_steps = args.logging_steps
    if args.eval_steps < 1 or args.per_device_eval_batch_size < 1:
        problems.append("--eval_steps and --per_device_eval_batch_size must be >= 1")
    if args.metric_for_best_model and not args.metric_for_best_model.startswith("eval_"):
        args.metric_for_best_model = "eval_" + args.metric_for_best_model
    if args.greater_is_better is None and args.metric_for_best_model:
        args.greater_is_better = not args.metric_for_best_model.endswith("loss")
    if args.load_best_model_at_end:
        if not args.eval_data_path:
            problems.append("--load_best_model_at_end needs --eval_data_path (the samples to compare checkpoints on)")
        elif args.eval_strategy != args.save_strategy:
            problems.append(f"--load_best_model_at_end needs --eval_strategy and --save_strategy to match (got "
                            f"{args.eval_strategy} and {args.save_strategy}): every checkpoint must be evaluated")
        elif args.save_strategy == "steps" and args.save_steps % args.eval_steps:
            problems.append(f"--load_best_model_at_end needs --save_steps ({args.save_steps}) to be a multiple of "
                            f"--eval_steps ({args.eval_steps})")
    if problems:
        parser.error("; ".join(problems))
    return args
