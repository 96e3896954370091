"""Learn a small byte-level BPE vocabulary for the released ``emu3.tiktoken`` format (write it with
``emu3.mllm.tokenization_emu3.write_tiktoken_bpe``).

Emu3's text vocabulary is Qwen's 151,643 BPE ranks. A model trained from scratch on a small language (the tiny
world's captions and questions) learns faster with a vocabulary of its own: the 256 single bytes, then merges learned
from the corpus, split into pieces by the same pre-tokenisation regex as Qwen's, so ``Emu3Tokenizer`` encodes with it
exactly as with the released file (tiktoken merges the lowest-ranked pair first, which replays the learned order).
"""

import collections

import regex

from emu3.mllm.tokenization_emu3 import PAT_STR


def learn_bpe(texts, num_merges):
    """Ranks {token bytes: rank}: bytes 0..255 first, then up to ``num_merges`` merges, most frequent pair first
    (ties broken by the pair's bytes, so the result does not depend on dict order)."""
    pieces = collections.Counter(piece.encode("utf-8") for text in texts for piece in regex.findall(PAT_STR, text))
    words = {tuple(bytes([b]) for b in piece): count for piece, count in pieces.items()}
    ranks = {bytes([b]): b for b in range(256)}
    for _ in range(num_merges):
        pairs = collections.Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break  # every piece is a single token already
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        ranks[merged] = len(ranks)
        words = {_merge(word, best, merged): count for word, count in words.items()}
    return ranks


def _merge(word, pair, merged):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)

