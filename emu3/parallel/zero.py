"""ZeRO stages 0-3 over the data-parallel ranks, applied to a plain model from outside.

Every rank's gradients are summed over the whole group (the loss of each rank is already divided by the step's
global token count, see ``train/step.py``), then each stage keeps a different part of the state sharded:

- stage 0: plain data parallelism, every gradient all-reduced, every rank updates everything;
- stage 1: the optimizer state is sharded: gradients are all-reduced, each rank updates its 1/P rows of every
  large tensor (fp32 master + moments), then the updated rows are all-gathered into the full parameters;
- stage 2: as 1, with the gradients reduce-scattered instead of all-reduced (each rank receives only its rows);
- stage 3: the parameters themselves are sharded: the linear and embedding layers keep 1/P of their rows and
  all-gather the full weight just before use, in forward and again in backward (so recompute re-gathers instead
  of keeping it); the backward of that gather is the reduce-scatter of the gradient.

Sharding is by rows (dim 0), padded with zero rows up to a multiple of P (Emu3's vocabulary, 184,622, is not a
multiple of 8); padded rows get zero gradients and stay zero. Small tensors (RMSNorm weights) stay replicated and
their gradients are all-reduced. Global-norm clipping uses the norm over all parameters across the shards.
"""

import math

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..mllm.modeling_emu3 import Emu3Embedding, embedding_lookup
from .collectives import SINGLE, AllGather, AllReduce, ReduceScatter, chunk

STAGES = (0, 1, 2, 3)


def sum_of_squares(grad):
    """The fp32 sum of squares of one gradient (a term of the global gradient norm)."""
    grad = grad.astype(ms.float32)
    return ops.reduce_sum(grad * grad)


def shard_rows(array, size, rank):
    """Rank ``rank``'s rows of ``array`` split in ``size`` equal parts, zero-padded at the end."""
    per = math.ceil(array.shape[0] / size)
    out = np.zeros((per,) + array.shape[1:], array.dtype)
    part = array[rank * per:(rank + 1) * per]
    out[:len(part)] = part
    return out


def _pad_rows(x, rows):
    """(r, ...) -> (rows, ...) with zero rows appended (concatenation: see emu3.nn.layers.zero_pad)."""
    if x.shape[0] == rows:
        return x
    return ops.cat((x, ops.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)), 0)


def _sharded_parameter(param, group):
    array = param.asnumpy()
    return Parameter(Tensor(shard_rows(array, group.size, group.rank)), name=param.name,
                     requires_grad=param.requires_grad)


class _RegatheringMatmul(nn.Cell):
    """``x @ gather(shard)[:rows]^T`` whose backward gathers the weight again instead of keeping the gathered copy
    from forward: without recompute, autodiff would hold every layer's whole weight from forward to backward."""

    def __init__(self, group, rows, trainable):
        super().__init__()
        self.rows, self.padded, self.trainable = rows, math.ceil(rows / group.size) * group.size, trainable
        self.gather = AllGather(group, 0)
        self.reduce_scatter = ReduceScatter(group, 0)
        self.matmul = ops.MatMul(transpose_b=True)
        self.matmul_tn = ops.MatMul(transpose_a=True)  # dout' x without a transposed copy of dout

    def construct(self, x, shard):
        return self.matmul(x, self.gather(shard)[:self.rows])

    def bprop(self, x, shard, out, dout):
        weight = self.gather(shard)[:self.rows]
        dx = ops.matmul(dout, weight)
        if not self.trainable:  # a frozen layer: no weight gradient, no collective
            return dx, ops.zeros_like(shard)
        dweight = self.matmul_tn(dout, x)
        return dx, self.reduce_scatter(_pad_rows(dweight, self.padded))


class GatheredLinear(nn.Cell):
    """A bias-free linear layer whose ``weight`` holds this rank's rows; the full weight exists only inside the
    call (ZeRO-3). With ``regather`` the backward gathers it again (for layers that are not recomputed: a
    recomputed layer already re-runs its forward gather before its backward)."""

    def __init__(self, dense, group, regather=False):
        super().__init__()
        self.rows = dense.weight.shape[0]
        self.weight = _sharded_parameter(dense.weight, group)
        self.regather = _RegatheringMatmul(group, self.rows, dense.weight.requires_grad) if regather else None
        self.gather = AllGather(group, 0)
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        flat = x.reshape(-1, x.shape[-1])
        if self.regather is not None:
            out = self.regather(flat, self.weight)
        else:
            out = self.matmul(flat, self.gather(self.weight)[:self.rows])
        return out.reshape(x.shape[:-1] + (self.rows,))


class GatheredEmbedding(nn.Cell):
    """``Emu3Embedding`` with its table sharded by rows (ZeRO-3)."""

    def __init__(self, embedding, group):
        super().__init__()
        self.rows = embedding.weight.shape[0]
        self.padding_idx = embedding.padding_idx
        self.weight = _sharded_parameter(embedding.weight, group)
        self.gather = AllGather(group, 0)

    def construct(self, input_ids):
        weight = self.gather(self.weight)[:self.rows]
        return embedding_lookup(weight, input_ids, self.padding_idx, self.training)


def shard_parameters(model, group, regather=False):
    """ZeRO-3: replace every bias-free ``nn.Dense`` and ``Emu3Embedding`` of ``model`` by its gathered-on-use
    version, in place; parameter names are kept. ``regather``: linear layers gather their weight again in backward
    (when the layers are not recomputed). Returns {name: full row count} of the sharded parameters."""
    sharded = {}
    for _, cell in list(model.cells_and_names()):
        for attr, child in list(cell.name_cells().items()):
            if isinstance(child, nn.Dense) and not child.has_bias:
                new = GatheredLinear(child, group, regather)
            elif isinstance(child, Emu3Embedding):
                new = GatheredEmbedding(child, group)
            else:
                continue
            name = child.weight.name
            setattr(cell, attr, new)
            new.weight.name = name  # the parent's setattr prefixes the attribute name only
            sharded[name] = new.rows
    return sharded


