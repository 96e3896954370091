"""The SFT training suite: token shards, datasets, the trainer, and their command-line entry points."""
