"""Key/value caches for incremental decoding.

Both caches answer the same questions the model asks:
``update(key, value, layer_idx, cache_position) -> (keys, values)`` for attention — values (B, N_kv, K, D), keys
the same or, when ``transposed_keys``, (B, N_kv, D, K) —
``get_seq_length()`` (tokens already cached, for default positions) and ``key_length(query_length)`` (K, the
key axis the attention mask must cover).

- ``StaticCache`` (graph mode and pynative): fixed (B, N_kv, max_length, D) buffers per layer, written in place
  at ``cache_position``. Every decode step has the same shapes, so a ``mindspore.jit`` step compiles once, and
  the write costs the same at token 10 and token 9000. Attention always reads all ``max_length`` slots; the
  model's mask hides the slots not yet written.

  How the write is done matters on CPU, where every alternative copies the whole buffer each step (its cost then
  grows with ``max_length``): ``ScatterNdUpdate`` on the 4-D buffer copies it, and ``ScatterUpdate`` needs a flat
  buffer whose reshape back to 4-D copies it (graph mode does not alias a reshaped Parameter). ``IndexAdd`` along
  the slot axis updates the 4-D Parameter in place, so a slot is written by adding into zeros: **slots are
  write-once between** ``reset()`` calls (``generate`` resets the cache before each use, and each generation
  writes slot t once).

  Keys may be stored transposed, (B, N_kv, D, max_length) (``transposed_keys``, the default where attention is
  the math backend): the scores are then q @ K with a plain BatchMatMul, which reads a long cache twice as fast
  on CPU as q @ Kᵀ with ``transpose_b``. The Ascend kernels take keys as stored (BNSD), so there they are not.
- ``DynamicCache`` (pynative only): per-layer tensors that grow by concatenation, as the original (HF
  ``DynamicCache``). Shapes change every step, so under ``jit`` each step would recompile.
"""

import numpy as np

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ..nn.attention import default_backend


class StaticCache(nn.Cell):
    """Preallocated cache for ``num_layers`` layers of (batch_size, num_kv_heads, max_length, head_dim) values and
    keys of that shape or, if ``transposed_keys``, (batch_size, num_kv_heads, head_dim, max_length)."""

    is_static = True

    def __init__(self, num_layers, batch_size, num_kv_heads, head_dim, max_length, dtype=ms.float32,
                 transposed_keys=False):
        super().__init__()
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_length = max_length
        self.transposed_keys = transposed_keys
        value_shape = (batch_size, num_kv_heads, max_length, head_dim)
        key_shape = (batch_size, num_kv_heads, head_dim, max_length) if transposed_keys else value_shape

        def buffers(kind, shape):
            return ParameterTuple([
                Parameter(Tensor(np.zeros(shape), dtype), name=f"{kind}_cache.{i}", requires_grad=False)
                for i in range(num_layers)
            ])

        self.key_cache = buffers("key", key_shape)
        self.value_cache = buffers("value", value_shape)
        # In place on the Parameters (see the module docstring), along each buffer's slot axis.
        self.key_slot_axis = 3 if transposed_keys else 2
        self.write_key = ops.IndexAdd(axis=self.key_slot_axis)
        self.write_value = ops.IndexAdd(axis=2)

    @classmethod
    def for_model(cls, config, batch_size, max_length, dtype=ms.float32, transposed_keys=None):
        """``transposed_keys`` None: transposed where the device's attention is the math backend (CPU)."""
        if transposed_keys is None:
            transposed_keys = default_backend() == "math"
        return cls(config.num_hidden_layers, batch_size, config.num_key_value_heads, config.head_dim, max_length,
                   dtype, transposed_keys)

    def update(self, key, value, layer_idx, cache_position):
        """Write key/value (B, N_kv, q, D) into the empty slots ``cache_position`` (q,); return the full buffers."""
        slots = cache_position.astype(ms.int32)
        keys, values = self.key_cache[layer_idx], self.value_cache[layer_idx]
        if self.transposed_keys:
            key = key.transpose(0, 1, 3, 2)
        keys = ops.depend(keys, self.write_key(keys, slots, key.astype(keys.dtype)))
        values = ops.depend(values, self.write_value(values, slots, value.astype(values.dtype)))
        return keys, values

    def copy_from(self, other):
        """Fill this (longer, empty) cache with the slots of ``other``, e.g. when a generation outgrows it."""
        if (other.max_length > self.max_length or other.transposed_keys != self.transposed_keys
                or other.num_layers != self.num_layers):
            raise ValueError("copy_from needs a cache of the same layout and at most this cache's length")
        pairs = [(src, dst, self.key_slot_axis) for src, dst in zip(other.key_cache, self.key_cache)]
        pairs += [(src, dst, 2) for src, dst in zip(other.value_cache, self.value_cache)]
        for source, target, axis in pairs:
            shape = list(source.shape)
            shape[axis] = self.max_length - other.max_length
            ops.assign(target, ops.cat((source, ops.zeros(tuple(shape), source.dtype)), axis=axis))

    def key_length(self, query_length):
        return self.max_length

    def get_seq_length(self):
        raise ValueError("a StaticCache does not track how many tokens it holds: pass cache_position explicitly")

    def reset(self):
        """Zero every buffer (e.g. before reusing the cache for a new batch of prompts)."""
        # In place (Assign), not set_data: a compiled step keeps writing into the buffers it was built with.
        for param in tuple(self.key_cache) + tuple(self.value_cache):
            ops.assign(param, ops.zeros_like(param))


class DynamicCache:
    """Growing cache (pynative only): each update concatenates along the sequence axis."""

    is_static = False
    transposed_keys = False

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
