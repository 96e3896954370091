#!/usr/bin/env python
"""Supervised fine-tuning of an Emu3 LLM on prepared token shards (see README "Fine-tuning").

    python train/train.py --model_name_or_path DIR --train_data_path PREPARED --output_dir RUN [flags]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import emu3  # noqa: E402,F401  (before MindSpore loads: see emu3/_openmp.py)

from train.arguments import parse_args  # noqa: E402


def main(argv=None):
    args = parse_args(argv)
    from train.trainer import Trainer, TrainingError

    try:
        trainer = Trainer(args)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
