"""What is applied to the plain model from outside, in order: sequence parallelism (attention cores wrapped
with all-to-alls), ZeRO-3 sharding (linear and embedding layers gathered on use), then recompute — last, so that
the recomputed blocks are the final cells (a block marked before its layers were replaced recomputes the old
ones in pynative). Frozen layers and precision are applied before, on the plain model."""

import os

from emu3.parallel.collectives import init_distributed, launched_distributed
from emu3.parallel.sequence_parallel import SequenceParallelCausalLM, check_sequence_parallel
from emu3.parallel.zero import ZeroPlan, shard_parameters


def init_parallel(args):
    """(world, sequence-parallel group, data-parallel group) for ``--sequence_parallel_shards``; checks the
    flags against the launch."""
    world, sp, dp = init_distributed(args.sequence_parallel_shards)
    if args.is_distribute and not launched_distributed():
        raise ValueError("--is_distribute True needs a distributed launch: use scripts/*_sft_seq_parallel.sh "
                         "(msrun) or drop the flag")
    if world.size > 1:  # in this rank's own log: lets train/launch.py name a rank that died without a word
        print(f"rank {world.rank} of {world.size}: process {os.getpid()}", flush=True)
    return world, sp, dp


def parallelize(model, world, sp, zero_stage, recompute):
    """Apply the parallelisms to ``model`` (an Emu3ForCausalLM) in place; returns (ZeRO plan, forward: the sequence-parallel wrapper or
    None for the model itself)."""
    forward = None
    if sp.size > 1:
        check_sequence_parallel(model.config, sp.size, model.config.max_position_embeddings)
        forward = SequenceParallelCausalLM(model, sp)
    sharded = shard_parameters(model, world, regather=not recompute) if zero_stage == 3 and world.size > 1 else None
    if recompute:
        for layer in model.model.layers:
            layer.recompute()
    return ZeroPlan(model, world, zero_stage if world.size > 1 else 0, sharded), forward
