"""Key/value caches for incremental decoding.

Both caches answer the same three questions the model asks:
``update(key, value, layer_idx, cache_position) -> (keys, values)`` (B, N_kv, K, D) for attention,
``get_seq_length()`` (tokens already cached, for default positions) and ``key_length(query_length)`` (K, the
key axis the attention mask must cover).

- ``StaticCache`` (graph mode and pynative): fixed (B, N_kv, max_length, D) buffers per layer, written in place
  at ``cache_position``. Every decode step has the same shapes, so a ``mindspore.jit`` step compiles once, and
  the write costs the same at token 10 and token 9000. Attention always reads all ``max_length`` slots; the
  model's mask hides the slots not yet written.
- ``DynamicCache`` (pynative only): per-layer tensors that grow by concatenation, as the original (HF
  ``DynamicCache``). Shapes change every step, so under ``jit`` each step would recompile.
"""

import numpy as np

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops


class StaticCache(nn.Cell):
    """Preallocated cache for ``num_layers`` layers of (batch_size, num_kv_heads, max_length, head_dim)."""

    is_static = True

    def __init__(self, num_layers, batch_size, num_kv_heads, head_dim, max_length, dtype=ms.float32):
        super().__init__()
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_length = max_length
        # Stored flat, (B * N_kv * max_length, D), because ScatterUpdate writes rows of its first axis in place;
        # writing into a 4-D buffer by slice-assignment copies the whole buffer on CPU (cost grows with max_length).
        rows = batch_size * num_kv_heads * max_length

        def buffers(kind):
            return ParameterTuple([
                Parameter(Tensor(np.zeros((rows, head_dim)), dtype), name=f"{kind}_cache.{i}", requires_grad=False)
                for i in range(num_layers)
            ])

        self.key_cache = buffers("key")
        self.value_cache = buffers("value")
        # Row of slot 0 for every (batch, kv head); adding a position gives the row to write.
        self.row_base = Tensor((np.arange(batch_size * num_kv_heads) * max_length)
                               .reshape(batch_size, num_kv_heads, 1).astype(np.int32))
        self.scatter = ops.ScatterUpdate()

    @classmethod
    def for_model(cls, config, batch_size, max_length, dtype=ms.float32):
        return cls(config.num_hidden_layers, batch_size, config.num_key_value_heads, config.head_dim, max_length,
                   dtype)

    def update(self, key, value, layer_idx, cache_position):
        """Write key/value (B, N_kv, q, D) at slots ``cache_position`` (q,) and return the full buffers."""
        rows = self.row_base + cache_position.astype(ms.int32).reshape(1, 1, -1)
        keys = self.scatter(self.key_cache[layer_idx], rows, key.astype(self.key_cache[layer_idx].dtype))
        values = self.scatter(self.value_cache[layer_idx], rows, value.astype(self.value_cache[layer_idx].dtype))
        shape = (self.batch_size, self.num_kv_heads, self.max_length, self.head_dim)
        return keys.reshape(shape), values.reshape(shape)

    def key_length(self, query_length):
        return self.max_length

    def get_seq_length(self):
        raise ValueError("a StaticCache does not track how many tokens it holds: pass cache_position explicitly")

    def reset(self):
        """Zero every buffer (e.g. before reusing the cache for a new batch of prompts)."""
        for param in tuple(self.key_cache) + tuple(self.value_cache):
            param.set_data(ops.zeros_like(param))


class DynamicCache:
    """Growing cache (pynative only): each update concatenates along the sequence axis."""

    is_static = False

    def __init__(self):
        self.key_cache = []
        self.value_cache = []

    def update(self, key, value, layer_idx, cache_position=None):
        if layer_idx == len(self.key_cache):
            self.key_cache.append(key)
            self.value_cache.append(value)
        else:
            self.key_cache[layer_idx] = ops.cat((self.key_cache[layer_idx], key), axis=2)
            self.value_cache[layer_idx] = ops.cat((self.value_cache[layer_idx], value), axis=2)
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def key_length(self, query_length):
        return self.get_seq_length() + query_length

    def get_seq_length(self):
        return self.key_cache[0].shape[2] if self.key_cache else 0
