"""The SFT training suite: token shards, datasets, the trainer, and their command-line entry points."""

import os

# The training suite's C++ CPU kernels (built by ``emu3.native``; the models' own live in ``emu3/kernels/``).
KERNELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
