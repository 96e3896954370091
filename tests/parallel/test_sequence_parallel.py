"""Ulysses sequence parallelism over 2 processes equals one process: logits, loss and every gradient (summed over
the ranks, as the data-parallel reduction does), with GQA where each rank holds one of the 2 KV heads, compiled,
with every decoder layer recomputed."""

import os
from types import SimpleNamespace

import pytest

from emu3.parallel.sequence_parallel import check_sequence_parallel
from msrun_helper import rank_results, run_workers

WORKER = os.path.join(os.path.dirname(__file__), "sp_worker.py")


@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path):
    run_workers(WORKER, [tmp_path, 0], str(tmp_path))
    for result in rank_results(str(tmp_path), "sp"):
        for variant in ("recompute",):
            r = result[variant]
            assert r["local_shape"] == [2, 8, 300]  # each rank computed the logits of its 8 of 16 tokens only
            assert r["logits_diff"] < 1e-5
            assert abs(r["sp_loss"] - r["loss"]) < 1e-5 * abs(r["loss"])
            assert r["grad_names"] == 21
            worst = max(r["grad_rel_diff"], key=r["grad_rel_diff"].get)
            assert r["grad_rel_diff"][worst] < 1e-5, worst


@pytest.mark.parametrize("heads,kv,length,bad", [(4, 2, 16, None), (3, 2, 16, "num_attention_heads (3)"),
                                                 (4, 1, 16, "num_key_value_heads (1)"),
                                                 (4, 2, 15, "max_position_embeddings (15)")])
def test_divisibility_errors_name_what_to_change(heads, kv, length, bad):
    config = SimpleNamespace(num_attention_heads=heads, num_key_value_heads=kv)
    if bad is None:
        check_sequence_parallel(config, 2, length)
        return
    with pytest.raises(ValueError, match=r"--sequence_parallel_shards 2 must divide .*" + bad.replace("(", r"\(")
                       .replace(")", r"\)")):
        check_sequence_parallel(config, 2, length)
