"""Training sequences, built exactly as the original builds them (docs §6.1, §6.3), and their label masks.

- t2i:  bos + caption + boi + "{h}*{w}" + img + rows of visual tokens joined by eol + eol + eof + eoi
        (no eos, as the original). The caption becomes "" with probability ``null_prompt_prob`` (the CFG branch).
- vqa:  bos + chat_template(image_prompt, question) + response + eos, where image_prompt is the same image block
        as above: the prompt ``Emu3Processor`` builds in mode "U", followed by the answer.
- text: the same without the image (image_prompt = "").

Which tokens are supervised (``labels`` != -100, aligned with ``input_ids`` as in transformers):
"vision" = the visual tokens only (``--apply_loss_on_only_vision``), "response" = the response and its eos
(``--apply_loss_on_only_text``), "task" = each sample its own task's target: visual tokens of a T2I sample, the
response of a VQA/text sample (both flags True: one run on T2I and VQA data together, as the tiny world trains),
"all" = every real token. Padding is never supervised.

Ids are assembled piece by piece (text segments tokenised, special and visual ids placed directly), which equals
tokenising the whole string because the tokenizer splits text at every special token; ``tests/train`` checks it.
"""

import numpy as np

from emu3.mllm.processing_emu3 import DEFAULT_CHAT_TEMPLATE, DEFAULT_PREFIX_TEMPLATE
from emu3.mllm.special_tokens import visual_token

IGNORE_INDEX = -100
SUPERVISION = ("vision", "response", "task", "all")


def supervision_from_flags(apply_loss_on_only_vision, apply_loss_on_only_text):
    if apply_loss_on_only_vision and apply_loss_on_only_text:
        return "task"  # each sample supervised on its own target: mixed T2I + VQA data
    return "vision" if apply_loss_on_only_vision else "response" if apply_loss_on_only_text else "all"


def check_supervision(supervision, task):
    """Raise ValueError when ``supervision`` leaves nothing to learn in samples of ``task``."""
    if task == "t2i" and supervision == "response":
        raise ValueError("a text-to-image sample has no response to supervise with --apply_loss_on_only_text; "
                         "use --apply_loss_on_only_vision True (or both False to supervise every token)")
    if task != "t2i" and supervision == "vision":
        raise ValueError("a VQA/text sample has no visual tokens to supervise with --apply_loss_on_only_vision; "
                         "pass --apply_loss_on_only_vision False --apply_loss_on_only_text True")


class SequenceBuilder:
    """Builds (input_ids, labels) of one sample from a shard record; padding is added by ``padded``."""

    def __init__(self, tokenizer, supervision="vision", chat_template=DEFAULT_CHAT_TEMPLATE,
                 prefix_template=DEFAULT_PREFIX_TEMPLATE):
        if supervision not in SUPERVISION:
            raise ValueError(f"supervision must be one of {SUPERVISION}, got {supervision!r}")
        self.tokenizer = tokenizer
        self.supervision = supervision
        self.chat_before, self.chat_middle, self.chat_after = _split_chat_template(chat_template)
        self.prefix_template = prefix_template
        ids = tokenizer.convert_tokens_to_ids
        self.bos, self.eos, self.pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.boi, self.eoi, self.img = tokenizer.boi_token_id, tokenizer.eoi_token_id, tokenizer.img_token_id
        self.eol, self.eof = tokenizer.eol_token_id, tokenizer.eof_token_id
        self.first_visual = ids(visual_token(0))
        self.end_visual = len(tokenizer)  # the visual tokens are the last specials of the vocabulary

    def encode(self, text):
        return self.tokenizer.encode(text) if text else []

    def image_ids(self, grid):
        """boi + "{h}*{w}" + img + rows joined by eol + eol + eof + eoi."""
        grid = np.asarray(grid)
        h, w = grid.shape
        rows = np.concatenate([grid.astype(np.int64) + self.first_visual, np.full((h, 1), self.eol)], axis=1)
        return ([self.boi] + self.encode(self.prefix_template.format(H=h, W=w)) + [self.img]
                + rows.reshape(-1).tolist() + [self.eof, self.eoi])

    def check_task(self, task):
        check_supervision(self.supervision, task)

    def t2i(self, caption, grid):
        self.check_task("t2i")
        ids = [self.bos] + self.encode(caption) + self.image_ids(grid)
        if self.supervision == "all":
            return ids, list(ids)  # "vision" and "task" both supervise the visual tokens of a T2I sample
        ids_array = np.asarray(ids)
        visual = (ids_array >= self.first_visual) & (ids_array < self.end_visual)
        return ids, np.where(visual, ids_array, IGNORE_INDEX).tolist()

    def chat(self, question, response, grid=None):
        """vqa (with ``grid``) or text-only sample: the mode-"U" prompt, then response + eos."""
        self.check_task("vqa")
        if grid is None:
            prompt = self.encode(self.chat_before + self.chat_middle + question + self.chat_after)
        else:
            prompt = (self.encode(self.chat_before) + self.image_ids(grid)
                      + self.encode(self.chat_middle + question + self.chat_after))
        prompt = [self.bos] + prompt
        answer = self.encode(response) + [self.eos]
        prompt_labels = [IGNORE_INDEX] * len(prompt) if self.supervision in ("response", "task") else list(prompt)
        labels = prompt_labels + answer
        return prompt + answer, labels

    def build(self, record, null_prompt=False):
        grid = None
        if record["height"] > 0:
            grid = np.asarray(record["image"]).reshape(int(record["height"]), int(record["width"]))
        if record["task"] == "t2i":
            return self.t2i("" if null_prompt else record["text"], grid)
        return self.chat(record["text"], record["response"], grid)

    def length(self, record):
        """Tokens of a sample without building its image ids (for the index pass over the whole dataset)."""
        h, w = int(record["height"]), int(record["width"])
        image = 0 if h == 0 else 1 + len(self.encode(self.prefix_template.format(H=h, W=w))) + 1 + h * (w + 1) + 2
        if record["task"] == "t2i":
            return 1 + len(self.encode(record["text"])) + image
        if h == 0:
            prompt = len(self.encode(self.chat_before + self.chat_middle + record["text"] + self.chat_after))
        else:
            prompt = len(self.encode(self.chat_before)) + len(self.encode(self.chat_middle + record["text"]
                                                                         + self.chat_after))
        return 1 + prompt + image + len(self.encode(record["response"])) + 1

    def padded(self, ids, labels, max_length):
        """Right padding to ``max_length``: (input_ids, attention_mask, labels) int32 arrays."""
        n = len(ids)
        if n > max_length:
            raise ValueError(f"sequence of {n} tokens is longer than max_length {max_length}")
        input_ids = np.full(max_length, self.pad, np.int32)
        input_ids[:n] = ids
        mask = np.zeros(max_length, np.int32)
        mask[:n] = 1
        out_labels = np.full(max_length, IGNORE_INDEX, np.int32)
        out_labels[:n] = labels
        return input_ids, mask, out_labels


def _split_chat_template(template):
    """"...{image_prompt}...{text_prompt}..." -> the three literal pieces around the two fields."""
    if template.count("{image_prompt}") != 1 or template.count("{text_prompt}") != 1 \
            or template.index("{image_prompt}") > template.index("{text_prompt}"):
        raise ValueError(f"chat_template must contain {{image_prompt}} then {{text_prompt}} once each, got {template!r}")
    before, rest = template.split("{image_prompt}")
    middle, after = rest.split("{text_prompt}")
    return before, middle, after

