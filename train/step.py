"""One optimizer step: forward + backward per micro-batch, then unscale, overflow check, clipping, AdamW.

The loss is normalised by the number of supervised tokens of the whole optimizer step (all micro-batches), as
transformers does since it fixed gradient accumulation: accumulating 2 batches of 1 then equals one batch of 2.
Each micro-batch therefore contributes ``sum of its token losses * loss_scale / tokens_of_the_step``, and the
accumulated gradient is divided by ``loss_scale`` once. The step runs compiled (``--mode 0``, one graph per
shape) or op by op (``--mode 1``) with the same numbers.
"""

import mindspore as ms
from mindspore import Parameter, Tensor, ops

from emu3.parallel.zero import sum_of_squares

from .sequences import IGNORE_INDEX


_CROSS_ENTROPY_KERNEL = None  # train/kernels/cross_entropy.cc as a Custom op, once use_cross_entropy_kernel built it


def token_loss_sum(logits, targets):
    """Sum of next-token cross-entropies over the supervised positions (targets already shifted)."""
    vocab = logits.shape[-1]
    logits, targets = logits.reshape(-1, vocab).astype(ms.float32), targets.reshape(-1)
    if _CROSS_ENTROPY_KERNEL is not None:
        return _CROSS_ENTROPY_KERNEL(logits, targets)[0].sum()
    return ops.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


def use_cross_entropy_kernel():
    """On the CPU, ``token_loss_sum`` computes through train/kernels/cross_entropy.cc: one pass over the logits
    forward and one backward, where ops.cross_entropy's graph makes seven (the same loss to fp32 rounding).
    ``EMU3_CROSS_ENTROPY_KERNEL=0`` keeps ops.cross_entropy; so does a machine without a C++ compiler (with a note).
    Called before the first graph is compiled (a compiled graph keeps the choice it was traced with)."""
    global _CROSS_ENTROPY_KERNEL
    from emu3.native import cpu_kernel

    from . import KERNELS_DIR

    if _CROSS_ENTROPY_KERNEL is not None:
        return
    path = cpu_kernel("cross_entropy", "EMU3_CROSS_ENTROPY_KERNEL",
                      "the loss runs without its cross-entropy CPU kernel (slower, the same loss to fp32 rounding)",
                      KERNELS_DIR)
    if path is None:
        return
    backward = ops.Custom(f"{path}:CrossEntropyBackward", out_shape=lambda logits, *rest: logits,
                          out_dtype=lambda *dtypes: ms.float32, func_type="aot")

    def bprop(logits, targets, out, dout):
        return backward(logits, targets, out[1], dout[0]), ops.zeros_like(targets)

    _CROSS_ENTROPY_KERNEL = ops.Custom(f"{path}:CrossEntropyForward",
                                       out_shape=lambda logits, targets: ((logits[0],), (logits[0],)),
                                       out_dtype=lambda *dtypes: (ms.float32, ms.float32), func_type="aot",
                                       bprop=bprop)


def squared_sum(grads):
    """Sum of squares of every gradient, in fp32: one loop over the tuple it is given (a graph that first builds a
    new tuple of hundreds of gradients compiles many times slower)."""
    squares = Tensor(0.0, ms.float32)
    for g in grads:
        squares = squares + sum_of_squares(g)
    return squares


class ClippedUpdate:
    """``update(lr, loss_scale, grads)`` -> the global gradient norm (before clipping), after unscaling, clipping
    to the global norm as torch.nn.utils.clip_grad_norm_ (scale by max_norm / (norm + 1e-6), never up; 0 = off)
    and ``optimizer`` (called with ``grads * clip / loss_scale``), then ``after()`` (ZeRO's publish).

    Two compiled graphs, the norm then the update: in one graph, the update depending on a reduction over every
    gradient compiles superlinearly in the parameter count (for a vision tokenizer of 285 parameters, several times
    longer than the two graphs together: docs/design.md). ``squared_norm(grads)``: the sum of squares of the
    still loss-scaled gradients over every rank's shards (default ``squared_sum``; the norm is unscaled once, not
    each gradient); ``fused``: compile both with operator fusion where available (``emu3.device.FusedJit``: they
    are long elementwise chains over the weights and gradients).
    """

    def __init__(self, optimizer, max_grad_norm=0.0, compiled=True, squared_norm=squared_sum, after=None,
                 fused=False):
        from emu3.device import FusedJit

        self.optimizer = optimizer
        self.max_grad_norm = float(max_grad_norm or 0.0)
        self.squared_norm = squared_norm
        self.after = after
        if not compiled:
            self._norm, self._update = self._norm_and_scale, self._apply
        else:
            low_precision = any(optimizer.has_master)
            jit = (lambda fn: FusedJit(fn, low_precision)) if fused else ms.jit
            self._norm, self._update = jit(self._norm_and_scale), jit(self._apply)

    def _norm_and_scale(self, loss_scale, *grads):
        norm = ops.sqrt(self.squared_norm(grads)) / loss_scale
        clip = Tensor(1.0, ms.float32)
        if self.max_grad_norm > 0:
            clip = ops.minimum(self.max_grad_norm / (norm + 1e-6), 1.0)
        return norm, clip / loss_scale

    def _apply(self, lr, grad_scale, *grads):
        step = self.optimizer(grads, lr, grad_scale)
        if self.after is not None:
            self.after()
        return step

    def __call__(self, lr, loss_scale, grads):
        norm, grad_scale = self._norm(Tensor(loss_scale, ms.float32), *grads)
        self._update(Tensor(lr, ms.float32), grad_scale, *grads)
        return norm


