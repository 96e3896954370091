"""The collectives that ZeRO and sequence parallelism need, as cells with an explicit backward.

On Ascend they are the native ops (AllGather, ReduceScatter, AlltoAll). MindSpore's CPU backend has only
AllGather / AllReduce / Broadcast, so there the missing ones are composed from those (same results, more traffic):

- reduce-scatter = all-reduce, then keep this rank's chunk;
- all-to-all = all-gather along a new leading axis, then keep this rank's chunk of the split axis;
- CPU collectives run over the world group only: a smaller group (an SP group inside a larger world) gathers
  over the world and keeps its members' entries.

Every cell has its backward written out (``bprop``), because the built-in gradient of AllGather is a ReduceScatter,
which does not exist on CPU. So the very same training code runs, and is tested against one process, here.

A ``Group`` names the ranks a collective runs over: its name (MindSpore's), size and this process's index in it.
Ranks and sizes are read once when the cell is built: they are constants of the compiled graph.
"""

import os
from dataclasses import dataclass

import numpy as np

from mindspore import Tensor, nn, ops

from ..device import is_ascend


@dataclass(frozen=True)
class Group:
    name: str
    size: int
    rank: int  # this process's index inside the group
    ranks: tuple = (0,)  # global ranks, in order
    world_size: int = 1

    @property
    def is_world(self):
        return self.size == self.world_size


SINGLE = Group("single", 1, 0, (0,), 1)


def chunk(x, dim, index, parts):
    """The ``index``-th of ``parts`` equal chunks of ``x`` along ``dim`` (a static slice)."""
    size = x.shape[dim] // parts
    begin = (0,) * dim + (index * size,) + (0,) * (x.ndim - dim - 1)
    end = x.shape[:dim] + ((index + 1) * size,) + x.shape[dim + 1:]
    return ops.strided_slice(x, begin, end, (1,) * x.ndim)


def _merge(stacked, dim):
    """(P, ...) -> the P pieces concatenated along ``dim`` of a piece, in order."""
    p = stacked.shape[0]
    shape = stacked.shape[1:]
    perm = tuple(range(1, dim + 1)) + (0,) + tuple(range(dim + 1, len(shape) + 1))
    return stacked.transpose(perm).reshape(shape[:dim] + (p * shape[dim],) + shape[dim + 1:])


class _Stack(nn.Cell):
    """(P, ...) stack of every group member's ``x``, in group order: the CPU primitive everything else is built
    from. CPU AllGather runs over the world group only, so a smaller group gathers the world and keeps its
    members' entries."""

    def __init__(self, group):
        super().__init__()
        self.gather = ops.AllGather(_world_name())
        self.members = None if group.is_world else Tensor(np.array(group.ranks, np.int32))

    def construct(self, x):
        stacked = self.gather(x.expand_dims(0))
        if self.members is not None:
            stacked = ops.gather(stacked, self.members, 0)
        return stacked


def _world_name():
    from mindspore.communication import GlobalComm

    return GlobalComm.WORLD_COMM_GROUP


class AllGather(nn.Cell):
    """Concatenate every rank's ``x`` along ``dim``; backward: reduce-scatter of the gradient along ``dim``."""

    def __init__(self, group, dim=0):
        super().__init__()
        self.dim = dim
        self.native = is_ascend()
        self.op = ops.AllGather(group.name) if self.native else _Stack(group)
        self.reduce_scatter = ReduceScatter(group, dim)

    def construct(self, x):
        if self.native:
            return _merge(self.op(x).reshape((-1,) + x.shape), self.dim)
        return _merge(self.op(x), self.dim)

    def bprop(self, x, out, dout):
        return (self.reduce_scatter(dout),)


