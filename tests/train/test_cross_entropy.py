"""The cross-entropy CPU kernel (train/kernels/cross_entropy.cc) against ops.cross_entropy: loss and gradient,
ignored positions, bad targets, and the switch that keeps the portable loss."""

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from native_kernels import assert_note_names_the_missing_compiler, needs_kernel, without_compiler
from train import KERNELS_DIR, step
from train.sequences import IGNORE_INDEX


@pytest.fixture
def kernel_state(monkeypatch):
    """Each test chooses the loss afresh (the choice is per process) and leaves it as it found it."""
    monkeypatch.setattr(step, "_CROSS_ENTROPY_KERNEL", None)
    yield


def _batch(vocab=1000, seed=0):  # 1000 = 62 blocks of 16 lanes and a partial one
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((2, 9, vocab)) * 4).astype(np.float32)
    targets = rng.integers(0, vocab, (2, 9)).astype(np.int32)
    targets[0, :4] = IGNORE_INDEX  # a prompt
    targets[1, 7:] = IGNORE_INDEX  # padding
    targets[1, 0] = vocab - 1  # the last row of the vocabulary
    return Tensor(logits), Tensor(targets)


def _loss_and_grad(logits, targets, compiled):
    def loss(x):
        return step.token_loss_sum(x, targets)

    fn = ms.value_and_grad(loss)
    loss, grad = (ms.jit(fn) if compiled else fn)(logits)
    return float(loss.asnumpy()), grad.asnumpy()


@needs_kernel("cross_entropy", KERNELS_DIR)
@pytest.mark.parametrize("compiled", [True, False], ids=["graph", "pynative"])
def test_kernel_equals_portable_loss_and_gradient(kernel_state, compiled):
    logits, targets = _batch()
    portable = _loss_and_grad(logits, targets, compiled)
    step.use_cross_entropy_kernel()
    assert step._CROSS_ENTROPY_KERNEL is not None
    fused = _loss_and_grad(logits, targets, compiled)
    assert fused[0] == pytest.approx(portable[0], rel=1e-6)
    np.testing.assert_allclose(fused[1], portable[1], rtol=1e-5, atol=1e-7)
    ignored = targets.asnumpy() == IGNORE_INDEX
    assert not fused[1][ignored].any()  # ignored positions get no gradient at all
    np.testing.assert_allclose(fused[1][~ignored].sum(-1), 0.0, atol=1e-5)  # softmax - one-hot sums to 0 per row


@needs_kernel("cross_entropy", KERNELS_DIR)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_kernel_takes_either_target_width(kernel_state, dtype):
    logits, targets = _batch(vocab=37)
    step.use_cross_entropy_kernel()
    wide = Tensor(targets.asnumpy().astype(dtype))
    expected = float(ms.ops.cross_entropy(logits.reshape(-1, 37), wide.reshape(-1), ignore_index=IGNORE_INDEX,
                                          reduction="sum").asnumpy())
    assert float(step.token_loss_sum(logits, wide).asnumpy()) == pytest.approx(expected, rel=1e-6)


@needs_kernel("cross_entropy", KERNELS_DIR)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_non_finite_logit_makes_its_row_nan(kernel_state, bad_value):
    """fp16 loss scaling skips a step by the non-finite gradient an overflowed logit leaves: the kernel keeps it."""
    logits, targets = _batch()
    values = logits.asnumpy()
    values[1, 2, 5] = bad_value
    step.use_cross_entropy_kernel()
    loss, grad = _loss_and_grad(Tensor(values), targets, compiled=False)
    assert np.isnan(loss)
    assert np.isnan(grad[1, 2]).all() and np.isfinite(np.delete(grad.reshape(-1, 1000), 11, axis=0)).all()


@needs_kernel("cross_entropy", KERNELS_DIR)
def test_kernel_exp_is_accurate_over_its_whole_range(kernel_state):
    """One logit at 0 and the rest spread over [-100, 0]: the gradient is the softmax (minus the one-hot), as exact
    as ops.cross_entropy's (both round x - log-sum-exp to fp32 first); values below fp32's normal range are 0."""
    x = np.concatenate([[0.0], np.linspace(-100, 0, 20000, endpoint=False)]).astype(np.float32)
    logits = Tensor(x[None, None, :])
    targets = Tensor(np.array([[0]], np.int32))
    step.use_cross_entropy_kernel()
    _, grad = _loss_and_grad(logits, targets, compiled=False)
    softmax = np.exp(x.astype(np.float64)) / np.exp(x.astype(np.float64)).sum()
    softmax[0] -= 1
    portable = ms.ops.grad(lambda v: ms.ops.cross_entropy(v, targets.reshape(-1), reduction="sum"))(
        logits.reshape(1, -1)).asnumpy().reshape(-1)
    normal = np.abs(softmax) > 1e-37
    ours = np.abs(grad.reshape(-1)[normal] / softmax[normal] - 1)
    theirs = np.abs(portable[normal] / softmax[normal] - 1)
    assert ours.max() <= max(theirs.max(), 1e-6), (ours.max(), theirs.max())
    assert np.abs(grad.reshape(-1)[~normal]).max() < 1e-37


@needs_kernel("cross_entropy", KERNELS_DIR)
def test_kernel_refuses_a_target_outside_the_vocabulary(kernel_state):
    logits, targets = _batch(vocab=50)
    bad = targets.asnumpy()
    bad[0, 5] = 50
    step.use_cross_entropy_kernel()
    with pytest.raises(RuntimeError):
        step.token_loss_sum(logits, Tensor(bad)).asnumpy()


def test_switch_keeps_the_portable_loss(kernel_state, monkeypatch):
    monkeypatch.setenv("EMU3_CROSS_ENTROPY_KERNEL", "0")
    step.use_cross_entropy_kernel()
    assert step._CROSS_ENTROPY_KERNEL is None


def test_no_compiler_keeps_the_portable_loss_and_says_why(kernel_state, monkeypatch, tmp_path, capsys):
    without_compiler(monkeypatch, tmp_path)
    step.use_cross_entropy_kernel()
    assert step._CROSS_ENTROPY_KERNEL is None
    assert_note_names_the_missing_compiler(capsys, "without its cross-entropy CPU kernel")