class TrainStep:
    """``step(micro_batches, lr, loss_scale)`` -> (loss, grad_norm, finite, supervised tokens) of one optimizer step.

    ``plan`` (``emu3.parallel.zero.ZeroPlan``) says which parameters backward differentiates, how their
    gradients are reduced over the ranks and what the optimizer updates; ``forward`` is the model or its
    sequence-parallel wrapper. Losses and token counts are summed over all ranks, so the loss is the global
    mean and every rank's gradient contribution is weighted by the step's global token count.

    Compiled graphs per step: forward + backward (gradients stay device tensors), then the gradient norm and the
    update (``ClippedUpdate``: unscale, clipping, AdamW). All are compiled with operator fusion where it is
    available (``emu3.device.FusedJit``; fp32 only): the update is elementwise work over every parameter (~20
    passes over the weights unfused), and around the matmuls of forward + backward are hundreds of elementwise
    kernels (RMSNorm, RoPE, SwiGLU and their gradients); fused, the tiny world's LLM step took 30 % less time and
    the 56 M model's 40 % less (docs/design.md). ``guard_overflow`` (fp16 /
    loss scaling) checks the gradients for inf/NaN in the first graph; an overflowing step is then skipped on the
    host, so the update graph has no branch (and AKG, which cannot compile a broadcast Select, fuses it). Without
    it the update is unconditional, as torch's.
    """

    def __init__(self, model, optimizer, max_grad_norm=0.0, compiled=True, guard_overflow=True, plan=None,
                 forward=None):
        from emu3.device import FusedJit, has_low_precision_parameters
        from emu3.parallel.zero import ZeroPlan

        use_cross_entropy_kernel()
        self.model = forward or model
        self.optimizer = optimizer
        self.plan = plan or ZeroPlan(model)
        self.guard_overflow = bool(guard_overflow)
        self._grad = ms.value_and_grad(self._forward, None, self.plan.weights, has_aux=True)
        self._accumulators = None
        low_precision = has_low_precision_parameters(model)  # fp16/bf16 graphs compile without fusion
        wrap = (lambda f: FusedJit(f, low_precision)) if compiled else (lambda f: f)
        self._first = wrap(self._micro_first)
        self._middle = wrap(self._micro_middle)
        self._last = wrap(self._micro_last)
        self._single = wrap(self._micro_single)
        self._loss_sum = wrap(self._evaluation_loss_sum)
        self._update = ClippedUpdate(optimizer, max_grad_norm, compiled, self.plan.squared_norm, self.plan.publish,
                                     fused=True)

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

    def _micro_last(self, input_ids, attention_mask, targets, weight):
        (_, loss_sum), grads = self._grad(input_ids, attention_mask, targets, weight)
        grads = self.plan.reduce(tuple(acc + g.astype(ms.float32) for acc, g in zip(self._accumulators, grads)))
        return (self.plan.sum_over_ranks(loss_sum), self._finite(grads)) + grads

    def _micro_single(self, input_ids, attention_mask, targets, weight):
        (_, loss_sum), grads = self._grad(input_ids, attention_mask, targets, weight)
        grads = self.plan.reduce(grads)
        return (self.plan.sum_over_ranks(loss_sum), self._finite(grads)) + tuple(grads)

    def _evaluation_loss_sum(self, input_ids, attention_mask, targets):
        _, logits, _ = self.model(input_ids, attention_mask)
        return token_loss_sum(logits, targets)

    def _finite(self, grads):
        return self.plan.all_finite(grads) if self.guard_overflow else Tensor(True)

    def loss_sum(self, input_ids, attention_mask, targets):
        """Forward only: this rank's summed token loss of one batch (numpy arrays, as ``step`` takes them)."""
        return float(self._loss_sum(*(Tensor(x, ms.int32) for x in (input_ids, attention_mask, targets))).asnumpy())

    # ---- one optimizer step ----------------------------------------------------------------------------------
    def step(self, micro_batches, lr, loss_scale=1.0):
        """``micro_batches``: list of (input_ids, attention_mask, targets) int32 numpy arrays (under sequence
        parallelism: this rank's slice of input_ids and targets, the whole attention_mask)."""
        tokens = int(self.plan.host_sum(sum(int((targets != IGNORE_INDEX).sum()) for _, _, targets in micro_batches)))
        weight = Tensor(loss_scale / max(tokens, 1), ms.float32)
        inputs = [tuple(Tensor(x, ms.int32) for x in batch) for batch in micro_batches]
        total = 0.0
        if len(inputs) == 1:
            loss_sum, finite, *grads = self._single(*inputs[0], weight)
        else:
            if self._accumulators is None:
                self._accumulators = ms.ParameterTuple(
                    Parameter(ops.zeros(p.shape, ms.float32), name=f"accumulated.{p.name}", requires_grad=False)
                    for p in self.plan.weights)
            total += self.plan.host_sum(self._first(*inputs[0], weight))
            for batch in inputs[1:-1]:
                total += self.plan.host_sum(self._middle(*batch, weight))
            loss_sum, finite, *grads = self._last(*inputs[-1], weight)
        total += float(loss_sum.asnumpy())
        if not bool(finite.asnumpy()):  # an fp16 overflow: no update at all (moments and step count included)
            return total / max(tokens, 1), float("inf"), False, tokens
        norm = self._update(lr, loss_scale, grads)
        return total / max(tokens, 1), float(norm.asnumpy()), True, tokens
