"""Emu3 special tokens: the one place for their strings and ids.

Layout of the 184,622-entry vocabulary (see docs §2.1 / §3):

    0 .. 151642        Qwen byte-level BPE tokens (``emu3.tiktoken``)
    151643             <|endoftext|>   (pad)
    151644, 151645     <|im_start|>, <|im_end|>
    151646 .. 151850   <|extra_0|> .. <|extra_204|>   (eol = extra_200, eof = extra_201, bos/eos = extra_203/204)
    151851 .. 151853   <|image token|>, <|image start|>, <|image end|>
    151854 .. 184621   <|visual token 000000|> .. <|visual token 032767|>   (visual token k <-> id 151854 + k)

The last two groups are the lines of ``emu3_vision_tokens.txt``. This module is pure Python (no mindspore, no
tiktoken) so that data-preparation code can use it cheaply.
"""

import operator
import re

# ---- BPE part and the fixed Qwen specials -------------------------------------------------------------------------
NUM_BPE_TOKENS = 151643  # ranks 0 .. 151642 of the Qwen vocabulary
SPECIAL_START_ID = 151643  # the first special id; equal to NUM_BPE_TOKENS (no gap)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
NUM_EXTRAS = 205
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(NUM_EXTRAS))

# Specials that are always present, in id order starting at SPECIAL_START_ID.
QWEN_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END) + EXTRAS

# ---- Named tokens (Emu3Tokenizer / Emu3Config defaults) ------------------------------------------------------------
BOS_TOKEN = "<|extra_203|>"
EOS_TOKEN = "<|extra_204|>"
PAD_TOKEN = ENDOFTEXT
IMG_TOKEN = "<|image token|>"  # marks where the visual tokens start (after the "h*w" header)
BOI_TOKEN = "<|image start|>"
EOI_TOKEN = "<|image end|>"
EOL_TOKEN = "<|extra_200|>"  # end of one row of visual tokens
EOF_TOKEN = "<|extra_201|>"  # end of the frame (after the last row)

BOS_TOKEN_ID = 151849
EOS_TOKEN_ID = 151850
PAD_TOKEN_ID = 151643
IMG_TOKEN_ID = 151851
BOI_TOKEN_ID = 151852
EOI_TOKEN_ID = 151853
EOL_TOKEN_ID = 151846
EOF_TOKEN_ID = 151847

# ---- Visual tokens ------------------------------------------------------------------------------------------------
CODEBOOK_SIZE = 32768
VISUAL_TOKEN_OFFSET = 151854  # id of <|visual token 000000|>
VISUAL_TOKEN_TEMPLATE = "<|visual token {:06d}|>"
VISUAL_TOKEN_PATTERN = r"<\|visual token (\d+)\|>"
VISUAL_TOKEN_RE = re.compile(VISUAL_TOKEN_PATTERN)

# The head of emu3_vision_tokens.txt, before the visual tokens.
IMAGE_SPECIAL_TOKENS = (IMG_TOKEN, BOI_TOKEN, EOI_TOKEN)

VOCAB_SIZE = SPECIAL_START_ID + len(QWEN_SPECIAL_TOKENS) + len(IMAGE_SPECIAL_TOKENS) + CODEBOOK_SIZE  # 184622


def _check_code(k) -> int:
    k = operator.index(k)  # accepts numpy integers, rejects floats
    if not 0 <= k < CODEBOOK_SIZE:
        raise ValueError(f"visual token index {k} is outside the codebook [0, {CODEBOOK_SIZE})")
    return k


def visual_token(k) -> str:
    """The string of visual token ``k`` (codebook index), e.g. ``visual_token(5) == "<|visual token 000005|>"``."""
    return VISUAL_TOKEN_TEMPLATE.format(_check_code(k))


def visual_token_id(k) -> int:
    """The vocabulary id of visual token ``k``: ``VISUAL_TOKEN_OFFSET + k``."""
    return VISUAL_TOKEN_OFFSET + _check_code(k)


def visual_token_index(token_id) -> int:
    """Inverse of :func:`visual_token_id`: the codebook index of a visual-token id."""
    k = operator.index(token_id) - VISUAL_TOKEN_OFFSET
    if not 0 <= k < CODEBOOK_SIZE:
        raise ValueError(f"id {token_id} is not a visual token id [{VISUAL_TOKEN_OFFSET}, {VOCAB_SIZE})")
    return k


def is_visual_token_id(token_id) -> bool:
    return VISUAL_TOKEN_OFFSET <= token_id < VISUAL_TOKEN_OFFSET + CODEBOOK_SIZE


def vision_token_lines(codebook_size: int = CODEBOOK_SIZE) -> list:
    """The lines of ``emu3_vision_tokens.txt``: image token/start/end, then one visual token per codebook entry
    (all 32,768 in the released file; a smaller vision tokenizer's codebook for a vocabulary of one's own)."""
    if not 0 < codebook_size <= CODEBOOK_SIZE:
        raise ValueError(f"codebook_size must be in [1, {CODEBOOK_SIZE}], got {codebook_size}")
    return list(IMAGE_SPECIAL_TOKENS) + [VISUAL_TOKEN_TEMPLATE.format(k) for k in range(codebook_size)]


def _self_check():
    # The literal ids above must agree with the enumeration order; fail at import rather than silently mis-tokenise.
    order = QWEN_SPECIAL_TOKENS + IMAGE_SPECIAL_TOKENS
    ids = {tok: SPECIAL_START_ID + i for i, tok in enumerate(order)}
    expected = {
        BOS_TOKEN: BOS_TOKEN_ID, EOS_TOKEN: EOS_TOKEN_ID, PAD_TOKEN: PAD_TOKEN_ID, IMG_TOKEN: IMG_TOKEN_ID,
        BOI_TOKEN: BOI_TOKEN_ID, EOI_TOKEN: EOI_TOKEN_ID, EOL_TOKEN: EOL_TOKEN_ID, EOF_TOKEN: EOF_TOKEN_ID,
    }
    for tok, tid in expected.items():
        assert ids[tok] == tid, (tok, ids[tok], tid)
    assert SPECIAL_START_ID + len(order) == VISUAL_TOKEN_OFFSET
    assert VOCAB_SIZE == 184622


_self_check()
