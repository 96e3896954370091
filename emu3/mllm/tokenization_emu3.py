"""Emu3 text tokenizer: tiktoken byte-level BPE over the Qwen vocabulary plus Emu3's special and visual tokens.

A small, self-contained re-implementation of the original ``Emu3Tokenizer`` (a transformers ``PreTrainedTokenizer``)
with the HF-like API that the processor, the scripts and the datasets use. It needs only ``tiktoken`` and ``numpy``
(``mindspore`` only when ``return_tensors="ms"``).

Files of a tokenizer folder (the released ``BAAI/Emu3-*`` folders, or one built by ``emu3.mllm.tokenizer_files``):

- ``emu3.tiktoken``: one BPE token per line, ``"<base64 of the token bytes> <rank>"``, ranks 0 .. 151642;
- ``emu3_vision_tokens.txt``: one special token per line (image token/start/end, then the 32768 visual tokens);
- ``tokenizer_config.json`` (optional): bos/eos/pad tokens, ``padding_side``, ``model_max_length``.
"""

import base64
import binascii
import collections
import json
import os
import re
import unicodedata
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import tiktoken

from ..arrays import to_numpy
from ..atomic import atomic_write
from ..batch import BatchEncoding
from .special_tokens import VISUAL_TOKEN_RE, visual_token
from .special_tokens import (
    BOI_TOKEN,
    BOS_TOKEN,
    EOF_TOKEN,
    EOI_TOKEN,
    EOL_TOKEN,
    EOS_TOKEN,
    IMG_TOKEN,
    PAD_TOKEN,
    QWEN_SPECIAL_TOKENS,
)

VOCAB_FILES_NAMES = {
    "vocab_file": "emu3.tiktoken",
    "special_tokens_file": "emu3_vision_tokens.txt",
}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# Qwen's pre-tokenisation regex (cl100k-like, but numbers are split into single digits: `\p{N}`).
PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# transformers' "no limit" value for model_max_length (what tokenizer_config.json stores as 1e30).
VERY_LARGE_INTEGER = int(1e30)

# Every Emu3 special token looks like "<|...|>" with no '<', '>' or '|' inside; see Emu3Tokenizer._encode_text.
_SPECIAL_CANDIDATE_RE = re.compile(r"<\|[^<>|]+\|>")

_BUILD_HINT = (
    "Copy it from a released Emu3 model folder (e.g. BAAI/Emu3-Gen), or build a tokenizer folder with "
    "`python -m emu3.mllm.tokenizer_files OUT_DIR` "
    "(needs `pip install --no-deps dashscope==2.0.2` for the Qwen vocabulary)."
)

# Non-token settings read from tokenizer_config.json (other keys, e.g. auto_map or added_tokens_decoder, are ignored).
_CONFIG_KEYS = ("errors", "padding_side", "truncation_side", "model_max_length", "clean_up_tokenization_spaces")

# kwargs of transformers' from_pretrained that have no meaning for a local folder.
_IGNORED_FROM_PRETRAINED_KWARGS = (
    "trust_remote_code", "use_fast", "cache_dir", "revision", "local_files_only", "token", "force_download",
    "proxies", "subfolder", "legacy",
)


