"""Cached decoding: the model and a static KV cache as one compiled step, and the cells, caches and graphs kept
on the model between ``generate`` calls (``emu3.mllm.generation`` runs the loop around them).

Kept apart from the modeling file (which knows nothing of generation) and from the loop (which knows nothing of
graphs and caches), so the imports point one way: generation -> decoding -> cache.
"""

import gc
import os

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn

from ..device import FusedJit
from .cache import StaticCache


def left_padding_positions(attention_mask):
    """numpy twin of ``position_ids_from_attention_mask``: cumsum(mask) - 1, padded slots set to 1."""
    mask = np.asarray(attention_mask, dtype=np.int64)
    return np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)


class Emu3CachedStep(nn.Cell):
    """The model and a ``StaticCache`` as one cell, for ``mindspore.jit``: returns last-position logits (B, V).

    Prefill with the prompt (S tokens, ``cache_position = arange(S)``), then call once per new token with
    ``input_ids`` (B, 1) and ``cache_position = [t]``. ``attention_mask`` should be (B, cache.max_length) (1 for
    prompt tokens and generated slots, 0 for left padding and the still-empty future), so decode steps share one
    compiled graph; ``position_ids`` (B, S) come from ``position_ids_from_attention_mask``.
    """

    def __init__(self, model, cache):
        super().__init__()
        self.model = model
        self.cache = cache

    def construct(self, input_ids, attention_mask, position_ids, cache_position):
        # Only the logits are taken: unpacking the unused outputs leaves getitem nodes of the cache-writing call
        # that MindSpore's analyzer prunes with a "side effect nodes were eliminated" warning (the writes stay).
        logits = self.model(input_ids, attention_mask, position_ids, self.cache, None, None, None,
                            cache_position, 1)[1]
        # (B, 1, V) -> (B, V) by reshape (free), not a StridedSlice, which copies a vocabulary-wide row.
        return logits.reshape(logits.shape[0], logits.shape[2])


def _cached_step(model, role, batch_size, max_length, mode):
    """(step cell, prefill callable, decode callable) for an ``Emu3CachedStep`` of these shapes, kept on the model.

    In graph mode both callables are compiled: the one-token decode step, which runs thousands of times at fixed
    shapes, with operator fusion where available (``emu3.device.FusedJit``), the prefill (a new shape per prompt
    length) without, as fused kernels take longer to compile.

    Reusing the same cell and cache across ``generate`` calls with the same shapes means the graphs compile
    once. Each ``role`` (the generation itself, the unconditional CFG branch) keeps the steps of its last
    ``model.generation_steps_kept`` shapes (default 1), which bounds the cache memory held
    (``GenerationMixin.clear_generation_cache`` frees it); raise it to alternate between shapes without
    recompiling, e.g. text-to-image and VQA from one model.
    """
    steps = model.__dict__.get("_generation_steps")
    if steps is None:
        steps = {}
        object.__setattr__(model, "_generation_steps", steps)  # a plain attribute, not a registered sub-cell
    kept = steps.setdefault(role, {})  # shapes -> (step cell, prefill, decode), least recently used first
    key = (batch_size, max_length, mode)
    entry = kept.pop(key, None)
    if entry is None:
        _drop(kept, keep=max(1, int(model.generation_steps_kept)) - 1)
        cache = StaticCache.for_model(model.config, batch_size, max_length, model.lm_head.weight.dtype)
        step = Emu3CachedStep(model, cache)
        step.set_train(False)
        entry = (step, ms.jit(step.construct), FusedJit(step.construct)) if mode == "graph" else (step, step, step)
    else:
        entry[0].cache.reset()
    kept[key] = entry
    return entry


def clear_generation_steps(model):
    """Drop every kept step of ``model`` with its KV cache and compiled graphs."""
    for kept in model.__dict__.pop("_generation_steps", {}).values():
        _drop(kept, keep=0)


def _drop(kept, keep):
    """Evict the least recently used steps of ``kept`` until ``keep`` remain, graphs released."""
    if len(kept) <= keep:
        return
    while len(kept) > keep:
        release_compiled_graphs(kept.pop(next(iter(kept)))[0])
    gc.collect()  # collect the evicted cells now, so their KV caches are freed before a new one is allocated


MIN_CACHE_BUCKET = 256


