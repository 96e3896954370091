"""Emu3 processor: text (+ images) -> prompt ids, and generated ids -> text chunks and PIL images.

It joins the three parts of the text/vision interface:

- ``image_processor`` (``Emu3VisionVQImageProcessor``): PIL images <-> pixel values in [-1, 1];
- ``vision_tokenizer`` (``Emu3VisionVQModel``): pixel values <-> (h, w) grids of codebook indices;
- ``tokenizer`` (``Emu3Tokenizer``): prompt strings <-> ids; visual token k is the string ``<|visual token k|>``.

Prompt layouts (docs §4.1), with bos/boi/eoi/img/eol/eof the special tokens of ``special_tokens.py``:

- mode "G" (text -> image): ``bos + text + boi + "{h}*{w}" + img``; the model then generates h rows of
  (w visual tokens + eol), then eof, eoi, eos: ``h * (w + 1) + 3`` new tokens (see ``image_token_budget``);
- mode "U" (image + text -> text): ``bos + chat_template`` with ``image_prompt = boi + "{h}*{w}" + img + rows + eol +
  eof + eoi`` where rows are the image's visual-token rows joined by eol.

(h, w) is the size of the token grid (pixels / spatial factor), not of the image.
"""

import math
import os
import re
from typing import List, Optional, Sequence, Union

import numpy as np

from ..arrays import batches_by_shape, to_numpy
from . import special_tokens as st
from .tokenization_emu3 import BatchEncoding

DEFAULT_CHAT_TEMPLATE = "You are a helpful assistant. USER: {image_prompt}{text_prompt}. ASSISTANT:"
DEFAULT_PREFIX_TEMPLATE = "{H}*{W}"
DEFAULT_VISUAL_TEMPLATE = (st.VISUAL_TOKEN_TEMPLATE, st.VISUAL_TOKEN_PATTERN)
DEFAULT_IMAGE_AREA = 720 * 720  # Emu3-Gen's image_area; Stage1 uses 512 * 512
DEFAULT_SPATIAL_FACTOR = 8  # the released vision tokenizer: 2 ** (len(ch_mult) - 1) with ch_mult [1, 2, 2, 4]
MODES = ("G", "U")


# ---------------------------------------------------------------------------------------------------------------------
# Sizes and budgets (pure Python; usable without any model)
# ---------------------------------------------------------------------------------------------------------------------
def parse_ratio(ratio) -> tuple:
    """``"W:H"`` -> (w, h) as positive finite floats; anything else is a ValueError that says what is expected."""
    hint = 'the aspect ratio must be a string "W:H" of two positive numbers, e.g. "1:1", "16:9" or "4:3"'
    if not isinstance(ratio, str):
        raise ValueError(f"{hint}; got {ratio!r} of type {type(ratio).__name__}")
    parts = ratio.split(":")
    if len(parts) != 2:
        raise ValueError(f"{hint}; got {ratio!r} (separate width and height with ':')")
    try:
        w, h = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"{hint}; got {ratio!r}, which is not numeric") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise ValueError(f"{hint}; got {ratio!r} (both sides must be > 0)")
    return w, h


def calculate_generate_size(ratio: str, image_area: int, spatial_factor: int = DEFAULT_SPATIAL_FACTOR) -> tuple:
    """The token grid (h, w) of an image of aspect ``ratio`` ("W:H") and about ``image_area`` pixels.

    s = sqrt(image_area / (W * H)); h = round(H * s / factor), w = round(W * s / factor) with Python's round, e.g.
    at 518400 (720²): "1:1" -> (90, 90), "16:9" -> (68, 120), "4:3" -> (78, 104); at 262144 (512²): "1:1" -> (64, 64).
    """
    w, h = parse_ratio(ratio)
    if isinstance(image_area, bool) or not isinstance(image_area, (int, float, np.integer, np.floating)) \
            or not image_area > 0:
        raise ValueError(f"image_area must be a positive number of pixels (e.g. 518400 = 720*720), got {image_area!r}")
    scale = math.sqrt(image_area / (h * w))
    th, tw = int(round(h * scale / spatial_factor)), int(round(w * scale / spatial_factor))
    if th < 1 or tw < 1:
        # the smallest area that gives at least one token on the short side
        need = math.ceil((0.5 * spatial_factor / min(w, h)) ** 2 * h * w)
        while min(round(h * math.sqrt(need / (h * w)) / spatial_factor),
                  round(w * math.sqrt(need / (h * w)) / spatial_factor)) < 1:
            need += 1
        raise ValueError(
            f"image_area={image_area} with ratio {ratio!r} gives a {th}x{tw} token grid (spatial factor "
            f"{spatial_factor}): the image would have no tokens along one side. Use image_area >= {need} or a ratio "
            f"closer to 1:1."
        )
    return th, tw