class ReduceScatter(nn.Cell):
    """Sum over ranks, each keeping its chunk along ``dim``; backward: all-gather of the gradient along ``dim``."""

    def __init__(self, group, dim=0):
        super().__init__()
        self.group, self.dim = group, dim
        self.native = is_ascend()
        if self.native:
            self.op = ops.ReduceScatter(ops.ReduceOp.SUM, group.name)
            self.gather = ops.AllGather(group.name)
        else:
            self.sum = AllReduce(group)
            self.stack = _Stack(group)

    def construct(self, x):
        if self.native:  # the native op scatters axis 0
            moved = x if self.dim == 0 else x.swapaxes(0, self.dim)
            out = self.op(moved)
            return out if self.dim == 0 else out.swapaxes(0, self.dim)
        return chunk(self.sum(x), self.dim, self.group.rank, self.group.size)

    def bprop(self, x, out, dout):
        if self.native:
            return (_merge(self.gather(dout).reshape((-1,) + dout.shape), self.dim),)
        return (_merge(self.stack(dout), self.dim),)


class AllToAll(nn.Cell):
    """Split ``x`` into ``size`` chunks along ``split_dim``, send chunk j to rank j, and concatenate what arrives
    (in rank order) along ``concat_dim``; backward: the all-to-all the other way round.

    Sequence parallelism uses it to trade a sequence split for a head split: (B, N, S/P, D) -> (B, N/P, S, D).
    """

    def __init__(self, group, split_dim, concat_dim):
        super().__init__()
        self.group, self.split_dim, self.concat_dim = group, split_dim, concat_dim
        self.native = is_ascend()
        if self.native:
            self.forward_op = ops.AlltoAll(group.size, split_dim, concat_dim, group.name)
            self.backward_op = ops.AlltoAll(group.size, concat_dim, split_dim, group.name)
        else:
            self.stack = _Stack(group)

    def construct(self, x):
        if self.native:
            return self.forward_op(x)
        return self._composed(x, self.split_dim, self.concat_dim)

    def bprop(self, x, out, dout):
        if self.native:
            return (self.backward_op(dout),)
        return (self._composed(dout, self.concat_dim, self.split_dim),)

    def _composed(self, x, split_dim, concat_dim):
        mine = chunk(self.stack(x), split_dim + 1, self.group.rank, self.group.size)
        return _merge(mine, concat_dim)


class AllReduce(nn.Cell):
    """Sum over the group (no gradient: used for norms, counts and gradient reduction after backward)."""

    def __init__(self, group):
        super().__init__()
        self.native = is_ascend() or group.is_world
        self.op = ops.AllReduce(ops.ReduceOp.SUM, group.name if is_ascend() else _world_name()) \
            if self.native else _Stack(group)

    def construct(self, x):
        if self.native:
            return self.op(x)
        return self.op(x).sum(0)


def launched_distributed():
    """Whether this process was started by msrun (or another launcher that sets the rank environment)."""
    return "MS_WORKER_NUM" in os.environ or "RANK_SIZE" in os.environ


def init_distributed(sequence_parallel=1):
    """Initialise the collectives of an ``msrun`` launch (nothing for a single process) and return
    (world, sequence-parallel group, data-parallel group): consecutive ranks form one SP group (as mindone's
    ``create_parallel_group``), and rank r's data-parallel group holds the ranks with the same index in their
    SP group."""
    if not launched_distributed():
        if sequence_parallel != 1:
            raise ValueError(f"--sequence_parallel_shards {sequence_parallel} needs several processes: launch "
                             "with msrun (scripts/*_sft_seq_parallel.sh with NPUS=...)")
        return SINGLE, SINGLE, SINGLE
    from mindspore.communication import create_group, get_group_size, get_rank, init

    init()
    rank, world = get_rank(), get_group_size()
    if sequence_parallel < 1 or world % sequence_parallel:
        raise ValueError(f"the number of processes ({world}) must be a multiple of --sequence_parallel_shards "
                         f"({sequence_parallel})")
    sp = sequence_parallel
    sp_ranks = tuple(range(rank // sp * sp, rank // sp * sp + sp))
    dp_ranks = tuple(range(rank % sp, world, sp))
    groups = []
    for kind, ranks in (("sp", sp_ranks), ("dp", dp_ranks)):
        if len(ranks) == world:
            name = _world_name()
        else:
            name = f"{kind}_group_{ranks[0]}"
            if is_ascend():  # members create their group; CPU collectives use the world group (see _Stack)
                create_group(name, list(ranks))
        groups.append(Group(name, len(ranks), ranks.index(rank), ranks, world))
    return Group(_world_name(), world, rank, tuple(range(world)), world), groups[0], groups[1]

