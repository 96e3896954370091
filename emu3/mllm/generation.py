"""Autoregressive generation for the Emu3 LLM: logits processors, warpers and the decoding loop.

The loop follows HF transformers' greedy/sampling search (the original Emu3 used ``model.generate`` from
transformers 4.44), step by step:

    logits of the last position (fp32) -> logits processors -> warpers (temperature, top-k, top-p)
    -> softmax -> multinomial, or argmax when greedy -> finished rows get pad -> append -> eos check

Design for speed (see ``GenerationMixin.generate``):

- The model runs over a ``StaticCache`` sized prompt + max_new_tokens (capped at max_position_embeddings up
  front, doubled if a generation outgrows it), so every decode step has the same input shapes: in
  ``mode="graph"`` one ``mindspore.jit`` graph serves every step (plus one for the prefill), and a step costs
  the same at token 10 and token 8000. On CPU that step graph is compiled with operator fusion
  (``emu3.device.FusedJit``): its elementwise chains become single kernels (figures in the README).
  Cells, caches and graphs are kept on the model between calls, so a second ``generate`` with the same shapes
  compiles nothing (``generation_steps_kept`` shapes per role). The 2-D attention mask is built once at the
  cache length with the generated slots already set to 1 (the causal part of the mask hides the slots not yet
  written).
- Processors and sampling work on the host in numpy: the logits of one position are copied once per step (the
  only sync), and the processors Emu3 needs (CFG, the prefix constraint, top-k) are a few vectorised passes over
  the vocabulary — well below the cost of a forward step.

Processors take and return numpy arrays: ``processor(input_ids (B, T) int64, scores (B, V) float32)``;
MindSpore tensors are accepted and converted. ``PrefixConstrainedLogitsProcessor`` and
``UnbatchedClassifierFreeGuidanceLogitsProcessor`` have the semantics of the transformers classes of the same
names (which the original pipeline used). A processor may define ``prepare_generation(batch_size,
max_new_tokens, mode)``; ``generate`` calls it before the first step.
"""

import math
import time
import warnings

import numpy as np

import mindspore as ms
from mindspore import Tensor

from ..arrays import to_numpy
from .cache import DynamicCache
from .decoding import CachedDecoder, clear_generation_steps, initial_cache_length  # noqa: F401  (public)

# ---- small numpy helpers -----------------------------------------------------------------------------------------


def _numpy(x):
    return None if x is None else np.asarray(to_numpy(x))


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
        input_ids, scores = _numpy(input_ids), _numpy(scores)
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
        input_ids, scores = _numpy(input_ids), _numpy(scores)
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
        return _numpy(scores) / np.float32(self.temperature)


class TopKLogitsWarper(LogitsProcessor):
    """Keeps the scores >= the k-th largest (ties at the threshold survive, as in transformers)."""

    def __init__(self, top_k, filter_value=-math.inf, min_tokens_to_keep=1):
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a strictly positive integer, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        scores = _numpy(scores)
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
        scores = _numpy(scores)
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


# Default of generate(mode=None): graph mode for longer generations (see generate).
GRAPH_MODE_FROM_TOKENS = 32