def image_token_budget(height: int, width: int) -> int:
    """Tokens generated for an (height x width) grid: height rows of (width + eol), then eof, eoi, eos."""
    return int(height) * (int(width) + 1) + 3


def _rows(values, n: int, name: str) -> list:
    if values is None or isinstance(values, (int, np.integer)):
        return [values or 0] * n
    values = np.asarray(values).reshape(-1).tolist()
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values for a batch of {n} prompts; give one per prompt or one")
    return values


def _as_batch(seqs) -> list:
    """One sequence or a batch (lists, numpy, mindspore) -> a list of 1-D sequences."""
    seqs = to_numpy(seqs)
    if isinstance(seqs, np.ndarray):
        return [seqs] if seqs.ndim == 1 else list(seqs.reshape(seqs.shape[0], -1))
    seqs = list(seqs)
    return [seqs] if not seqs or isinstance(seqs[0], (int, np.integer)) else seqs


def check_prompt_budget(input_ids, height=0, width=0, max_position_embeddings=None, attention_mask=None):
    """Raise ValueError if a prompt plus the image it must generate does not fit in ``max_position_embeddings``.

    ``input_ids``: one sequence or a batch (lists, numpy or mindspore); padding is not counted when
    ``attention_mask`` is given. ``height``/``width``: the token grid to generate, per prompt or one for all
    (0 for understanding prompts, whose image is already inside the prompt). Does nothing without a limit.
    """
    if max_position_embeddings is None:
        return
    if attention_mask is not None:
        lengths = [int(np.sum(row)) for row in _as_batch(attention_mask)]
    else:
        lengths = [len(row) for row in _as_batch(input_ids)]
    heights, widths = _rows(height, len(lengths), "height"), _rows(width, len(lengths), "width")
    for i, (n, h, w) in enumerate(zip(lengths, heights, widths)):
        need = image_token_budget(h, w) if h and w else 0
        if n + need > max_position_embeddings:
            what = f" plus {need} tokens for the {h}x{w} image it generates" if need else ""
            fix = ("; shorten the prompt or use a smaller image_area" if need
                   else "; shorten the text or use a smaller image (fewer visual tokens)")
            raise ValueError(
                f"prompt {i} has {n} tokens{what} = {n + need} positions, more than the model's "
                f"max_position_embeddings = {max_position_embeddings}{fix}."
            )