def release_compiled_graphs(cell):
    """Free the graphs MindSpore compiled for ``cell``'s methods.

    MindSpore keeps every compiled graph in a process-wide executor until told otherwise (``ms_memory_recycle``
    frees all of them); a replaced decode step would otherwise stay there for good, and host memory grows
    with every shape (``tests/mllm/test_generation.py`` checks it stays flat). The graphs of one cell are
    recognised by its creation time and id in their phase names. Private API: if it changes, nothing is freed,
    and nothing breaks.
    """
    try:
        from mindspore.graph import api as graph_api

        marker = f"{cell.create_time}{cell.phase}.{id(cell)}"
        phases = {phase for phase in graph_api.ms_compile_cache if marker in phase}
        if phases:
            graph_api._cell_graph_executor.del_net_res(None, phases)  # pylint: disable=protected-access
            if os.getenv("MS_DEV_JIT_PIPELINE") != "0":
                graph_api.JitExecutor_.get_instance().del_net_res(None, phases)
            graph_api.ms_compile_cache.difference_update(phases)
    except Exception:  # noqa: BLE001 - a memory optimisation must never break generation
        pass


def initial_cache_length(config, prompt_len, max_new_tokens):
    """Slots for a generation: prompt + new tokens rounded up to a bucket (256, 512, 1024, … slots), but not
    beyond max_position_embeddings up front.

    Buckets let generations of nearby lengths share one compiled decode step: a long-lived process that
    alternates e.g. 128 and 40 new tokens compiles once instead of on every call (and compiled graphs are not
    returned to the system when replaced). Attention reads every slot, so a bucket costs at most ~2x the exact
    length's attention reads (a small share of a step); a cache sized for a generous ``max_new_tokens`` (the
    Emu3 scripts pass 40,960 for an image of 8,193 tokens) is avoided by the cap, and a generation that
    outgrows its cache doubles it (one copy and one recompile).
    """
    need = int(prompt_len) + int(max_new_tokens)
    bucket = max(MIN_CACHE_BUCKET, 1 << (need - 1).bit_length())
    return min(bucket, max(config.max_position_embeddings, prompt_len + 1))


class CachedDecoder:
    """Prefill a batch of prompts into a ``StaticCache``, then feed one token per row per call.

    ``attention_mask`` (B, S) is the prompts' padding mask; the cache starts with ``max_length`` > S slots and
    doubles when full. ``positions``: "mask" numbers real tokens from 0 (left padding, as the original's
    generation); "slots" uses the slot index (what a model call without position ids does, e.g. the CFG
    processor's).
    """

    def __init__(self, model, attention_mask, max_length, mode="pynative", role="generate", positions="mask"):
        if mode not in ("pynative", "graph"):
            raise ValueError(f"mode must be 'pynative' or 'graph', got {mode!r}")
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        self.batch_size, self.prompt_len = attention_mask.shape
        if max_length <= self.prompt_len:
            raise ValueError(f"the cache needs more than the prompt's {self.prompt_len} slots, got {max_length}")
        self.model, self.mode, self.role = model, mode, role
        self.prompt_mask = attention_mask
        self._allocate(max_length)
        if positions == "mask":
            self.prompt_positions = left_padding_positions(attention_mask)
            self.next_position = attention_mask.sum(axis=1).reshape(-1, 1)  # real tokens so far, per row
        else:
            self.prompt_positions = np.broadcast_to(np.arange(self.prompt_len), attention_mask.shape)
            self.next_position = np.full((self.batch_size, 1), self.prompt_len)
        self.length = 0

    def _allocate(self, max_length):
        self.max_length = max_length
        self.step_cell, self.prefill_fn, self.step_fn = _cached_step(self.model, self.role, self.batch_size,
                                                                     max_length, self.mode)
        # Generated slots are 1 from the start: causality hides those not yet written.
        full = np.ones((self.batch_size, max_length), np.int32)
        full[:, :self.prompt_len] = self.prompt_mask
        self.mask = Tensor(full, ms.int32)

    def _grow(self):
        old = self.step_cell.cache
        self._allocate(2 * self.max_length)
        self.step_cell.cache.copy_from(old)

    def prefill(self, input_ids):
        if self.length:  # cache slots are write-once (see emu3.mllm.cache): start this sequence afresh
            self.step_cell.cache.reset()
        ids = np.asarray(input_ids).reshape(self.batch_size, self.prompt_len)
        logits = self.prefill_fn(Tensor(ids, ms.int32), self.mask, Tensor(self.prompt_positions, ms.int32),
                                 Tensor(np.arange(self.prompt_len), ms.int32))
        self.length = self.prompt_len
        return logits.asnumpy()

    def step(self, tokens):
        if self.length >= self.max_length:
            self._grow()
        ids = np.asarray(tokens).reshape(self.batch_size, 1)
        positions = self.next_position + (self.length - self.prompt_len)
        logits = self.step_fn(Tensor(ids, ms.int32), self.mask, Tensor(positions, ms.int32),
                              Tensor(np.array([self.length]), ms.int32))
        self.length += 1
        return logits.asnumpy()