class ZeroPlan(nn.Cell):
    """Where each trainable parameter's state lives and how its gradient is reduced, for one ZeRO stage.

    ``weights``: what backward differentiates (the model's trainable parameters, shards under stage 3);
    ``optimizer_params``: what the optimizer updates, matched one to one with ``reduce(grads)``.
    """

    def __init__(self, model, group=SINGLE, stage=0, sharded_rows=None):
        super().__init__(auto_prefix=False)
        if stage not in STAGES:
            raise ValueError(f"--ms_zero_stage must be one of {STAGES}, got {stage}")
        self.group, self.stage = group, stage
        self.distributed = group.size > 1
        self.weights = ms.ParameterTuple(model.trainable_params())
        if stage == 3:
            sharded = set(sharded_rows or {})
        elif stage in (1, 2) and self.distributed:
            sharded = {p.name for p in self.weights if p.ndim >= 2}
        else:
            sharded = set()
        self.sharded = tuple(p.name in sharded for p in self.weights)
        self.rows = tuple(p.shape[0] for p in self.weights)
        # Stages 1/2: this rank's rows of each sharded parameter, fp32: the optimizer updates these.
        self.owns_rows = stage in (1, 2) and self.distributed
        masters = [Parameter(Tensor(shard_rows(p.asnumpy().astype(np.float32), group.size, group.rank)),
                             name=f"zero.{p.name}", requires_grad=False)
                   for p, s in zip(self.weights, self.sharded) if s and self.owns_rows]
        self.masters = ms.ParameterTuple(masters)
        it = iter(self.masters)
        self._optimizer_params = [next(it) if s and self.owns_rows else p for p, s in zip(self.weights, self.sharded)]
        # name -> full rows of everything held as shards here (stage 3 includes frozen layers).
        self.sharded_rows = dict(sharded_rows or {}) if stage == 3 else \
            {p.name: r for p, r, s in zip(self.weights, self.rows, self.sharded) if s}
        self.master_by_name = {p.name: m for p, m in zip(self._sharded_weights(), self.masters)}
        if self.distributed:
            self.all_reduce = AllReduce(group)
            self.reduce_scatter = ReduceScatter(group, 0)
            self.all_gather = AllGather(group, 0)

    def optimizer_params(self):
        return list(self._optimizer_params)

    def reduce(self, grads):
        """Sum every rank's gradients; sharded entries keep this rank's rows only."""
        if not self.distributed:
            return grads
        out = []
        for g, sharded, rows in zip(grads, self.sharded, self.rows):
            if sharded and self.stage == 3:
                out.append(g)  # reduce-scattered by the weight's gather in backward
            elif sharded:
                padded = _pad_rows(g, math.ceil(rows / self.group.size) * self.group.size)
                out.append(self.reduce_scatter(padded) if self.stage == 2 else
                           chunk(self.all_reduce(padded), 0, self.group.rank, self.group.size))
            else:
                out.append(self.all_reduce(g))
        return tuple(out)

    def sum_over_ranks(self, x):
        """In a graph: ``x`` summed over the ranks (losses)."""
        return self.all_reduce(x) if self.distributed else x

    def host_sum(self, x):
        """On the host: a number or scalar tensor summed over the ranks, as a float."""
        value = x if isinstance(x, Tensor) else Tensor(float(x), ms.float32)
        if self.distributed:
            value = self.all_reduce(value.astype(ms.float32))
        return float(value.asnumpy())

    def squared_norm(self, grads):
        """Sum of squares of the full gradients (the reduced ``grads``): sharded parts summed over the ranks."""
        local = Tensor(0.0, ms.float32)
        replicated = Tensor(0.0, ms.float32)
        for g, sharded in zip(grads, self.sharded):
            square = sum_of_squares(g)
            if sharded:
                local = local + square
            else:
                replicated = replicated + square
        if self.distributed and any(self.sharded):
            local = self.all_reduce(local)
        return local + replicated

    def all_finite(self, grads):
        """True on every rank, or False on every rank (ranks must agree to skip a step)."""
        finite = ms.amp.all_finite(grads)
        if not self.distributed:
            return finite
        bad = self.all_reduce(ops.logical_not(finite).astype(ms.float32))
        return bad == 0

    def publish(self):
        """Stages 1/2: the updated rows of every rank into the full parameters."""
        if not self.owns_rows:
            return Tensor(True)
        for p, master, rows in zip(self._sharded_weights(), self.masters, self._sharded_rows()):
            ops.assign(p, self.all_gather(master)[:rows].astype(p.dtype))
        return Tensor(True)

    def _sharded_weights(self):
        return [p for p, s in zip(self.weights, self.sharded) if s]

    def _sharded_rows(self):
        return [r for r, s in zip(self.rows, self.sharded) if s]

    # ---- host side: checkpoints ----------------------------------------------------------------------------
    def full_value(self, name, value):
        """The whole tensor ``name`` as numpy, given this rank's ``value`` of it (its rows where it is sharded).
        Every rank must call this for the same names in the same order (sharded tensors are all-gathered)."""
        rows = self.sharded_rows.get(name) if self.distributed else None
        if rows is None:
            return value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
        return self.all_gather(value if isinstance(value, Tensor) else Tensor(value)).asnumpy()[:rows]

