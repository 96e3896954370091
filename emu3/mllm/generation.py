"""Autoregressive generation for the Emu3 LLM: ``GenerationMixin.generate`` = checked set-up, then the loop.

The loop follows HF transformers' greedy/sampling search (the original Emu3 used ``model.generate`` from
transformers 4.44), step by step:

    logits of the last position (fp32) -> logits processors -> warpers (temperature, top-k, top-p)
    -> softmax -> multinomial, or argmax when greedy -> finished rows get pad -> append -> eos check

Design for speed (see ``GenerationMixin.generate``):

- The model runs over a ``StaticCache`` sized prompt + max_new_tokens (capped at max_position_embeddings up
  front, doubled if a generation outgrows it), so every decode step has the same input shapes: in
  ``mode="graph"`` one ``mindspore.jit`` graph serves every step (plus one for the prefill), and a step costs
  the same at token 10 and token 8000. On CPU that step graph is compiled with operator fusion
  (``emu3.device.FusedJit``): its elementwise chains become single kernels (figures in docs/design.md).
  Cells, caches and graphs are kept on the model between calls, so a second ``generate`` with the same shapes
  compiles nothing (``generation_steps_kept`` shapes per role). The 2-D attention mask is built once at the
  cache length with the generated slots already set to 1 (the causal part of the mask hides the slots not yet
  written).
- Processors and sampling work on the host in numpy: the logits of one position are copied once per step (the
  only sync), and the processors Emu3 needs (CFG, the prefix constraint, top-k) are a few vectorised passes over
  the vocabulary — well below the cost of a forward step.

The processors and warpers live in ``emu3.mllm.logits_process`` (re-exported here); the compiled step, its KV
cache and the reuse of both across calls in ``emu3.mllm.decoding``. Imports point one way:
generation -> logits_process -> decoding -> cache.
"""

import dataclasses
import math
import time
import warnings

import numpy as np

import mindspore as ms
from mindspore import Tensor

from ..arrays import as_array
from .decoding import CachedDecoder, clear_generation_steps, initial_cache_length
from .logits_process import (LogitsProcessor, LogitsProcessorList, PrefixConstrainedLogitsProcessor,
                             TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
                             UnbatchedClassifierFreeGuidanceLogitsProcessor, guided_scores, log_softmax,
                             sampling_warpers, softmax)


__all__ = ["GenerationMixin", "GenerationSetup", "setup_generation", "GRAPH_MODE_FROM_TOKENS", "CachedDecoder",
           "clear_generation_steps", "initial_cache_length", "LogitsProcessor", "LogitsProcessorList",
           "PrefixConstrainedLogitsProcessor", "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
           "UnbatchedClassifierFreeGuidanceLogitsProcessor", "guided_scores", "log_softmax", "sampling_warpers",
           "softmax"]


# ---- checks on what generate is given ----------------------------------------------------------------------------


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
                  "new tokens", stacklevel=4)  # generate -> setup_generation -> here
    return max_positions - prompt_len



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


# ---- set-up: everything decided before the first forward ---------------------------------------------------------


@dataclasses.dataclass
class GenerationSetup:
    """A checked generation request: the prompts, the rows the model runs and how each token is chosen."""

    ids: np.ndarray  # (B, S) the prompts, as returned at the head of the sequences
    model_ids: np.ndarray  # rows the model runs: the prompts, then (batched CFG) the negative prompts
    model_mask: np.ndarray
    max_new_tokens: int
    mode: str  # "graph" or "pynative"
    eos: list
    pad_token_id: object  # int, or None when no eos is set
    processors: LogitsProcessorList
    warpers: LogitsProcessorList  # empty unless sampling
    rng: object  # numpy Generator when sampling, else None
    guidance_scale: object  # batched CFG's scale, or None
    log_scores: bool  # scale-1 CFG: the scores are the conditional log-softmax, as transformers returns

    @property
    def batch_size(self):
        return self.ids.shape[0]

    @property
    def batched_guidance(self):
        return self.guidance_scale is not None

    def choose(self, logits, sequences):
        """Next token of each prompt from the last-position logits (B or 2B rows, V) and the sequences so far."""
        if self.batched_guidance:
            scores = guided_scores(logits, self.batch_size, self.guidance_scale)
        else:
            scores = log_softmax(logits) if self.log_scores else logits
        scores = self.processors(sequences, scores)
        if self.rng is None:
            return np.argmax(scores, axis=-1)
        return _sample(self.warpers(sequences, scores), self.rng)


