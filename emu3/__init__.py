"""emu3-mindspore: BAAI's Emu3 (vision tokenizer + multimodal LLM) in MindSpore."""

__version__ = "0.1.0"
