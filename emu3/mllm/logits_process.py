"""Logits processors and warpers for ``generate``, with the semantics of HF transformers' classes of the same
names (``transformers.generation.logits_process``, which the original Emu3 pipeline used).

Processors take and return numpy arrays: ``processor(input_ids (B, T) int64, scores (B, V) float32)``; MindSpore
tensors are accepted and converted. A processor may define ``prepare_generation(batch_size, max_new_tokens,
mode)``; ``generate`` calls it before the first step.
"""

import math

import numpy as np

import mindspore as ms
from mindspore import Tensor

from ..arrays import as_array
from .cache import DynamicCache
from .decoding import CachedDecoder, initial_cache_length


def log_softmax(scores):
    """Row-wise log-softmax in the scores' dtype (fp32), -inf entries stay -inf."""
    top = np.max(scores, axis=-1, keepdims=True)
    shifted = scores - top
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax(scores):
    top = np.max(scores, axis=-1, keepdims=True)
    e = np.exp(scores - top)
    return e / np.sum(e, axis=-1, keepdims=True)


# ---- processors --------------------------------------------------------------------------------------------------


class LogitsProcessor:
    """``__call__(input_ids (B, T), scores (B, V)) -> scores``, all numpy."""

    def __call__(self, input_ids, scores):
        raise NotImplementedError


class LogitsProcessorList(list):
    """Applies its processors in order."""

    def __call__(self, input_ids, scores):
        input_ids, scores = as_array(input_ids), as_array(scores)
        for processor in self:
            scores = processor(input_ids, scores)
        return scores

    def prepare_generation(self, batch_size, max_new_tokens, mode):
        for processor in self:
            prepare = getattr(processor, "prepare_generation", None)
            if prepare is not None:
                prepare(batch_size, max_new_tokens, mode)


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Keeps only the ids ``prefix_allowed_tokens_fn(batch_id, row)`` returns for each row; -inf elsewhere.

    As in transformers: rows are grouped by ``num_beams`` (batch_id = row // num_beams); an empty answer is an
    error; if every allowed id of a batch entry already scored -inf, the constraint is forced with scores 0 on
    the allowed ids.
    """

    def __init__(self, prefix_allowed_tokens_fn, num_beams=1):
        self._fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids, scores):
        input_ids, scores = as_array(input_ids), as_array(scores)
        mask = np.full_like(scores, -np.inf)
        for row in range(input_ids.shape[0]):
            batch_id = row // self._num_beams
            allowed = self._fn(batch_id, input_ids[row])
            if len(allowed) == 0:
                raise ValueError(f"prefix_allowed_tokens_fn returned no allowed token for batch ID {batch_id}: "
                                 "the constraint is unsatisfiable")
            mask[row, np.asarray(allowed, dtype=np.int64)] = 0
        out = scores + mask
        stuck = np.isneginf(out.max(axis=-1)).reshape(-1, self._num_beams).all(axis=-1)
        if stuck.any():
            rows = np.repeat(stuck, self._num_beams)
            out[rows] = mask[rows]
        return out


class TemperatureLogitsWarper(LogitsProcessor):
    def __init__(self, temperature):
        if not isinstance(temperature, float) or not temperature > 0:
            raise ValueError(f"temperature must be a strictly positive float, got {temperature!r} "
                             "(for greedy decoding use do_sample=False)")
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        return as_array(scores) / np.float32(self.temperature)


class TopKLogitsWarper(LogitsProcessor):
    """Keeps the scores >= the k-th largest (ties at the threshold survive, as in transformers)."""

    def __init__(self, top_k, filter_value=-math.inf, min_tokens_to_keep=1):
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a strictly positive integer, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        scores = as_array(scores)
        vocab = scores.shape[-1]
        k = min(self.top_k, vocab)
        kth = np.partition(scores, vocab - k, axis=-1)[..., vocab - k:vocab - k + 1]
        return np.where(scores < kth, np.float32(self.filter_value), scores).astype(scores.dtype)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus filtering: drop the least likely tokens whose cumulative probability stays <= 1 - top_p."""

    def __init__(self, top_p, filter_value=-math.inf, min_tokens_to_keep=1):
        top_p = float(top_p)
        if not 0 <= top_p <= 1:
            raise ValueError(f"top_p must be in [0, 1], got {top_p}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"min_tokens_to_keep must be a positive integer, got {min_tokens_to_keep!r}")
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        scores = as_array(scores)
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending
        ascending = np.take_along_axis(scores, order, axis=-1)
        cumulative = np.cumsum(softmax(ascending), axis=-1, dtype=np.float32)
        drop_sorted = cumulative <= (1 - self.top_p)
        drop_sorted[..., -self.min_tokens_to_keep:] = False
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        return np.where(drop, np.float32(self.filter_value), scores).astype(scores.dtype)


def sampling_warpers(temperature=1.0, top_k=None, top_p=None):
    """The warpers ``generate(do_sample=True)`` appends, in transformers' order."""
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0):
        raise ValueError(f"top_k must be a whole number >= 0 (0 = off), got {top_k!r}")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p!r}")
    warpers = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(int(top_k)))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


class UnbatchedClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance with the unconditional branch run as its own batch, as transformers' class.

    scores -> log_softmax(scores); if guidance_scale == 1 that is returned. Otherwise the unconditional branch
    (its own KV cache) runs: on the first call over the whole ``unconditional_ids`` (default: the last token of
    ``input_ids``) with ``unconditional_attention_mask`` (default: all ones — the negative prompts' own left
    padding is then attended to, exactly like the original), later over ``input_ids[:, -1:]`` only, i.e. the token
    chosen for the conditional branch. Positions are the slot indices (the original calls the model without
    position ids). Result: guidance_scale * (scores - uncond) + uncond, uncond = log_softmax of its last logits.

    Inside ``generate`` the branch uses a ``StaticCache`` and the same step kind (pynative / one compiled graph) as
    the conditional branch (``generate`` re-arms it, so an instance can serve several generations); called on
    its own it grows a ``DynamicCache`` in pynative and serves one sequence of calls, as transformers' does.
    """

    def __init__(self, guidance_scale, model, unconditional_ids=None, unconditional_attention_mask=None,
                 use_cache=True):
        self.guidance_scale = guidance_scale
        self.model = model
        self.use_cache = use_cache
        self._given = (as_array(unconditional_ids), as_array(unconditional_attention_mask))
        self._plan = None  # (max_new_tokens, mode) once generate() announced itself
        self._start()

    def _start(self):
        self.unconditional_ids, self.unconditional_attention_mask = self._given
        self._decoder = None
        self._dynamic = None
        self._first_pass = True

    def prepare_generation(self, batch_size, max_new_tokens, mode):
        """Called by ``generate``: run the branch like the conditional one, and start afresh (reusable)."""
        self._plan = (max_new_tokens, mode)
        self._start()

    def get_unconditional_logits(self, input_ids):
        """Last-position logits (B, V) of the unconditional branch for this step."""
        if self._first_pass:
            self._first_pass = False
            if self.unconditional_ids is None:
                self.unconditional_ids = input_ids[:, -1:]
            if self.unconditional_attention_mask is None:
                self.unconditional_attention_mask = np.ones_like(self.unconditional_ids, dtype=np.int64)
            if self._plan is not None and self.use_cache:
                max_new_tokens, mode = self._plan
                length = initial_cache_length(self.model.config, self.unconditional_ids.shape[1], max_new_tokens)
                self._decoder = CachedDecoder(self.model, self.unconditional_attention_mask, length, mode,
                                              role="cfg_unconditional", positions="slots")
                return self._decoder.prefill(self.unconditional_ids)
            return self._forward(self.unconditional_ids, self.unconditional_attention_mask)
        last = input_ids[:, -1:]
        if self._decoder is not None:
            return self._decoder.step(last)
        self.unconditional_attention_mask = np.concatenate(
            [self.unconditional_attention_mask, np.ones_like(last, dtype=np.int64)], axis=1)
        if self.use_cache:
            return self._forward(last, self.unconditional_attention_mask)
        self.unconditional_ids = np.concatenate([self.unconditional_ids, last], axis=1)
        return self._forward(self.unconditional_ids, self.unconditional_attention_mask)

    def _forward(self, ids, mask):
        if self.use_cache and self._dynamic is None:
            self._dynamic = DynamicCache()
        _, logits, self._dynamic = self.model(Tensor(ids, ms.int32), Tensor(mask, ms.int32),
                                              past_key_values=self._dynamic if self.use_cache else None,
                                              use_cache=self.use_cache, logits_to_keep=1)
        return logits.asnumpy()[:, -1]

    def __call__(self, input_ids, scores):
        input_ids = as_array(input_ids)
        scores = log_softmax(as_array(scores))
        if self.guidance_scale == 1:
            return scores
        unconditional = log_softmax(self.get_unconditional_logits(input_ids))
        return self.guidance_scale * (scores - unconditional) + unconditional


def guided_scores(logits, batch_size, guidance_scale):
    """Batched CFG: logits (2B, V) = conditional rows then unconditional rows -> guided scores (B, V)."""
    conditional = log_softmax(logits[:batch_size])
    unconditional = log_softmax(logits[batch_size:])
    return guidance_scale * (conditional - unconditional) + unconditional
