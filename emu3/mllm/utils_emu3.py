"""Constrained decoding for text-to-image generation: the allowed next tokens at every step of an image.

After the prompt's ``<|image token|>`` (img_token) the model must emit, for an h x w token grid,
h rows of (w visual tokens + eol), then eof, eoi, eos — h * (w + 1) + 3 tokens — and only pad after that.
``Emu3PrefixConstrainedLogitsHelper`` answers "which ids may come next?" for one batch row, in the form
``PrefixConstrainedLogitsProcessor`` expects (``fn(batch_id, sequence) -> allowed ids``).
"""

import numpy as np

from ..arrays import to_numpy


def _per_row(value):
    """int, sequence, numpy array or framework tensor -> 1-D int64 numpy array (one entry, or one per batch row)."""
    return np.asarray(to_numpy(value), dtype=np.int64).reshape(-1)


def _as_ids(sequence):
    return np.asarray(to_numpy(sequence))


class Emu3PrefixConstrainedLogitsHelper:
    """``fn(batch_id, sequence)`` -> allowed next ids (int64 array) for a grid of ``height`` x ``width`` tokens.

    ``height`` / ``width``: an int or a 1-D array/tensor with one value, or one value per batch row.
    ``visual_tokens``: the ids of the visual tokens (all 32,768 in the released vocabulary).

    Semantics (the original's, including its order of checks): the first call for a batch id caches the index of
    the first ``img_token`` in that row; then with offset = len(sequence) - that index (1 for the first generated
    token), offset % (w + 1) == 0 -> eol; offset == (w + 1) * h + 1 -> eof; + 2 -> eoi; + 3 -> eos; beyond ->
    pad; otherwise any visual token. Because the eol test comes first, an offset past the end that is a multiple
    of w + 1 still yields eol (unreachable when generation stops at eos).

    The cached positions belong to one generation: call ``reset()`` (or build a new helper) for the next prompts.
    The returned arrays are shared and must not be modified.
    """

    def __init__(self, height, width, img_token, eoi_token, eos_token, eol_token, eof_token, pad_token,
                 visual_tokens):
        self.height = _per_row(height)
        self.width = _per_row(width)
        self.img_token = int(img_token)
        # Built once: the visual-token list alone is 32,768 ids.
        self.visual_tokens = np.asarray(_per_row(visual_tokens))
        self.visual_tokens.setflags(write=False)

        def only(token):
            ids = np.array([int(token)], dtype=np.int64)
            ids.setflags(write=False)
            return ids

        self.eol, self.eof, self.eoi = only(eol_token), only(eof_token), only(eoi_token)
        self.eos, self.pad = only(eos_token), only(pad_token)
        self.offset_cache = {}

    def reset(self):
        self.offset_cache = {}

    def image_start(self, batch_id, sequence):
        """Index of the first img_token in the row (cached per batch id on first use)."""
        if batch_id not in self.offset_cache:
            hits = np.flatnonzero(_as_ids(sequence) == self.img_token)
            if hits.size == 0:
                raise ValueError(f"batch row {batch_id} has no image token ({self.img_token}) to constrain after")
            self.offset_cache[batch_id] = int(hits[0])
        return self.offset_cache[batch_id]

    def grid(self, batch_id):
        """(height, width) of the token grid for this batch row."""
        h = self.height[batch_id] if self.height.shape[0] > 1 else self.height[0]
        w = self.width[batch_id] if self.width.shape[0] > 1 else self.width[0]
        return int(h), int(w)

    def __call__(self, batch_id, sequence):
        start = self.image_start(batch_id, sequence)
        height, width = self.grid(batch_id)
        offset = len(sequence) - start
        end = (width + 1) * height
        if offset % (width + 1) == 0:
            return self.eol
        if offset == end + 1:
            return self.eof
        if offset == end + 2:
            return self.eoi
        if offset == end + 3:
            return self.eos
        if offset > end + 3:
            return self.pad
        return self.visual_tokens


def image_generation_kwargs(model, processor, positive, negative, guidance_scale, cfg="batched"):
    """The ``model.generate`` keywords of text-to-image for ``positive`` / ``negative`` inputs from
    ``processor.build_generation_inputs``: the prefix constraint for their token grid, the tokens one image needs,
    and classifier-free guidance against the negative prompts — "batched" (conditional and unconditional rows in
    one batch, one forward per step) or "unbatched" (the original pipeline's
    ``UnbatchedClassifierFreeGuidanceLogitsProcessor``, a second forward per step). Sampling settings are the
    caller's."""
    from .logits_process import PrefixConstrainedLogitsProcessor, UnbatchedClassifierFreeGuidanceLogitsProcessor
    from .processing_emu3 import image_token_budget

    if cfg not in ("batched", "unbatched"):
        raise ValueError(f"cfg must be 'batched' or 'unbatched', got {cfg!r}")
    sizes = np.asarray(to_numpy(positive["image_size"]))
    constrained = processor.build_prefix_constrained_fn(sizes[:, 0], sizes[:, 1])
    processors = [PrefixConstrainedLogitsProcessor(constrained, num_beams=1)]
    kwargs = dict(attention_mask=positive["attention_mask"], max_new_tokens=image_token_budget(*sizes[0]))
    if cfg == "unbatched":
        processors.insert(0, UnbatchedClassifierFreeGuidanceLogitsProcessor(
            guidance_scale, model, unconditional_ids=negative["input_ids"]))
    else:
        kwargs.update(negative_prompt_ids=negative["input_ids"],
                      negative_prompt_attention_mask=negative["attention_mask"], guidance_scale=guidance_scale)
    return dict(kwargs, logits_processor=processors)