# ---------------------------------------------------------------------------------------------------------------------
# File helpers
# ---------------------------------------------------------------------------------------------------------------------
def _require_file(path, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Emu3 tokenizer {what} not found: {path!s}. {_BUILD_HINT}")


def load_tiktoken_bpe(path) -> Dict[bytes, int]:
    """Read a ``.tiktoken`` file into ``{token bytes: rank}``; malformed lines are reported with their line number."""
    _require_file(path, "vocabulary file (emu3.tiktoken)")
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    ranks = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected '<base64 token> <rank>'")
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except (ValueError, binascii.Error) as e:
            raise ValueError(f"{path}: malformed line {lineno}: {line[:80]!r} ({e})") from None
        if token in ranks:
            raise ValueError(f"{path}: line {lineno}: token {token!r} is listed twice")
        ranks[token] = rank
    return ranks


def write_tiktoken_bpe(path, ranks):
    """The inverse of :func:`load_tiktoken_bpe`: ``<base64 token> <rank>`` per line, by rank, written atomically."""
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    atomic_write(path, b"".join(base64.b64encode(tok) + b" %d\n" % rank for tok, rank in by_rank))


def load_special_tokens_file(path) -> List[str]:
    """The non-empty, stripped lines of ``emu3_vision_tokens.txt``."""
    _require_file(path, "special-tokens file (emu3_vision_tokens.txt)")
    with open(path, "r", encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    _check_visual_tokens(lines, path)
    return lines


def _check_visual_tokens(lines, path):
    """Visual token k must be <|visual token k|>, all of them one block in order: a missing or swapped line
    would shift every later id and silently scramble every image."""
    positions = [i for i, line in enumerate(lines) if VISUAL_TOKEN_RE.fullmatch(line)]
    for k, i in enumerate(positions):
        if lines[i] != visual_token(k) or (k and i != positions[k - 1] + 1):
            found = lines[i] if lines[i] != visual_token(k) else f"{lines[i]} after a gap"
            raise ValueError(f"{path}: visual tokens must run <|visual token 000000|>, <|visual token 000001|>, … "
                             f"in order without gaps; token #{k} is {found!r} instead of {visual_token(k)!r} (a "
                             "missing or reordered line shifts every later id). Rebuild the file with "
                             "`python -m emu3.mllm.tokenizer_files OUT_DIR`.")


def _token_content(value):
    # tokenizer_config.json may store a token as a plain string or as a serialised AddedToken {"content": ...}.
    return value["content"] if isinstance(value, dict) else value


def _to_id_list(ids) -> List[int]:
    """ints / lists / numpy arrays / mindspore Tensors -> a flat Python list of ints."""
    ids = to_numpy(ids)
    if isinstance(ids, np.ndarray):
        if ids.ndim > 1:
            raise ValueError(f"expected a 1-D sequence of ids, got shape {ids.shape}; use batch_decode for batches")
        ids = ids.tolist()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    return [int(i) for i in ids]



# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------------
class Emu3Tokenizer:
    """Emu3 tokenizer (tiktoken BPE, Qwen vocabulary, Emu3 specials).

    No BOS/EOS is added automatically: the processor and the datasets put the bos string in the prompt text.
    Special-token strings inside text are always encoded as their special id (``allowed_special="all"``).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file,
        special_tokens_file,
        errors: str = "replace",
        bos_token: str = BOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        pad_token: str = PAD_TOKEN,
        img_token: str = IMG_TOKEN,
        boi_token: str = BOI_TOKEN,
        eoi_token: str = EOI_TOKEN,
        eol_token: str = EOL_TOKEN,
        eof_token: str = EOF_TOKEN,
        padding_side: str = "right",  # transformers' default; the inference scripts pass "left"
        truncation_side: str = "right",
        model_max_length: int = VERY_LARGE_INTEGER,
        clean_up_tokenization_spaces: bool = True,  # stored for the config only: the original decode never cleans up
    ):
        self.vocab_file = os.fspath(vocab_file)
        self.special_tokens_file = os.fspath(special_tokens_file)
        self.errors = errors  # how decode handles invalid UTF-8 ("replace"; "ignore" suits streaming)

        self.mergeable_ranks = load_tiktoken_bpe(self.vocab_file)
        vision_tokens = load_special_tokens_file(self.special_tokens_file)

        # The BPE ranks must be exactly 0 .. n-1 (dense ids); the specials follow them in this fixed order (ids are
        # part of the checkpoint's contract): n = 151643 for the released Qwen files, fewer for a small vocabulary
        # of one's own (the tiny world's), whose specials and visual tokens then sit right after its own ranks.
        ranks = set(self.mergeable_ranks.values())
        if len(ranks) < 256 or ranks != set(range(len(self.mergeable_ranks))):
            span = f"ranks {min(ranks)}..{max(ranks)}" if ranks else "no ranks"
            raise ValueError(
                f"inconsistent Emu3 vocabulary: {self.vocab_file} holds {len(self.mergeable_ranks)} BPE tokens ({span});"
                " it must hold exactly the ranks 0..n-1 (n = 151643 for the released Qwen vocabulary), including "
                "all 256 single bytes."
            )
        self.special_start_id = len(self.mergeable_ranks)
        special_list = list(QWEN_SPECIAL_TOKENS) + vision_tokens
        self.special_tokens = {tok: self.special_start_id + i for i, tok in enumerate(special_list)}
        if len(self.special_tokens) != len(special_list):
            dups = [t for t, n in collections.Counter(special_list).items() if n > 1][:5]
            raise ValueError(f"{self.special_tokens_file}: duplicated special tokens, e.g. {dups}")
        self._build_encoding()

        # Id -> token (bytes for BPE tokens, str for specials), for tokenize / convert_ids_to_tokens.
        self.decoder = {rank: tok for tok, rank in self.mergeable_ranks.items()}
        self.decoder.update({i: tok for tok, i in self.special_tokens.items()})

        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.img_token, self.boi_token, self.eoi_token = img_token, boi_token, eoi_token
        self.eol_token, self.eof_token = eol_token, eof_token
        for name in self.SPECIAL_TOKENS_ATTRIBUTES:
            tok = getattr(self, name)
            if tok is not None and tok not in self.special_tokens:
                raise ValueError(f"{name}={tok!r} is not a special token of this vocabulary")
        self.eod_id = self._enc.eot_token  # <|endoftext|>; decode(skip_special_tokens=True) keeps ids below it

        if padding_side not in ("left", "right") or truncation_side not in ("left", "right"):
            raise ValueError(
                f"padding_side/truncation_side must be 'left' or 'right', got {padding_side!r}/{truncation_side!r}"
            )
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces

    SPECIAL_TOKENS_ATTRIBUTES = (
        "bos_token", "eos_token", "pad_token", "img_token", "boi_token", "eoi_token", "eol_token", "eof_token",
    )

    def _build_encoding(self):
        self._enc = tiktoken.Encoding(
            "Emu3", pat_str=PAT_STR, mergeable_ranks=self.mergeable_ranks, special_tokens=self.special_tokens
        )
        assert self._enc.n_vocab == len(self.mergeable_ranks) + len(self.special_tokens)  # guaranteed by __init__
        # Fast path for allowed_special="all" (see _encode_text) is valid only if all specials have the "<|...|>" shape.
        self._fast_specials = all(_SPECIAL_CANDIDATE_RE.fullmatch(t) for t in self.special_tokens)

    # tiktoken's Encoding is rebuilt rather than pickled (datasets are pickled into worker processes).
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_enc"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build_encoding()

    # ---- loading / saving --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "Emu3Tokenizer":
        """Load from a local folder holding ``emu3.tiktoken``, ``emu3_vision_tokens.txt`` and optionally
        ``tokenizer_config.json``. Keyword arguments (e.g. ``padding_side="left"``) override the config."""
        folder = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"Emu3 tokenizer folder not found: {folder!r} (only local folders are supported, no hub download). "
                + _BUILD_HINT
            )
        for key in _IGNORED_FROM_PRETRAINED_KWARGS:
            kwargs.pop(key, None)

        init_kwargs = {}
        config_path = os.path.join(folder, TOKENIZER_CONFIG_FILE)
        if os.path.isfile(config_path):
            with open(config_path, "r", encoding="utf-8") as f:
                config = json.load(f)
            for key in cls.SPECIAL_TOKENS_ATTRIBUTES:
                if config.get(key) is not None:
                    init_kwargs[key] = _token_content(config[key])
            for key in _CONFIG_KEYS:
                if config.get(key) is not None:
                    init_kwargs[key] = config[key]
        init_kwargs.update(kwargs)
        return cls(
            os.path.join(folder, VOCAB_FILES_NAMES["vocab_file"]),
            os.path.join(folder, VOCAB_FILES_NAMES["special_tokens_file"]),
            **init_kwargs,
        )

    def tokenizer_config(self) -> dict:
        """What ``save_pretrained`` writes to tokenizer_config.json."""
        config = {"tokenizer_class": "Emu3Tokenizer"}
        config.update({name: getattr(self, name) for name in self.SPECIAL_TOKENS_ATTRIBUTES})
        config.update(
            errors=self.errors,
            padding_side=self.padding_side,
            truncation_side=self.truncation_side,
            model_max_length=self.model_max_length,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
        )
        return config

    def save_tokenizer_config(self, save_directory) -> str:
        path = os.path.join(save_directory, TOKENIZER_CONFIG_FILE)
        atomic_write(path, json.dumps(self.tokenizer_config(), indent=2, ensure_ascii=False) + "\n")
        return path

    def save_vocabulary(self, save_directory) -> tuple:
        """Write ``emu3.tiktoken`` and ``emu3_vision_tokens.txt`` (every special after the fixed Qwen ones)."""
        vocab_path = os.path.join(save_directory, VOCAB_FILES_NAMES["vocab_file"])
        write_tiktoken_bpe(vocab_path, self.mergeable_ranks)

        special_path = os.path.join(save_directory, VOCAB_FILES_NAMES["special_tokens_file"])
        first_vision_id = self.special_start_id + len(QWEN_SPECIAL_TOKENS)
        vision = [tok for tok, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1]) if i >= first_vision_id]
        atomic_write(special_path, "".join(tok + "\n" for tok in vision))
        return vocab_path, special_path

    def save_pretrained(self, save_directory) -> tuple:
        """Write the two vocabulary files and tokenizer_config.json (each atomically) for ``from_pretrained``."""
        os.makedirs(save_directory, exist_ok=True)
        return self.save_vocabulary(save_directory) + (self.save_tokenizer_config(save_directory),)

    # ---- vocabulary ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._enc.n_vocab

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    def get_vocab(self) -> Dict[Union[bytes, str], int]:
        """All tokens -> ids: BPE tokens as bytes, specials as str."""
        vocab = dict(self.mergeable_ranks)
        vocab.update(self.special_tokens)
        return vocab

    @property
    def special_tokens_map(self) -> Dict[str, str]:
        return {name: getattr(self, name) for name in self.SPECIAL_TOKENS_ATTRIBUTES}

    @property
    def all_special_ids(self) -> List[int]:
        return sorted(self.special_tokens.values())

    def _named_id(self, token):
        return None if token is None else self.special_tokens[token]

    bos_token_id = property(lambda self: self._named_id(self.bos_token))
    eos_token_id = property(lambda self: self._named_id(self.eos_token))
    pad_token_id = property(lambda self: self._named_id(self.pad_token))
    img_token_id = property(lambda self: self._named_id(self.img_token))
    boi_token_id = property(lambda self: self._named_id(self.boi_token))
    eoi_token_id = property(lambda self: self._named_id(self.eoi_token))
    eol_token_id = property(lambda self: self._named_id(self.eol_token))
    eof_token_id = property(lambda self: self._named_id(self.eof_token))

    # ---- tokens <-> ids ------------------------------------------------------------------------------------------
    def _token_to_id(self, token: Union[str, bytes]) -> int:
        if isinstance(token, str):
            if token in self.special_tokens:
                return self.special_tokens[token]
            token_bytes = token.encode("utf-8")  # a regular token given as text, e.g. "hello"
        elif isinstance(token, bytes):
            token_bytes = token
        else:
            raise TypeError(f"tokens must be str or bytes, got {type(token).__name__}")
        if token_bytes in self.mergeable_ranks:
            return self.mergeable_ranks[token_bytes]
        raise KeyError(f"unknown token {token!r}: neither a special token nor a single BPE token")

    def convert_tokens_to_ids(self, tokens: Union[str, bytes, Sequence[Union[str, bytes]]]):
        """Specials are looked up first, then the BPE ranks. A single token gives an int, a list gives a list."""
        if isinstance(tokens, (str, bytes)):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _id_to_token(self, index: int) -> Union[str, bytes]:
        try:
            return self.decoder[index]
        except KeyError:
            raise ValueError(f"unknown token id {index} (vocabulary size {len(self)})") from None

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """Ids -> tokens (bytes for BPE tokens, str for specials). A single int gives a single token."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        ids = _to_id_list(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i < self.eod_id]
        return [self._id_to_token(i) for i in ids]

    def convert_tokens_to_string(self, tokens: Sequence[Union[str, bytes]]) -> str:
        """Join tokens; consecutive BPE byte pieces are decoded together so multi-byte characters survive."""
        out, pending = [], b""
        for tok in tokens:
            if isinstance(tok, bytes):
                pending += tok
                continue
            if not isinstance(tok, str):
                raise TypeError(f"tokens must be str or bytes, got {type(tok).__name__}")
            if pending:
                out.append(pending.decode("utf-8", errors=self.errors))
                pending = b""
            out.append(tok)
        if pending:
            out.append(pending.decode("utf-8", errors=self.errors))
        return "".join(out)

    # ---- encoding ------------------------------------------------------------------------------------------------
    def _encode_text(self, text: str, allowed_special="all", disallowed_special=()) -> List[int]:
        text = unicodedata.normalize("NFC", text)
        if allowed_special != "all" or disallowed_special or not self._fast_specials:
            return self._enc.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        # Same result as self._enc.encode(text, allowed_special="all"), which would convert the ~33k-entry special set
        # on every call (slower than the encoding itself for short texts). tiktoken encodes the text between consecutive specials independently, so we do that
        # too: a special "<|x|>" can only start at a "<" where the candidate pattern matches exactly it, and a
        # non-special candidate cannot contain the start of a special (no "<" inside), so scanning candidates left to
        # right finds the same specials as tiktoken's leftmost-match search.
        ids, start = [], 0
        for m in _SPECIAL_CANDIDATE_RE.finditer(text):
            special_id = self.special_tokens.get(m.group())
            if special_id is None:
                continue
            if m.start() > start:
                ids.extend(self._enc.encode_ordinary(text[start:m.start()]))
            ids.append(special_id)
            start = m.end()
        if start < len(text):
            ids.extend(self._enc.encode_ordinary(text[start:]))
        return ids

    def tokenize(self, text: str, allowed_special="all", disallowed_special=(), **kwargs) -> List[Union[bytes, str]]:
        """NFC-normalise and BPE-encode; returns the pieces (bytes for BPE tokens, str for specials)."""
        return [self.decoder[i] for i in self._encode_text(text, allowed_special, disallowed_special)]

    def _get_input_ids(self, text) -> List[int]:
        if isinstance(text, str):
            return self._encode_text(text)
        if isinstance(text, (list, tuple)):
            if all(isinstance(t, (str, bytes)) for t in text):
                return self.convert_tokens_to_ids(text)  # pre-split tokens map 1:1 (the processor relies on this)
            if all(isinstance(t, (int, np.integer)) for t in text):
                return [int(t) for t in text]
        raise TypeError(f"expected a string, a list of token strings or a list of ids, got {type(text).__name__}")

    def _truncate(self, ids: List[int], pair_ids: Optional[List[int]], max_length: int):
        # transformers' "longest_first": drop tokens from the longer sequence (the pair on ties) until it fits.
        n_ids, n_pair = len(ids), len(pair_ids) if pair_ids is not None else 0
        while n_ids + n_pair > max_length:
            if pair_ids is None or n_ids > n_pair:
                n_ids -= 1
            else:
                n_pair -= 1

        def cut(seq, n):
            return seq[:n] if self.truncation_side == "right" else seq[len(seq) - n:]

        return cut(ids, n_ids), (cut(pair_ids, n_pair) if pair_ids is not None else None)

    def encode(
        self,
        text,
        text_pair=None,
        truncation: Union[bool, str] = False,
        max_length: Optional[int] = None,
        **kwargs,
    ) -> List[int]:
        """Text -> ids (no BOS/EOS added). ``text`` may also be a list of token strings (mapped 1:1) or of ids.
        A ``text_pair`` is simply appended (Emu3 has no separator tokens)."""
        kwargs.pop("add_special_tokens", None)  # accepted for compatibility; nothing is ever added
        if kwargs:
            raise TypeError(f"unsupported arguments: {sorted(kwargs)}")
        ids = self._get_input_ids(text)
        pair_ids = self._get_input_ids(text_pair) if text_pair is not None else None
        if truncation not in (False, None, "do_not_truncate"):
            limit = max_length if max_length is not None else self.model_max_length
            ids, pair_ids = self._truncate(ids, pair_ids, limit)
        return ids + pair_ids if pair_ids is not None else ids

    def __call__(
        self,
        text,
        text_pair=None,
        padding: Union[bool, str] = False,
        truncation: Union[bool, str] = False,
        max_length: Optional[int] = None,
        return_tensors: Optional[str] = None,
        padding_side: Optional[str] = None,
        pad_to_multiple_of: Optional[int] = None,
        return_attention_mask: bool = True,
        return_token_type_ids: Optional[bool] = None,  # accepted for compatibility; Emu3 has no token types
        add_special_tokens: bool = True,  # accepted for compatibility; nothing is added
    ) -> BatchEncoding:
        """Tokenize one text or a batch (a list of texts) into ``input_ids`` and ``attention_mask``.

        ``padding``: False / "do_not_pad", True / "longest" (to the longest in the batch), or "max_length".
        ``return_tensors``: None (Python lists), "np" (numpy int32) or "ms" (mindspore int32 Tensors); a single text
        then gets a batch dimension of 1, as in transformers.
        """
        is_batched = isinstance(text, (list, tuple))
        texts = list(text) if is_batched else [text]
        if text_pair is None:
            pairs = [None] * len(texts)
        else:
            pairs = list(text_pair) if is_batched else [text_pair]
            if len(pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(pairs)} text pairs")

        batch = [self.encode(t, p, truncation=truncation, max_length=max_length) for t, p in zip(texts, pairs)]
        masks = [[1] * len(ids) for ids in batch]

        # Padding target length (transformers semantics).
        if padding is True:
            padding = "longest"
        if padding in ("longest", "max_length"):
            if padding == "max_length":
                target = max_length if max_length is not None else self.model_max_length
                if target >= VERY_LARGE_INTEGER:
                    raise ValueError("padding='max_length' needs max_length (model_max_length is unset)")
            else:
                target = max((len(ids) for ids in batch), default=0)
            if pad_to_multiple_of:
                target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
            side = padding_side or self.padding_side
            if side not in ("left", "right"):
                raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
            if self.pad_token is None:
                raise ValueError("padding needs a pad_token")
            pad_id = self.pad_token_id
            for i, ids in enumerate(batch):
                n = target - len(ids)
                if n <= 0:
                    continue
                if side == "left":
                    batch[i], masks[i] = [pad_id] * n + ids, [0] * n + masks[i]
                else:
                    batch[i], masks[i] = ids + [pad_id] * n, masks[i] + [0] * n
        elif padding not in (False, None, "do_not_pad"):
            raise ValueError(f"unknown padding strategy {padding!r}")

        out = BatchEncoding(input_ids=batch)
        if return_attention_mask:
            out["attention_mask"] = masks

        if return_tensors is None:
            if not is_batched:
                for key in out:
                    out[key] = out[key][0]
            return out
        if return_tensors not in ("np", "ms"):
            raise ValueError(f"return_tensors must be None, 'np' or 'ms', got {return_tensors!r}")
        if len({len(ids) for ids in batch}) > 1:
            raise ValueError("sequences have different lengths; pass padding=True (or 'max_length') to return tensors")
        for key in out:
            arr = np.asarray(out[key], dtype=np.int32).reshape(len(batch), -1)
            if return_tensors == "ms":
                import mindspore  # only needed here; keeps the tokenizer usable without mindspore

                arr = mindspore.Tensor(arr, dtype=mindspore.int32)
            out[key] = arr
        return out

    # ---- decoding ------------------------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False, errors: Optional[str] = None, **kwargs) -> str:
        """Ids -> text. With ``skip_special_tokens`` every id from the first special on (151643 in the released
        vocabulary: specials and visual tokens) is dropped.
        Invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD with the default errors="replace".
        Other keyword arguments (e.g. ``clean_up_tokenization_spaces``) are accepted and ignored, as in the original."""
        ids = _to_id_list(token_ids)
        if skip_special_tokens:
            ids = [i for i in ids if i < self.eod_id]
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"token ids out of range [0, {len(self)}): {bad[:5]}")
        return self._enc.decode(ids, errors=errors or self.errors)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> List[str]:
        sequences = to_numpy(sequences)
        return [self.decode(seq, skip_special_tokens=skip_special_tokens, **kwargs) for seq in sequences]

    def __repr__(self):
        return (
            f"{type(self).__name__}(vocab_size={len(self)}, bos={self.bos_token!r}, eos={self.eos_token!r}, "
            f"pad={self.pad_token!r}, padding_side={self.padding_side!r}, model_max_length={self.model_max_length})"
        )
