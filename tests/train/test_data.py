"""The SFT dataset's epoch order: every usable sample once per epoch, split over data-parallel ranks, and with
``--group_by_task`` one task per batch on every rank."""

import numpy as np
import pytest

from train.data import SFTDataset, batches
from train.sequences import IGNORE_INDEX, SequenceBuilder


def dataset(tokenizer, paths, task_batch_size=None, seed=3):
    return SFTDataset(paths, SequenceBuilder(tokenizer, "task"), max_length=4096, seed=seed,
                      task_batch_size=task_batch_size, log=lambda *_: None)


@pytest.mark.parametrize("ranks, batch", [(1, 2), (1, 3), (2, 2)])
def test_group_by_task_gives_one_task_per_batch_and_visits_every_sample_once(tokenizer, t2i_data, vqa_data,
                                                                                ranks, batch):
    data = dataset(tokenizer, [t2i_data, vqa_data], task_batch_size=batch)
    assert data.tasks == ["t2i", "vqa"]
    orders = [data.epoch_order(0, ranks, r) for r in range(ranks)]
    # Rank r takes every R-th sample: interleaving the ranks' orders restores the global order.
    merged = np.stack(orders, axis=1).reshape(-1)
    assert sorted(merged[:len(data)]) == sorted(data.usable)  # each sample once (then wrap-around padding)
    per_task = {t: int((data.task_of[data.usable] == t).sum()) for t in data.tasks}
    whole_runs = sum(n // (batch * ranks) for n in per_task.values())
    for order in orders:
        tasks = data.task_of[order]
        for i in range(whole_runs):  # the batches built of whole runs hold one task each
            assert len(set(tasks[i * batch:(i + 1) * batch])) == 1, (ranks, batch, i, tasks)
    for step in range(whole_runs):  # and the ranks agree: one global batch = one task
        assert len({data.task_of[o[step * batch]] for o in orders}) == 1
    assert set(data.task_of[orders[0][:whole_runs * batch:batch]]) == {"t2i", "vqa"}


def test_grouped_order_is_seeded_by_epoch_and_batches_hold_their_tasks_targets(tokenizer, t2i_data, vqa_data):
    data = dataset(tokenizer, [t2i_data, vqa_data], task_batch_size=4)
    assert list(data.epoch_order(1)) == list(dataset(tokenizer, [t2i_data, vqa_data], 4).epoch_order(1))
    assert list(data.epoch_order(0)) != list(data.epoch_order(1))
    mixed = dataset(tokenizer, [t2i_data, vqa_data])
    assert list(mixed.epoch_order(0)) != list(data.epoch_order(0))  # without the flag: the plain permutation
    supervised_counts = set()
    for _, _, labels in batches(data.samples(0), 4):
        per_row = (labels != IGNORE_INDEX).sum(axis=1)
        supervised_counts.add(tuple(sorted(set(per_row.tolist()))))
    # A T2I row supervises its visual tokens (dozens), a VQA row its answer + eos (two): never both in a batch.
    assert all(max(c) < 10 or min(c) > 10 for c in supervised_counts), supervised_counts


@pytest.mark.parametrize("ranks, batch", [(1, 3), (2, 3), (3, 4)])
def test_evaluation_visits_every_sample_once_in_whole_batches_on_every_rank(tokenizer, t2i_data, vqa_data,
                                                                             ranks, batch):
    data = dataset(tokenizer, [t2i_data, vqa_data])
    per_rank = [list(batches(data.evaluation_samples(batch, ranks, r), batch)) for r in range(ranks)]
    assert len({len(b) for b in per_rank}) == 1  # the ranks' collectives stay in step
    supervised = np.concatenate([labels for rank in per_rank for _, _, labels in rank])
    supervised = supervised[(supervised != IGNORE_INDEX).any(axis=1)]  # filler rows supervise nothing
    want = np.stack([data.builder.padded(*data.builder.build(r), 4096)[2] for r in data.reader.read(data.usable)])
    assert len(supervised) == len(data) and sorted(map(bytes, supervised)) == sorted(map(bytes, want))
