"""What a training run's flags point at, checked without MindSpore: the model folder, its config with the flags'
overrides and its tokenizer, the sequence-parallel layout against that config, and the prepared data folders (and
their tasks against the loss flags).

The trainer runs these as it starts; the msrun launcher (``train/launch.py``) runs them before starting any
process, so a wrong folder or layout is one error within a second instead of one per rank after every rank has
loaded MindSpore. Every check raises ``ValueError`` or ``FileNotFoundError`` with the message for the user."""

import os

from emu3.mllm.configuration_emu3 import Emu3Config
from emu3.mllm.tokenization_emu3 import Emu3Tokenizer
from emu3.parallel.checks import check_sequence_parallel

from .arguments import eval_sets
from .sequences import check_supervision, supervision_from_flags
from .shards import ShardReader


def check_model_folder(args):
    if not os.path.isdir(args.model_name_or_path):
        raise FileNotFoundError(f"--model_name_or_path {args.model_name_or_path!r} is not a folder")


def run_config(args, sequence_parallel_size=1):
    """The model folder's ``Emu3Config`` with the flags' overrides: as the original, an explicit
    ``--image_area`` / ``--max_position_embeddings`` overrides the config (the flag left unset takes the
    config's value); checked against ``sequence_parallel_size`` ranks per sample."""
    check_model_folder(args)
    config = Emu3Config.from_pretrained(args.model_name_or_path)
    for name in ("image_area", "max_position_embeddings"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if sequence_parallel_size > 1:
        check_sequence_parallel(config, sequence_parallel_size, config.max_position_embeddings)
    return config


def load_tokenizer(args, config):
    """The model folder's tokenizer, checked to fit the config's vocabulary."""
    try:
        tokenizer = Emu3Tokenizer.from_pretrained(args.model_name_or_path)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"the model folder has no usable tokenizer files ({e})") from None
    if len(tokenizer) != config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model has {config.vocab_size} "
                         "embeddings: model and tokenizer do not belong together")
    return tokenizer


def check_data(flag, folders, supervision):
    """Raise unless ``folders`` are finished prepared folders whose tasks ``supervision`` has something to learn
    in (the message prefixed by ``flag``)."""
    try:
        for info in ShardReader(folders).info:
            if "task" in info:
                check_supervision(supervision, info["task"])
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{flag}: {e}") from None


def eval_flag(name):
    """How a named evaluation set is spelled on the command line (None: the unnamed set)."""
    return "--eval_data_path" if name is None else f"--eval_data_path {name}="


def check_run(args, sequence_parallel_size=1):
    """Every check above, in the order the trainer meets them -> (config, tokenizer) of the run."""
    config = run_config(args, sequence_parallel_size)
    tokenizer = load_tokenizer(args, config)
    supervision = supervision_from_flags(args.apply_loss_on_only_vision, args.apply_loss_on_only_text)
    check_data("--train_data_path", args.train_data_path, supervision)
    for name, folders in eval_sets(args.eval_data_path or []).items():
        check_data(eval_flag(name), folders, supervision)
    return config, tokenizer
