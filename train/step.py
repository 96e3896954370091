"""One optimizer step: forward + backward per micro-batch, then unscale, overflow check, clipping, AdamW.

The loss is normalised by the number of supervised tokens of the whole optimizer step (all micro-batches), as
transformers does since it fixed gradient accumulation: accumulating 2 batches of 1 then equals one batch of 2.
Each micro-batch therefore contributes ``sum of its token losses * loss_scale / tokens_of_the_step``, and the
accumulated gradient is divided by ``loss_scale`` once. The step runs compiled (``--mode 0``, one graph per
shape) or op by op (``--mode 1``) with the same numbers.
"""

import mindspore as ms
from mindspore import Parameter, Tensor, ops

from .sequences import IGNORE_INDEX


def token_loss_sum(logits, targets):
    """Sum of next-token cross-entropies over the supervised positions (targets already shifted)."""
    vocab = logits.shape[-1]
    return ops.cross_entropy(logits.reshape(-1, vocab).astype(ms.float32), targets.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="sum")


class TrainStep:
    """``step(micro_batches, lr, loss_scale)`` -> (loss, grad_norm, finite) of one optimizer step."""

    def __init__(self, model, optimizer, max_grad_norm=0.0, compiled=True):
        self.model = model
        self.optimizer = optimizer
        self.max_grad_norm = float(max_grad_norm or 0.0)
        params = optimizer.params
        self._grad = ms.value_and_grad(self._forward, None, params, has_aux=True)
        self._accumulators = None
        wrap = ms.jit if compiled else (lambda f: f)
        self._first = wrap(self._micro_first)
        self._middle = wrap(self._micro_middle)
        self._last = wrap(self._micro_last)
        self._single = wrap(self._micro_single)

    # ---- the pieces (each one compiled graph) ----------------------------------------------------------------
    def _forward(self, input_ids, attention_mask, targets, weight):
        _, logits, _ = self.model(input_ids, attention_mask)
        loss_sum = token_loss_sum(logits, targets)
        return loss_sum * weight, loss_sum

    def _micro_first(self, input_ids, attention_mask, targets, weight):
        (_, loss_sum), grads = self._grad(input_ids, attention_mask, targets, weight)
        for acc, g in zip(self._accumulators, grads):
            ops.assign(acc, g.astype(ms.float32))
        return loss_sum

    def _micro_middle(self, input_ids, attention_mask, targets, weight):
        (_, loss_sum), grads = self._grad(input_ids, attention_mask, targets, weight)
        for acc, g in zip(self._accumulators, grads):
            ops.assign_add(acc, g.astype(ms.float32))
        return loss_sum

    def _micro_last(self, input_ids, attention_mask, targets, weight, lr, loss_scale):
        (_, loss_sum), grads = self._grad(input_ids, attention_mask, targets, weight)
        grads = tuple(acc + g.astype(ms.float32) for acc, g in zip(self._accumulators, grads))
        return (loss_sum,) + self._apply(grads, lr, loss_scale)

    def _micro_single(self, input_ids, attention_mask, targets, weight, lr, loss_scale):
        (_, loss_sum), grads = self._grad(input_ids, attention_mask, targets, weight)
        return (loss_sum,) + self._apply(grads, lr, loss_scale)

    def _apply(self, grads, lr, loss_scale):
        grads = tuple(g.astype(ms.float32) / loss_scale for g in grads)
        finite = ms.amp.all_finite(grads)
        squares = Tensor(0.0, ms.float32)
        for g in grads:
            squares = squares + ops.reduce_sum(g * g)
        norm = ops.sqrt(squares)
        if self.max_grad_norm > 0:
            # torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6), never up.
            coef = ops.minimum(self.max_grad_norm / (norm + 1e-6), 1.0)
            grads = tuple(g * coef for g in grads)
        self.optimizer(grads, lr, finite)
        return norm, finite

    # ---- one optimizer step ----------------------------------------------------------------------------------
    def step(self, micro_batches, lr, loss_scale=1.0):
        """``micro_batches``: list of (input_ids, attention_mask, targets) int32 numpy arrays."""
        tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, _, targets in micro_batches)
        weight = Tensor(loss_scale / max(tokens, 1), ms.float32)
        lr, scale = Tensor(lr, ms.float32), Tensor(loss_scale, ms.float32)
        inputs = [tuple(Tensor(x, ms.int32) for x in batch) for batch in micro_batches]
        total = 0.0
        if len(inputs) == 1:
            loss_sum, norm, finite = self._single(*inputs[0], weight, lr, scale)
        else:
            if self._accumulators is None:
                self._accumulators = ms.ParameterTuple(
                    Parameter(ops.zeros(p.shape, ms.float32), name=f"accumulated.{p.name}", requires_grad=False)
                    for p in self.optimizer.params)
            total += float(self._first(*inputs[0], weight).asnumpy())
            for batch in inputs[1:-1]:
                total += float(self._middle(*batch, weight).asnumpy())
            loss_sum, norm, finite = self._last(*inputs[-1], weight, lr, scale)
        total += float(loss_sum.asnumpy())
        return total / max(tokens, 1), float(norm.asnumpy()), bool(finite.asnumpy()), tokens