def setup_generation(config, input_ids, attention_mask=None, logits_processor=None, max_new_tokens=20,
                     do_sample=False, top_k=None, top_p=None, temperature=1.0, eos_token_id=None, pad_token_id=None,
                     mode=None, negative_prompt_ids=None, negative_prompt_attention_mask=None, guidance_scale=None,
                     seed=None, generator=None, prefix_allowed_tokens_fn=None):
    """Check ``generate``'s arguments against ``config`` and decide everything the loop needs (no model runs)."""
    ids = _checked_ids(as_array(input_ids), config.vocab_size, "input_ids")
    if ids.ndim == 1:
        ids = ids[None]
    batch_size, prompt_len = ids.shape
    mask = np.ones_like(ids) if attention_mask is None else _checked_mask(as_array(attention_mask))
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {mask.shape} does not match input_ids {ids.shape}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    if guidance_scale is not None and not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    guided = guidance_scale is not None and guidance_scale != 1
    if guided and negative_prompt_ids is None:
        raise ValueError("batched classifier-free guidance needs negative_prompt_ids")
    max_new_tokens = _fit_positions(prompt_len, int(max_new_tokens), config.max_position_embeddings)
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

    model_ids, model_mask = ids, mask
    if guided:  # one batch of 2B rows: the prompts, then the negative prompts, left-padded to one length
        neg = as_array(negative_prompt_ids).astype(np.int64)
        neg = neg[None] if neg.ndim == 1 else neg
        neg_mask = (np.ones_like(neg) if negative_prompt_attention_mask is None
                    else as_array(negative_prompt_attention_mask).astype(np.int64))
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
    return GenerationSetup(ids=ids, model_ids=model_ids, model_mask=model_mask, max_new_tokens=max_new_tokens,
                           mode=mode, eos=eos, pad_token_id=pad_token_id, processors=processors, warpers=warpers,
                           rng=rng, guidance_scale=guidance_scale if guided else None,
                           log_scores=guidance_scale == 1 and negative_prompt_ids is not None)


# ---- the loop ----------------------------------------------------------------------------------------------------


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
        setup = setup_generation(
            self.config, input_ids, attention_mask, logits_processor, max_new_tokens, do_sample, top_k, top_p,
            temperature, eos_token_id, pad_token_id, mode, negative_prompt_ids, negative_prompt_attention_mask,
            guidance_scale, seed, generator, prefix_allowed_tokens_fn)
        if progress is None:
            progress = setup.max_new_tokens > GRAPH_MODE_FROM_TOKENS
        return self._generate(setup, cache_length, progress)

    def _generate(self, setup, cache_length, progress):
        """The loop: prefill, then choose a token, append it, feed it back, until eos everywhere or the budget."""
        batch_size, prompt_len = setup.ids.shape
        max_new_tokens = setup.max_new_tokens
        cache_length = cache_length or initial_cache_length(self.config, setup.model_ids.shape[1], max_new_tokens)
        decoder = CachedDecoder(self, setup.model_mask, cache_length, setup.mode)
        setup.processors.prepare_generation(batch_size, max_new_tokens, setup.mode)
        started = time.perf_counter()
        logits = decoder.prefill(setup.model_ids)
        prefilled = time.perf_counter()

        sequences = np.empty((batch_size, prompt_len + max_new_tokens), np.int64)
        sequences[:, :prompt_len] = setup.ids
        unfinished = np.ones(batch_size, dtype=bool)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_new_tokens, desc="generate", unit="tok")
        produced = 0
        step_ends = [prefilled]
        for step in range(max_new_tokens):
            tokens = setup.choose(logits, sequences[:, :prompt_len + step])
            if setup.eos:  # finished rows get pad from then on
                tokens = np.where(unfinished, tokens, setup.pad_token_id)
                unfinished &= ~np.isin(tokens, setup.eos)
            sequences[:, prompt_len + step] = tokens
            produced = step + 1
            if bar is not None:
                bar.update(1)
            if not unfinished.any() or produced == max_new_tokens:
                break
            logits = decoder.step(np.concatenate([tokens, tokens]) if setup.batched_guidance else tokens)
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
