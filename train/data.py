"""The SFT dataset: token shards -> padded (input_ids, attention_mask, labels) batches, in a resumable order.

The order is ours, not the reader's: epoch e visits a permutation of the usable samples drawn from (seed, e), and
rank r of R data-parallel ranks takes every R-th entry of it (padded by wrap-around to equal length, as
``DistributedSampler``). A position is therefore just (epoch, samples consumed), and resuming reads from there
directly — nothing is skipped by reading. The null-prompt draw of each sample is seeded by (seed, epoch, index),
so a resumed run sees exactly the captions an uninterrupted one sees.

With ``task_batch_size`` (``--group_by_task``) the permutation is regrouped so that every batch holds one task:
the loss is a mean over a batch's supervised tokens, and in a mixed batch a VQA sample's answer (a few tokens) is
outweighed by the visual tokens of the T2I samples beside it (~70 each at 64x64 pixels, thousands at full size).

Samples longer than the budget (``max_length`` = ``--max_position_embeddings``) are never cut inside their image:
they are dropped before training, counted, and named in the log.
"""

import math

import numpy as np

from .sequences import IGNORE_INDEX
from .shards import INDEX_COLUMNS, ShardReader


class SFTDataset:
    def __init__(self, paths, builder, max_length, null_prompt_prob=0.0, seed=42, task_batch_size=None, log=print):
        if not 0.0 <= null_prompt_prob <= 1.0:
            raise ValueError(f"--null_prompt_prob must be in [0, 1], got {null_prompt_prob}")
        self.reader = ShardReader(paths)
        self.builder = builder
        self.max_length = int(max_length)
        self.null_prompt_prob = float(null_prompt_prob)
        self.seed = int(seed)
        self.task_batch_size = task_batch_size
        lengths, tasks = [], []
        for record in self.reader.read_all(INDEX_COLUMNS):
            lengths.append(builder.length(record))
            tasks.append(record["task"])
        self.task_of = np.asarray(tasks)
        self.tasks = sorted(set(tasks))
        for task in self.tasks:  # a supervision/task mismatch is an error now, not at that task's first batch
            builder.check_task(task)
        lengths = np.asarray(lengths)
        self.usable = np.flatnonzero(lengths <= self.max_length)
        self.dropped = np.flatnonzero(lengths > self.max_length)
        if len(self.dropped):
            names = [r["name"] for r in self.reader.read(self.dropped[:5], ["name"])]
            log(f"dropped {len(self.dropped)} of {len(lengths)} samples longer than max_position_embeddings = "
                f"{self.max_length} tokens (longest {int(lengths.max())}; e.g. {names}); raise "
                "--max_position_embeddings or prepare with a smaller --image-area")
        if not len(self.usable):
            raise ValueError(f"no sample fits in max_position_embeddings = {self.max_length} tokens (shortest: "
                             f"{int(lengths.min())}); raise --max_position_embeddings or use a smaller --image-area")

    def __len__(self):
        return len(self.usable)

    def epoch_order(self, epoch, num_shards=1, shard_id=0):
        """The global sample indices rank ``shard_id`` visits in ``epoch``."""
        order = self.usable[np.random.default_rng([self.seed, epoch]).permutation(len(self.usable))]
        if self.task_batch_size:
            order = self._grouped_by_task(order, self.task_batch_size * num_shards, epoch)
        per_rank = math.ceil(len(order) / num_shards)
        order = np.resize(order, per_rank * num_shards)  # wrap around so every rank gets as many samples
        return order[shard_id::num_shards]

    def _grouped_by_task(self, order, group, epoch):
        """``order`` as runs of ``group`` samples of one task (one batch on every rank: rank r takes every R-th
        sample), the runs in a random order; each task's remainder (fewer than ``group``) goes to the end."""
        runs, remainders = [], []
        for task in self.tasks:
            mine = order[self.task_of[order] == task]
            whole = len(mine) - len(mine) % group
            runs += list(mine[:whole].reshape(-1, group))
            remainders.append(mine[whole:])
        shuffle = np.random.default_rng([self.seed, epoch, 1]).permutation(len(runs))
        return np.concatenate([runs[i] for i in shuffle] + remainders)

    def null_prompt(self, epoch, index):
        if self.null_prompt_prob == 0.0:
            return False
        return bool(np.random.default_rng([self.seed, epoch, int(index)]).random() < self.null_prompt_prob)

    def samples(self, epoch, start=0, num_shards=1, shard_id=0):
        """Padded samples of ``epoch`` for one rank, from position ``start``."""
        order = self.epoch_order(epoch, num_shards, shard_id)[start:]
        for index, record in zip(order, self.reader.read(order)):
            ids, labels = self.builder.build(record, self.null_prompt(epoch, index))
            yield self.builder.padded(ids, labels, self.max_length)

    def evaluation_samples(self, batch_size, num_shards=1, shard_id=0):
        """Every usable sample once, in index order, rank ``shard_id`` taking every ``num_shards``-th, without
        null prompts; padded with filler rows (nothing supervised) so that every rank yields the same number of
        whole batches of ``batch_size``: the ranks' collectives stay in step, each sample counts exactly once."""
        mine = self.usable[shard_id::num_shards]
        per_rank = math.ceil(math.ceil(len(self.usable) / num_shards) / batch_size) * batch_size
        for record in self.reader.read(mine):
            ids, labels = self.builder.build(record, False)
            yield self.builder.padded(ids, labels, self.max_length)
        if len(mine) < per_rank:
            first = next(self.reader.read(self.usable[:1]))
            ids, mask, labels = self.builder.padded(*self.builder.build(first, False), self.max_length)
            filler = (ids, mask, np.full_like(labels, IGNORE_INDEX))  # a real sample's tokens, none supervised
            for _ in range(per_rank - len(mine)):
                yield filler


def batches(samples, batch_size):
    """Group padded samples into (input_ids, attention_mask, labels) arrays of ``batch_size`` rows (the last
    partial batch is dropped)."""
    group = []
    for sample in samples:
        group.append(sample)
        if len(group) == batch_size:
            yield tuple(np.stack(column) for column in zip(*group))
            group = []


def next_token_targets(labels):
    """Labels shifted left by one (targets[t] = labels[t + 1]), -100 at the end: the loss compares position t's
    logits with targets[t]. Shifting here rather than in the loss keeps each position's target with it."""
    targets = np.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets
