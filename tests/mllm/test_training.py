"""The LLM is ready to be trained: gradients of the SFT loss match the PyTorch oracle's, in pynative, in a compiled
train step, and with every decoder layer recomputed (what the training suite applies from outside).

The oracle is HF transformers' Emu3ForCausalLM (tiny GQA config, random weights, dropout 0 so that training mode
is deterministic). Its embedding has ``padding_idx = pad_token_id``, so PyTorch gives the pad row no gradient,
even where the pad id is a real token of the sample; the batch below has such a token, which checks we do the same.
"""

import numpy as np
import pytest
import torch

import mindspore as ms
from mindspore import Tensor

from emu3.mllm.configuration_emu3 import Emu3Config
from emu3.mllm.modeling_emu3 import Emu3ForCausalLM
from llm_reference import SMALL_VOCAB_IMAGE_IDS, make_reference

PAD = 0


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("emu3_llm_train"))
    config = Emu3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        pad_token_id=PAD, bos_token_id=1, eos_token_id=2, attention_dropout=0.0,
                        **SMALL_VOCAB_IMAGE_IDS)
    oracle = make_reference(config, directory, seed=3)
    return directory, oracle


@pytest.fixture(scope="module")
def batch():
    """A left-padded SFT batch: labels ignore the padding and a prompt span (loss on the response only)."""
    rng = np.random.default_rng(7)
    ids = rng.integers(3, 300, size=(2, 12))
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = PAD
    positions = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)
    # The pad id also as a real, attended token (Emu3's pad id is <|endoftext|>, which ends every SFT sample).
    ids[0, 8] = PAD
    labels = np.where(mask == 1, ids, -100)
    labels[:, :6] = -100  # the prompt
    return ids, mask, positions, labels


@pytest.fixture(scope="module")
def oracle_grads(pair, batch):
    _, oracle = pair
    oracle.train()
    oracle.zero_grad()
    ids, mask, positions, labels = (torch.from_numpy(np.asarray(x, np.int64)) for x in batch)
    loss = oracle(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels, use_cache=False).loss
    loss.backward()
    return float(loss.detach()), {name: p.grad.numpy().copy() for name, p in oracle.named_parameters()}


def _ours(pair):
    model = Emu3ForCausalLM.from_pretrained(pair[0])
    model.set_train(True)
    return model


def _grad_fn(model):
    def loss_fn(ids, mask, positions, labels):
        return model(ids, mask, positions, labels=labels)[0]

    return ms.value_and_grad(loss_fn, None, model.trainable_params())


def _check(model, loss, grads, oracle_grads):
    ref_loss, ref = oracle_grads
    assert abs(float(loss.asnumpy()) - ref_loss) < 1e-5
    names = [p.name for p in model.trainable_params()]
    assert sorted(names) == sorted(ref), "every trainable tensor has a gradient under its released name"
    for name, grad in zip(names, grads):
        expected = ref[name]
        np.testing.assert_allclose(grad.asnumpy(), expected, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(expected).max()),
                                   err_msg=name)
    pad_row = dict(zip(names, grads))["model.embed_tokens.weight"].asnumpy()[PAD]
    assert not pad_row.any(), "the padding row of the embedding gets no gradient (PyTorch padding_idx)"


def _as_tensors(batch):
    return tuple(Tensor(np.asarray(x), ms.int32) for x in batch)


def test_gradients_match_oracle_pynative(pair, batch, oracle_grads):
    model = _ours(pair)
    loss, grads = _grad_fn(model)(*_as_tensors(batch))
    _check(model, loss, grads, oracle_grads)


@pytest.mark.parametrize("recompute", [False, True], ids=["plain", "recompute"])
def test_gradients_match_oracle_in_a_compiled_step(pair, batch, oracle_grads, recompute):
    model = _ours(pair)
    if recompute:
        for layer in model.model.layers:
            layer.recompute()
    grad_fn = _grad_fn(model)

    @ms.jit
    def train_step(ids, mask, positions, labels):
        return grad_fn(ids, mask, positions, labels)

    loss, grads = train_step(*_as_tensors(batch))
    _check(model, loss, grads, oracle_grads)
