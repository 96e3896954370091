"""The Emu3 language model and its text side: config, model, tokenizer, processor (and generation helpers).

Names are imported on first use, so ``import emu3.mllm.special_tokens`` (pure Python, used by data preparation)
does not pull in mindspore or tiktoken, and the generation helpers are only needed when used.
"""

import importlib

_EXPORTS = {
    "Emu3Config": ".configuration_emu3",
    "Emu3ForCausalLM": ".modeling_emu3",
    "Emu3Model": ".modeling_emu3",
    "Emu3Tokenizer": ".tokenization_emu3",
    "Emu3Processor": ".processing_emu3",
    "LogitsProcessorList": ".generation",
    "PrefixConstrainedLogitsProcessor": ".generation",
    "UnbatchedClassifierFreeGuidanceLogitsProcessor": ".generation",
    "Emu3PrefixConstrainedLogitsHelper": ".utils_emu3",
}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = list(_EXPORTS)
