"""Dicts returned by the tokenizer and processors, readable as attributes too (``enc.input_ids``), as in HF."""


class BatchFeature(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    # dict subclasses pickle their items; without this, __getattr__ would be asked for __setstate__ first.
    def __getstate__(self):
        return dict(self)

    def __setstate__(self, state):
        self.update(state)


class BatchEncoding(BatchFeature):
    """What ``Emu3Tokenizer.__call__`` returns (``input_ids``, ``attention_mask``)."""