def _checked_ids(ids, vocab_size, name):
    """Integer ids in [0, vocab_size), as int64; anything else is a ValueError naming what was wrong."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer token ids, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{name} must lie in [0, {vocab_size}) (the model's vocabulary), got values in "
                         f"[{ids.min()}, {ids.max()}]")
    return ids.astype(np.int64)


def _checked_mask(mask):
    """A left-padded 0/1 attention mask with at least one token per row."""
    mask = np.asarray(mask)
    if mask.dtype.kind not in "iub" or not np.isin(mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    mask = mask.astype(np.int64)
    rows = mask.reshape(-1, mask.shape[-1]) if mask.ndim else mask.reshape(1, 1)
    if not rows.any(axis=-1).all():
        raise ValueError("attention_mask has a row without any token (all zeros); drop that prompt")
    if (np.diff(rows, axis=-1) < 0).any():
        raise ValueError("attention_mask is right-padded (a 0 after a 1): generation appends after the last "
                         "position, so pad prompts on the left (Emu3Tokenizer(..., padding_side='left'))")
    return mask


def _fit_positions(prompt_len, max_new_tokens, max_positions):
    """Cap ``max_new_tokens`` at the model's positions (the original scripts pass 40960 and rely on eos), with a
    warning; a prompt that already fills them is an error."""
    if max_positions is None or prompt_len + max_new_tokens <= max_positions:
        return max_new_tokens
    if prompt_len >= max_positions:
        raise ValueError(f"the prompt has {prompt_len} tokens, as many as the model's max_position_embeddings "
                         f"({max_positions}): nothing can be generated; shorten the prompt")
    warnings.warn(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                  f"max_position_embeddings ({max_positions}); generating at most {max_positions - prompt_len} "
                  "new tokens", stacklevel=3)
    return max_positions - prompt_len


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
        self._given = (_numpy(unconditional_ids), _numpy(unconditional_attention_mask))
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
        input_ids = _numpy(input_ids)
        scores = log_softmax(_numpy(scores))
        if self.guidance_scale == 1:
            return scores
        unconditional = log_softmax(self.get_unconditional_logits(input_ids))
        return self.guidance_scale * (scores - unconditional) + unconditional


def guided_scores(logits, batch_size, guidance_scale):
    """Batched CFG: logits (2B, V) = conditional rows then unconditional rows -> guided scores (B, V)."""
    conditional = log_softmax(logits[:batch_size])
    unconditional = log_softmax(logits[batch_size:])
    return guidance_scale * (conditional - unconditional) + unconditional


# ---- the generation loop -----------------------------------------------------------------------------------------


def _token_list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [int(v) for v in value]
    return [int(value)]


def _left_pad(ids, mask, length, pad_token_id):
    """Left-pad (B, S) ids/mask to (B, length)."""
    extra = length - ids.shape[1]
    if extra == 0:
        return ids, mask
    pad_ids = np.full((ids.shape[0], extra), pad_token_id, dtype=ids.dtype)
    return (np.concatenate([pad_ids, ids], axis=1),
            np.concatenate([np.zeros((ids.shape[0], extra), mask.dtype), mask], axis=1))


class GenerationMixin:
    """``generate`` for a causal LM with the ``Emu3ForCausalLM`` interface (``config``, ``lm_head``)."""

    # Compiled decode steps (each with its KV cache) kept per role for reuse; see ``_cached_step``.
    generation_steps_kept = 1

    def generate(self, input_ids, attention_mask=None, logits_processor=None, max_new_tokens=20, do_sample=False,
                 top_k=None, top_p=None, temperature=1.0, eos_token_id=None, pad_token_id=None, mode=None,
                 progress=None, negative_prompt_ids=None, negative_prompt_attention_mask=None,
                 guidance_scale=None, seed=None, generator=None, cache_length=None, prefix_allowed_tokens_fn=None):
        """Greedy or sampled continuation of left-padded prompts; returns prompt + new tokens, int64 (B, S + n).

        - ``attention_mask`` (B, S): 1 = token, 0 = left padding (default all ones). Positions count real tokens.
        - ``logits_processor``: processors applied to the fp32 last-position logits, in order (e.g.
          ``UnbatchedClassifierFreeGuidanceLogitsProcessor``, ``PrefixConstrainedLogitsProcessor``).
        - ``prefix_allowed_tokens_fn(batch_id, input_ids) -> allowed ids``: as in transformers, shorthand for a
          ``PrefixConstrainedLogitsProcessor`` run before ``logits_processor`` (e.g. ``Emu3Processor
          .build_prefix_constrained_fn`` for text-to-image).
        - ``do_sample``: sample from softmax of the processed and warped scores (``temperature``, ``top_k``,
          ``top_p``; no top-k unless given) with ``generator`` (a ``numpy.random.Generator``, default one seeded
          by ``seed``); otherwise argmax.
        - ``eos_token_id`` (int or list; default the config's; [] disables): a row that emits one is finished and
          gets ``pad_token_id`` (default the config's, else the first eos) from then on; generation stops when
          every row is finished or after ``max_new_tokens``.
        - ``mode``: "graph" runs each forward as a compiled graph (one for the prefill, one for all decode steps);
          "pynative" runs the same cell op by op; default: graph for more than 32 new tokens (an image is
          thousands; compiling costs about as much as a few dozen op-by-op steps), else pynative.
        - Batched classifier-free guidance: ``negative_prompt_ids`` (B or 1, S') with
          ``negative_prompt_attention_mask`` and ``guidance_scale``: conditional and unconditional prompts are
          left-padded to a common length and run as one batch of 2B rows, one forward per step; the scores of row
          b are guidance_scale * (log_softmax(cond_b) - log_softmax(uncond_b)) + log_softmax(uncond_b), and the
          chosen token is fed to both halves. Unlike ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` (which
          attends to the negative prompts' padding and numbers their positions from the first slot), the
          unconditional rows here mask their padding and number positions from their first real token, i.e. each
          behaves like its unpadded prompt; with unpadded negative prompts both paths give the same scores.
        - ``progress``: a tqdm bar over decode steps (default: on for more than 32 new tokens, the compiled path).
        - ``cache_length``: initial KV-cache slots (default ``initial_cache_length``); the cache doubles when full.
        """
        config = self.config
        ids = _checked_ids(_numpy(input_ids), config.vocab_size, "input_ids")
        if ids.ndim == 1:
            ids = ids[None]
        batch_size, prompt_len = ids.shape
        mask = np.ones_like(ids) if attention_mask is None else _checked_mask(_numpy(attention_mask))
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask {mask.shape} does not match input_ids {ids.shape}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
        max_new_tokens = int(max_new_tokens)
        if guidance_scale is not None and not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        max_new_tokens = _fit_positions(prompt_len, max_new_tokens, config.max_position_embeddings)
        if mode is None:  # compiling costs about as much as a few dozen op-by-op steps
            mode = "graph" if max_new_tokens > GRAPH_MODE_FROM_TOKENS else "pynative"
        eos = _token_list(config.eos_token_id if eos_token_id is None else eos_token_id)
        if pad_token_id is None:
            pad_token_id = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else None)
        if eos and pad_token_id is None:
            raise ValueError("a pad_token_id is needed to fill finished rows")
        processors = LogitsProcessorList(logits_processor or [])
        if prefix_allowed_tokens_fn is not None:
            processors.insert(0, PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, num_beams=1))
        warpers = sampling_warpers(temperature, top_k, top_p) if do_sample else LogitsProcessorList()
        rng = (generator or np.random.default_rng(seed)) if do_sample else None
        cfg = negative_prompt_ids is not None and guidance_scale is not None and guidance_scale != 1
        if guidance_scale is not None and guidance_scale != 1 and negative_prompt_ids is None:
            raise ValueError("batched classifier-free guidance needs negative_prompt_ids")

        model_ids, model_mask = ids, mask
        if cfg:
            neg = _numpy(negative_prompt_ids).astype(np.int64)
            neg = neg[None] if neg.ndim == 1 else neg
            neg_mask = (np.ones_like(neg) if negative_prompt_attention_mask is None
                        else _numpy(negative_prompt_attention_mask).astype(np.int64))
            if neg.shape[0] == 1 and batch_size > 1:
                neg, neg_mask = np.repeat(neg, batch_size, 0), np.repeat(neg_mask, batch_size, 0)
            if neg.shape[0] != batch_size or neg_mask.shape != neg.shape:
                raise ValueError(f"negative prompts {neg.shape} / mask {neg_mask.shape} do not fit a batch of "
                                 f"{batch_size}")
            length = max(prompt_len, neg.shape[1])
            filler = pad_token_id if pad_token_id is not None else 0
            cond_ids, cond_mask = _left_pad(ids, mask, length, filler)
            neg, neg_mask = _left_pad(neg, neg_mask, length, filler)
            model_ids = np.concatenate([cond_ids, neg], axis=0)
            model_mask = np.concatenate([cond_mask, neg_mask], axis=0)

        cache_length = cache_length or initial_cache_length(config, model_ids.shape[1], max_new_tokens)
        decoder = CachedDecoder(self, model_mask, cache_length, mode)
        processors.prepare_generation(batch_size, max_new_tokens, mode)
        started = time.perf_counter()
        logits = decoder.prefill(model_ids)
        prefilled = time.perf_counter()

        sequences = np.empty((batch_size, prompt_len + max_new_tokens), np.int64)
        sequences[:, :prompt_len] = ids
        unfinished = np.ones(batch_size, dtype=bool)
        if progress is None:
            progress = max_new_tokens > GRAPH_MODE_FROM_TOKENS
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_new_tokens, desc="generate", unit="tok")
        produced = 0
        step_ends = [prefilled]
        for step in range(max_new_tokens):
            current = sequences[:, :prompt_len + step]
            if cfg:
                scores = guided_scores(logits, batch_size, guidance_scale)
            elif guidance_scale == 1 and negative_prompt_ids is not None:
                scores = log_softmax(logits)  # what CFG with scale 1 returns
            else:
                scores = logits
            scores = processors(current, scores)
            if do_sample:
                scores = warpers(current, scores)
                tokens = _sample(scores, rng)
            else:
                tokens = np.argmax(scores, axis=-1)
            if eos:
                tokens = np.where(unfinished, tokens, pad_token_id)
                unfinished &= ~np.isin(tokens, eos)
            sequences[:, prompt_len + step] = tokens
            produced = step + 1
            if bar is not None:
                bar.update(1)
            if not unfinished.any() or produced == max_new_tokens:
                break
            logits = decoder.step(np.concatenate([tokens, tokens]) if cfg else tokens)
            step_ends.append(time.perf_counter())
        if bar is not None:
            bar.close()
        decode_seconds = time.perf_counter() - prefilled
        # What the original scripts print as "average speed s/step"; the first call includes graph compilation.
        object.__setattr__(self, "generation_stats", {  # plain attribute: never part of a compiled graph
            "prompt_tokens": prompt_len, "new_tokens": produced, "prefill_seconds": prefilled - started,
            "decode_seconds": decode_seconds, "seconds_per_token": decode_seconds / max(produced - 1, 1),
            # Each token's own time (processors + sampling + one decode step): its median is the steady per-token
            # cost, without the one-off slow first steps after a prefill that weigh on a short run's mean.
            "step_seconds": np.diff(step_ends).tolist()})
        return Tensor(sequences[:, :prompt_len + produced], ms.int64)

    def clear_generation_cache(self):
        """Drop the KV caches and compiled steps ``generate`` keeps for reuse (they hold the cache memory)."""
        clear_generation_steps(self)


def _sample(scores, rng):
    """One draw per row from softmax(scores) (inverse CDF in float64; -inf scores have probability 0)."""
    probs = softmax(scores.astype(np.float64))
    cumulative = np.cumsum(probs, axis=-1)
    draws = rng.random(scores.shape[0]) * cumulative[:, -1]
    # The first id whose cumulative probability exceeds the draw: zero-probability ids are never chosen.
    return np.array([np.searchsorted(row, u, side="right") for row, u in zip(cumulative, draws)], dtype=np.int64)
