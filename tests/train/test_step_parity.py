"""Three optimizer steps of our train step = three steps of the original recipe in PyTorch on the same batch.

The oracle is HF transformers' Emu3ForCausalLM trained the way HF Trainer trains it: AdamW with the Trainer's
weight-decay groups (no decay on biases and norm weights), ``get_scheduler("cosine_with_min_lr")`` with warmup,
``clip_grad_norm_`` before each step. Compared in graph and pynative mode; then gradient accumulation (2 x 1 = one
batch of 2), recompute (on = off) and an fp16 overflow (the step is skipped, nothing moves).
"""

import numpy as np
import pytest
import torch
from transformers import Trainer, get_scheduler

import mindspore as ms

from emu3.mllm.configuration_emu3 import Emu3Config
from emu3.mllm.modeling_emu3 import Emu3ForCausalLM
from llm_reference import SMALL_VOCAB_IMAGE_IDS, make_reference
from train.data import next_token_targets
from train.optim import AdamW, decays
from train.schedules import learning_rates
from train.step import TrainStep

LR, MIN_LR, WARMUP, TOTAL, WD, BETAS, EPS, MAX_NORM = 1e-2, 1e-3, 1, 5, 0.1, (0.9, 0.95), 1e-6, 0.5
STEPS = 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("train_parity"))
    config = Emu3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, attention_dropout=0.0,
                        **SMALL_VOCAB_IMAGE_IDS)
    oracle = make_reference(config, directory, seed=11)
    return directory, oracle


@pytest.fixture(scope="module")
def batch():
    """Two right-padded samples; the first tokens of each are a prompt (not supervised)."""
    rng = np.random.default_rng(5)
    ids = rng.integers(3, 256, size=(2, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    ids[1, 11:] = 0
    labels = np.where(mask == 1, ids, -100).astype(np.int32)
    labels[0, :5] = -100
    labels[1, :3] = -100
    return ids, mask, labels


@pytest.fixture(scope="module")
def oracle_after_steps(reference, batch):
    _, oracle = reference
    oracle.train()
    decay = set(Trainer.get_decay_parameter_names(None, oracle))
    groups = [{"params": [p for n, p in oracle.named_parameters() if n in decay], "weight_decay": WD},
              {"params": [p for n, p in oracle.named_parameters() if n not in decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    sched = get_scheduler("cosine_with_min_lr", opt, num_warmup_steps=WARMUP, num_training_steps=TOTAL,
                          scheduler_specific_kwargs={"min_lr": MIN_LR})
    ids, mask, labels = (torch.from_numpy(x.astype(np.int64)) for x in batch)
    losses, lrs = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = oracle(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(oracle.parameters(), MAX_NORM)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses, lrs, decay, {n: p.detach().numpy().copy() for n, p in oracle.named_parameters()}


def _ours(directory, recompute=False):
    model = Emu3ForCausalLM.from_pretrained(directory)
    model.set_train(True)
    if recompute:
        for layer in model.model.layers:
            layer.recompute()
    return model


def _train(model, micro_batches, compiled=True, steps=STEPS):
    optimizer = AdamW(model.trainable_params(), weight_decay=WD, betas=BETAS, eps=EPS)
    step = TrainStep(model, optimizer, max_grad_norm=MAX_NORM, compiled=compiled)
    lrs = learning_rates(LR, "cosine_with_min_lr", WARMUP, TOTAL, MIN_LR)
    losses = [step.step(micro_batches, lrs[s])[0] for s in range(steps)]
    return losses, lrs


def _assert_params_equal(model, expected, atol=2e-5):
    for p in model.trainable_params():
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-4, atol=atol, err_msg=p.name)


def test_weight_decay_groups_are_transformers(reference, oracle_after_steps):
    model = _ours(reference[0])
    decay = oracle_after_steps[2]
    assert {p.name for p in model.trainable_params() if decays(p.name)} == decay
    assert "model.norm.weight" not in decay and "model.layers.0.input_layernorm.weight" not in decay
    assert "model.embed_tokens.weight" in decay  # rows no sample touches decay too


@pytest.mark.parametrize("compiled", [True, False], ids=["graph", "pynative"])
def test_three_steps_equal_torch(reference, batch, oracle_after_steps, compiled):
    ref_losses, ref_lrs, _, ref_params = oracle_after_steps
    model = _ours(reference[0])
    ids, mask, labels = batch
    losses, lrs = _train(model, [(ids, mask, next_token_targets(labels))], compiled)
    np.testing.assert_allclose(lrs[:STEPS], ref_lrs, rtol=1e-12)
    assert lrs[0] == 0.0, "warmup 1 = lr 0 on step 1, as HF's LambdaLR"
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    _assert_params_equal(model, ref_params)


def test_accumulating_two_batches_of_one_equals_one_batch_of_two(reference, batch, oracle_after_steps):
    ref_params = oracle_after_steps[3]
    model = _ours(reference[0])
    ids, mask, labels = batch
    targets = next_token_targets(labels)
    _train(model, [(ids[:1], mask[:1], targets[:1]), (ids[1:], mask[1:], targets[1:])])
    _assert_params_equal(model, ref_params)


def test_recompute_equals_no_recompute(reference, batch, oracle_after_steps):
    model = _ours(reference[0], recompute=True)
    ids, mask, labels = batch
    _train(model, [(ids, mask, next_token_targets(labels))])
    _assert_params_equal(model, oracle_after_steps[3])


def test_fp16_overflow_skips_the_step(reference, batch):
    from emu3.nn.precision import PrecisionPolicy, apply_precision

    model = _ours(reference[0])
    apply_precision(model, PrecisionPolicy(param_dtype=ms.float16))
    optimizer = AdamW(model.trainable_params(), weight_decay=WD, betas=BETAS, eps=EPS)
    step = TrainStep(model, optimizer, max_grad_norm=MAX_NORM)
    ids, mask, labels = batch
    micro = [(ids, mask, next_token_targets(labels))]
    before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    loss, norm, finite, _ = step.step(micro, 1e-3, loss_scale=2.0 ** 40)  # fp16 gradients overflow
    assert not finite
    for p in model.trainable_params():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)
    assert float(optimizer.step.asnumpy()) == 0.0 and not optimizer.exp_avg[0].asnumpy().any()
    loss, norm, finite, _ = step.step(micro, 1e-3, loss_scale=1024.0)  # a sane scale trains again
    assert finite and np.isfinite(loss)
    assert float(optimizer.step.asnumpy()) == 1.0
    moved = [p.name for p in model.trainable_params() if not np.array_equal(p.asnumpy(), before[p.name])]
    assert len(moved) == len(before)
    assert all(m.dtype == ms.float32 for m in optimizer.master)


def test_fused_step_equals_unfused(reference, batch, monkeypatch):
    """The train step's graphs are compiled with operator fusion (``emu3.device.FusedJit``) where it is available;
    fused, AKG's exp/log put the loss 5e-6 off and its broadcast Select (the padding rows' zero gradient) dropped
    random embedding rows' gradients (the gradient norm fell by half), until both were kept out of fused kernels."""
    from emu3.device import operator_fusion

    if not operator_fusion():
        pytest.skip("operator fusion is not available here")
    ids, mask, labels = batch
    micro = [(ids, mask, next_token_targets(labels))]
    results = {}
    for fusion in ("0", "1"):
        monkeypatch.setenv("EMU3_OPERATOR_FUSION", fusion)  # read when the step's graphs compile (first call)
        model = _ours(reference[0])
        step = TrainStep(model, AdamW(model.trainable_params(), weight_decay=WD, betas=BETAS, eps=EPS),
                         max_grad_norm=MAX_NORM)
        results[fusion] = [step.step(micro, LR)[:2] for _ in range(2)]  # (loss, gradient norm) of two steps
    for (loss, norm), (fused_loss, fused_norm) in zip(results["0"], results["1"]):
        assert fused_loss == pytest.approx(loss, rel=1e-6)
        assert fused_norm == pytest.approx(norm, rel=1e-5)