# ---------------------------------------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------------------------------------
class Emu3Processor:
    """Builds Emu3 prompts (``__call__``) and turns generated ids back into text and images (``decode``).

    Args:
        image_processor: an ``Emu3VisionVQImageProcessor`` (needed for images: mode "U" and image decoding).
        vision_tokenizer: an ``Emu3VisionVQModel`` (needed for images); its spatial factor sets the grid size.
        tokenizer: an ``Emu3Tokenizer``; inference uses ``padding_side="left"``.
        chat_template: the mode "U" template, with ``{image_prompt}`` and ``{text_prompt}``.
        prefix_template: the grid-size header, with ``{H}`` and ``{W}`` in tokens.
        visual_template: (format string of one visual token, regex with the index as group 1).
        max_position_embeddings: when given (or read from ``model_config``), prompts that do not fit with their
            image budget are rejected by ``__call__`` (see ``check_prompt_budget``).
    """

    def __init__(
        self,
        image_processor=None,
        vision_tokenizer=None,
        tokenizer=None,
        chat_template: str = DEFAULT_CHAT_TEMPLATE,
        prefix_template: str = DEFAULT_PREFIX_TEMPLATE,
        visual_template=DEFAULT_VISUAL_TEMPLATE,
        max_position_embeddings: Optional[int] = None,
        model_config=None,
    ):
        if tokenizer is None:
            raise ValueError("Emu3Processor needs a tokenizer (Emu3Tokenizer.from_pretrained(folder))")
        self.image_processor = image_processor
        self.vision_tokenizer = vision_tokenizer
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.prefix_template = prefix_template
        self.visual_template = visual_template
        self._visual_re = re.compile(visual_template[1])
        vocab = getattr(model_config, "vocab_size", None)
        if vocab is not None and len(tokenizer) != vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab}: they do "
                             "not belong together (a tokenizer file missing or adding lines shifts ids)")
        if max_position_embeddings is None and model_config is not None:
            max_position_embeddings = getattr(model_config, "max_position_embeddings", None)
        self.max_position_embeddings = max_position_embeddings
        if vision_tokenizer is not None:
            self.vis_tok_spatial_factor = int(vision_tokenizer.config.spatial_factor)
        elif image_processor is not None:
            self.vis_tok_spatial_factor = int(image_processor.spatial_factor)
        else:
            self.vis_tok_spatial_factor = DEFAULT_SPATIAL_FACTOR
        # Split a decoded document into image chunks (kept as separators) and text.
        self._image_chunk_re = re.compile(f"({re.escape(tokenizer.boi_token)}.*?{re.escape(tokenizer.eoi_token)})",
                                          re.DOTALL)

    @classmethod
    def from_pretrained(cls, vision_tokenizer_path, tokenizer_path, dtype=None, padding_side="left", **kwargs):
        """Load the vision tokenizer + its image processor and the text tokenizer from local folders.
        ``kwargs`` go to the constructor (e.g. ``max_position_embeddings`` or ``model_config``)."""
        from ..tokenizer import Emu3VisionVQImageProcessor, Emu3VisionVQModel
        from .tokenization_emu3 import Emu3Tokenizer

        tokenizer = Emu3Tokenizer.from_pretrained(tokenizer_path, padding_side=padding_side)
        vision_tokenizer = Emu3VisionVQModel.from_pretrained(vision_tokenizer_path, dtype=dtype)
        if not os.path.isfile(os.path.join(vision_tokenizer_path, "preprocessor_config.json")):
            raise FileNotFoundError(f"no preprocessor_config.json in {vision_tokenizer_path!r}; pass the folder of "
                                    "Emu3-VisionTokenizer (it holds config.json, the weights and the image processor)")
        image_processor = Emu3VisionVQImageProcessor.from_pretrained(vision_tokenizer_path)
        return cls(image_processor, vision_tokenizer, tokenizer, **kwargs)

    # ---- sizes -------------------------------------------------------------------------------------------------------
    def calculate_generate_size(self, ratio: str = "1:1", image_area: int = DEFAULT_IMAGE_AREA) -> tuple:
        return calculate_generate_size(ratio, image_area, self.vis_tok_spatial_factor)

    def check_prompt_budget(self, input_ids, height=0, width=0, max_position_embeddings=None, attention_mask=None):
        limit = max_position_embeddings if max_position_embeddings is not None else self.max_position_embeddings
        check_prompt_budget(input_ids, height, width, limit, attention_mask)

    # ---- prompts -----------------------------------------------------------------------------------------------------
    def __call__(
        self,
        text,
        image=None,
        *,
        mode: str = "G",
        ratio: Union[str, Sequence[str]] = "1:1",
        image_area: int = DEFAULT_IMAGE_AREA,
        padding_image: bool = False,
        max_position_embeddings: Optional[int] = None,
        **tokenizer_kwargs,
    ) -> BatchEncoding:
        """Text (str or list) [+ one image per text in mode "U"] -> {input_ids, attention_mask, image_size}.

        ``tokenizer_kwargs`` go to the tokenizer (e.g. ``padding="longest", return_tensors="ms"``). ``image_size`` is
        the (h, w) token grid of each prompt's image: to generate (mode "G") or given (mode "U").
        """
        prompts, image_sizes = self.build_prompts(text, image, mode=mode, ratio=ratio, image_area=image_area,
                                                  padding_image=padding_image)
        return self._tokenize(prompts, image_sizes, mode, max_position_embeddings, tokenizer_kwargs)

    def build_prompts(self, text, image=None, *, mode="G", ratio="1:1", image_area=DEFAULT_IMAGE_AREA,
                      padding_image=False):
        """The prompt strings and their (h, w) grids, without tokenizing (what ``__call__`` tokenizes)."""
        if mode not in MODES:
            raise ValueError(f"mode must be 'G' (generate an image from text) or 'U' (understand an image), "
                             f"got {mode!r}")
        texts = self._as_text_list(text)
        bos = self.tokenizer.bos_token
        if mode == "G":
            if image is not None:
                raise ValueError("mode 'G' generates an image from text and takes no input image; pass image=None, "
                                 "or use mode='U' to ask about an image")
            ratios = list(ratio) if isinstance(ratio, (list, tuple)) else [ratio] * len(texts)
            if len(ratios) != len(texts):
                raise ValueError(f"got {len(ratios)} ratios for {len(texts)} prompts; pass one ratio string for all "
                                 "or a list with one ratio per prompt")
            sizes = [self.calculate_generate_size(r, image_area) for r in ratios]
            prompts = [bos + t + self.tokenizer.boi_token + self.prefix_template.format(H=h, W=w)
                       + self.tokenizer.img_token for t, (h, w) in zip(texts, sizes)]
            return prompts, sizes

        images = self._as_image_list(image)
        if len(images) != len(texts):
            raise ValueError(f"mode 'U' needs exactly one image per text; got {len(images)} image(s) for "
                             f"{len(texts)} text(s)")
        grids = self.tokenize_image(images, padding_image=padding_image)
        prompts, sizes = [], []
        for t, grid in zip(texts, grids):
            sizes.append(tuple(int(s) for s in grid.shape))
            image_prompt = self.image_prompt(grid)
            prompts.append(bos + self.chat_template.format(image_prompt=image_prompt, text_prompt=t))
        return prompts, sizes

    def build_generation_inputs(
        self,
        text,
        negative_prompt: Union[str, Sequence[str]],
        *,
        ratio: Union[str, Sequence[str]] = "1:1",
        image_area: int = DEFAULT_IMAGE_AREA,
        negative_ratio=None,
        negative_image_area: Optional[int] = None,
        max_position_embeddings: Optional[int] = None,
        **tokenizer_kwargs,
    ):
        """Positive and negative (classifier-free guidance) mode "G" inputs, which must describe the same image grid.

        The negative prompt (one string for all, or one per prompt) is built with the positive's ratio and
        image_area unless ``negative_ratio``/``negative_image_area`` are given; a different grid is an error, since
        the guidance compares the two branches token by token. Returns (positive, negative) ``BatchEncoding``s.
        """
        texts = self._as_text_list(text)
        negatives = [negative_prompt] * len(texts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(texts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(texts)} prompts; pass one string for "
                             "all or one per prompt")
        positive = self(texts, mode="G", ratio=ratio, image_area=image_area,
                        max_position_embeddings=max_position_embeddings, **tokenizer_kwargs)
        negative = self(negatives, mode="G", ratio=ratio if negative_ratio is None else negative_ratio,
                        image_area=image_area if negative_image_area is None else negative_image_area,
                        max_position_embeddings=max_position_embeddings, **tokenizer_kwargs)
        pos_sizes, neg_sizes = _size_list(positive["image_size"]), _size_list(negative["image_size"])
        if pos_sizes != neg_sizes:
            raise ValueError(
                f"the negative prompt describes a {_fmt_sizes(neg_sizes)} token grid but the prompt a "
                f"{_fmt_sizes(pos_sizes)} one: classifier-free guidance needs both with the same ratio and image_area "
                "(leave negative_ratio/negative_image_area unset to reuse the prompt's)"
            )
        return positive, negative

    def image_prompt(self, grid) -> str:
        """boi + "{h}*{w}" + img + visual-token rows joined by eol + eol + eof + eoi, for an (h, w) grid of codes."""
        grid = np.asarray(grid)
        h, w = grid.shape
        tok = self.tokenizer
        return (tok.boi_token + self.prefix_template.format(H=h, W=w) + tok.img_token + self.to_imgstr(grid)
                + tok.eol_token + tok.eof_token + tok.eoi_token)

    def to_imgstr(self, grid) -> str:
        """An (h, w) grid of codebook indices -> its visual-token rows joined by eol."""
        grid = np.asarray(to_numpy(grid))
        return self.tokenizer.eol_token.join("".join(self._visual_token(k) for k in row) for row in grid.tolist())

    def _visual_token(self, k) -> str:
        template = self.visual_template[0]
        if template == st.VISUAL_TOKEN_TEMPLATE:
            return st.visual_token(k)
        return template.format(token_id=k) if "{token_id" in template else template.format(k)

    def _tokenize(self, prompts, image_sizes, mode, max_position_embeddings, tokenizer_kwargs):
        out = self.tokenizer(prompts, **tokenizer_kwargs)
        limit = max_position_embeddings if max_position_embeddings is not None else self.max_position_embeddings
        if limit is not None:
            hs, ws = ([h for h, _ in image_sizes], [w for _, w in image_sizes]) if mode == "G" else (0, 0)
            check_prompt_budget(out["input_ids"], hs, ws, limit, out.get("attention_mask"))
        return_tensors = tokenizer_kwargs.get("return_tensors")
        sizes = [list(s) for s in image_sizes]
        if return_tensors in ("np", "ms"):
            sizes = np.asarray(sizes, dtype=np.int32).reshape(-1, 2)
            if return_tensors == "ms":
                import mindspore

                sizes = mindspore.Tensor(sizes)
        out["image_size"] = sizes
        return out

    @staticmethod
    def _as_text_list(text) -> List[str]:
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"text must be a string or a non-empty list of strings, got {text!r:.80}")
        return texts

    @staticmethod
    def _as_image_list(image) -> list:
        from PIL import Image

        if image is None:
            raise ValueError("mode 'U' (understanding) needs an image for each text; pass image=PIL image or a list")
        images = [image] if isinstance(image, (Image.Image, np.ndarray)) else list(image)
        for i, im in enumerate(images):
            if not isinstance(im, (Image.Image, np.ndarray)):
                raise ValueError(f"image {i} is a {type(im).__name__}; pass PIL images (or HWC uint8 arrays)")
        return images

    # ---- images <-> codes --------------------------------------------------------------------------------------------
    def _require_vision(self, what):
        if self.image_processor is None or self.vision_tokenizer is None:
            raise ValueError(f"{what} needs the image processor and the vision tokenizer; build the processor with "
                             "Emu3Processor(image_processor, vision_tokenizer, tokenizer)")

    def tokenize_image(self, images, padding_image: bool = False) -> List[np.ndarray]:
        """PIL images -> a list of (h_i, w_i) int grids of codebook indices.

        Images of one size are encoded as one batch. Different sizes are encoded one by one, or with
        ``padding_image`` together: each is zero-padded (0 is mid-grey in [-1, 1]) on the right/bottom to the largest
        height and width, and each grid is then cropped back to ceil(H_i / factor) x ceil(W_i / factor). An image
        object given several times (several questions about one picture) is encoded once.
        """
        self._require_vision("encoding images")
        images = self._as_image_list(images)
        slot, distinct = {}, []
        for im in images:
            if id(im) not in slot:
                slot[id(im)] = len(distinct)
                distinct.append(im)
        if len(distinct) == len(images):
            return self._tokenize_distinct(images, padding_image)
        grids = self._tokenize_distinct(distinct, padding_image)
        return [grids[slot[id(im)]].copy() for im in images]

    def _tokenize_distinct(self, images, padding_image):
        import mindspore as ms

        encode = self.vision_tokenizer.encode

        def size(im):
            return im.size if hasattr(im, "size") and not isinstance(im, np.ndarray) else im.shape[1::-1]

        if len({size(im) for im in images}) == 1:
            pixels = self.image_processor(images, return_tensors="np")["pixel_values"]
            return list(encode(ms.Tensor(pixels)).asnumpy())
        pixels = [self.image_processor(im, return_tensors="np")["pixel_values"] for im in images]  # (1, 3, H, W)
        if not padding_image:
            return [encode(ms.Tensor(p)).asnumpy()[0] for p in pixels]
        max_h, max_w = max(p.shape[2] for p in pixels), max(p.shape[3] for p in pixels)
        batch = np.concatenate([np.pad(p, ((0, 0), (0, 0), (0, max_h - p.shape[2]), (0, max_w - p.shape[3])))
                                for p in pixels])
        codes = encode(ms.Tensor(batch)).asnumpy()
        f = self.vis_tok_spatial_factor
        return [c[:math.ceil(p.shape[2] / f), :math.ceil(p.shape[3] / f)] for c, p in zip(codes, pixels)]

    # ---- constrained decoding ----------------------------------------------------------------------------------------
    def build_prefix_constrained_fn(self, height, width):
        """The function (batch_id, sequence) -> allowed ids that makes generation follow the image layout (§4.4).

        Visual tokens are limited to the vision tokenizer's codebook (all 32,768 for the released one), so a model
        paired with a smaller tokenizer (a fine-tuned or tiny one) never samples a code its decoder lacks; without a
        vision tokenizer, to the text tokenizer's visual tokens (the last ids of its vocabulary)."""
        from .utils_emu3 import Emu3PrefixConstrainedLogitsHelper

        tok = self.tokenizer
        codebook = (int(self.vision_tokenizer.config.codebook_size) if self.vision_tokenizer is not None
                    else len(tok) - tok.convert_tokens_to_ids(self._visual_token(0)))
        img, eoi, eos, eol, eof, pad, first, last = tok.encode([
            tok.img_token, tok.eoi_token, tok.eos_token, tok.eol_token, tok.eof_token, tok.pad_token,
            self._visual_token(0), self._visual_token(codebook - 1),
        ])
        return Emu3PrefixConstrainedLogitsHelper(
            height=height, width=width, img_token=img, eoi_token=eoi, eos_token=eos, eol_token=eol, eof_token=eof,
            pad_token=pad, visual_tokens=list(range(first, last + 1)),
        )

    # ---- decoding ----------------------------------------------------------------------------------------------------
    def decode(self, token_ids, **kwargs):
        """Ids -> text chunks and PIL images (a list, or the single element when there is one); see multimodal_decode.
        ``kwargs`` go to the tokenizer (``skip_special_tokens=True`` drops images along with all special tokens)."""
        return self.multimodal_decode(self.tokenizer.decode(token_ids, **kwargs))

    def batch_decode(self, sequences, image_batch_size: int = 16, **kwargs) -> list:
        """``decode`` of each sequence; the images of all sequences are decoded together, ``image_batch_size`` grids
        of one size per vision-tokenizer call (one call per picture cost ~3x more per picture on CPU)."""
        return self._multimodal_decode_all(self.tokenizer.batch_decode(sequences, **kwargs), image_batch_size)

    def multimodal_decode(self, doc: str):
        """Split decoded text at ``boi ... eoi`` chunks; each chunk becomes a PIL image, the rest stays text.

        The grid comes from the rows of visual tokens (split at eol; the "h*w" header is ignored), so all rows must
        have the same length. Returns a list, or its only element.
        """
        return self._multimodal_decode_all([doc])[0]

    def _multimodal_decode_all(self, docs, image_batch_size=16) -> list:
        split = [[c for c in self._image_chunk_re.split(doc) if c] for doc in docs]
        is_image = [[self.tokenizer.boi_token in c and c.endswith(self.tokenizer.eoi_token) for c in chunks]
                    for chunks in split]
        grids = [self.image_grid(c) for chunks, flags in zip(split, is_image) for c, f in zip(chunks, flags) if f]
        images = iter(self.decode_grids(grids, image_batch_size))
        outputs = [[next(images) if f else c for c, f in zip(chunks, flags)] for chunks, flags in zip(split, is_image)]
        return [out[0] if len(out) == 1 else out for out in outputs]

    def image_grid(self, chunk: str) -> np.ndarray:
        """The (h, w) code grid of an image chunk's visual tokens."""
        rows = [[int(k) for k in self._visual_re.findall(piece)] for piece in chunk.split(self.tokenizer.eol_token)]
        rows = [r for r in rows if r]
        if not rows:
            raise ValueError("an image chunk (between image start and image end) holds no visual tokens: "
                             f"{chunk[:120]!r}")
        lengths = sorted({len(r) for r in rows})
        if len(lengths) > 1:
            counts = [len(r) for r in rows]
            raise ValueError(
                f"the image's rows of visual tokens have different lengths {lengths} (per row: {counts[:20]}"
                f"{'...' if len(counts) > 20 else ''}), so they do not form a grid; the generation was not "
                "constrained to the image layout (use build_prefix_constrained_fn) or the ids were cut"
            )
        return np.asarray(rows, dtype=np.int32)

    def decode_image(self, chunk: str):
        """An image chunk -> PIL image of (factor*h) x (factor*w) pixels."""
        return self.decode_grids([self.image_grid(chunk)])[0]

    def decode_grids(self, grids, batch_size: int = 16) -> list:
        """(h, w) code grids -> PIL images, in order; grids of one size are decoded ``batch_size`` at a time."""
        import mindspore as ms

        if not grids:
            return []
        self._require_vision("decoding images")
        images = [None] * len(grids)
        for chunk in batches_by_shape(grids, batch_size):
            codes = ms.Tensor(np.stack([grids[i] for i in chunk]))
            pixels = self.vision_tokenizer.decode(codes).astype(ms.float32).asnumpy()
            for i, image in zip(chunk, self.image_processor.postprocess(pixels)["pixel_values"]):
                images[i] = image
        return images


def _size_list(sizes) -> list:
    sizes = to_numpy(sizes)
    return [tuple(int(v) for v in s) for s in np.asarray(sizes).reshape(-1, 2)]


def _fmt_sizes(sizes) -> str:
    unique = sorted(set(sizes))
    return ", ".join(f"{h}x{w}" for h, w in unique)


__all__ = ["Emu3Processor", "calculate_generate_size", "check_prompt_budget", "image_token_budget", "parse_ratio"]
