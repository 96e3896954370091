"""emu3-mindspore: BAAI's Emu3 (vision tokenizer + multimodal LLM) in MindSpore."""

from ._openmp import PASSIVE_OPENMP  # noqa: F401  (first: before MindSpore loads its OpenMP runtime)

__version__ = "0.1.0"
