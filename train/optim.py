"""AdamW as torch's, HF's weight-decay groups (the learning-rate schedules: ``train/schedules.py``).

Why our own AdamW: ``mindspore.nn.AdamWeightDecay`` (what mindone's ``create_optimizer`` builds) has no bias
correction, so its first steps move parameters differently from the original recipe's torch AdamW; mindone's
``adamw_mint`` / ``adamw_bf16`` need kernels that CPU lacks. This one is a Cell (it compiles into the train step),
keeps fp32 moments, and fp32 master weights for parameters stored in fp16/bf16.

On the CPU the update of fp32 parameters runs in place, one C++ kernel pass per parameter
(``train/kernels/adamw_inplace.cc``, built by ``emu3/native.py``): MindSpore's graph would compute the new weight
and moments into fresh buffers and copy them back (Assign), and on the CPU those copies cost as much as the update
(the 56 M model's norm + update: 93 -> 73 ms). Same arithmetic as the portable update below; ``EMU3_INPLACE_ADAMW=0``
(or no C++ compiler) keeps the portable one.
"""

import os
import re

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

# transformers' Trainer.get_decay_parameter_names: no decay for biases and every norm weight.
_NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


def decays(name):
    return not any(re.search(pattern, name.lower()) for pattern in _NO_DECAY_PATTERNS)


class AdamW(nn.Cell):
    """torch.optim.AdamW: decoupled decay, bias-corrected moments, fp32 state. The caller skips the call for an
    overflowing fp16 step (see ``train/step.py``)."""

    def __init__(self, params, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, inplace=None):
        """``inplace``: update through the CPU's in-place kernel (True: required, False: never, None: on the CPU
        when every parameter is fp32 and the kernel builds, unless ``EMU3_INPLACE_ADAMW=0``)."""
        super().__init__()
        self.params = ms.ParameterTuple(params)
        # Per-parameter decay (HF's groups) and the hyper-parameters as fp32 tensors, the mapped update's operands.
        self._decay = tuple(Tensor(float(weight_decay) if decays(p.name) else 0.0, ms.float32) for p in self.params)
        self._beta1, self._beta2, self._eps = (Tensor(float(x), ms.float32) for x in (betas[0], betas[1], eps))
        self.exp_avg = ms.ParameterTuple(_zeros_like(p, "exp_avg") for p in self.params)
        self.exp_avg_sq = ms.ParameterTuple(_zeros_like(p, "exp_avg_sq") for p in self.params)
        # fp32 copies of low-precision weights: updates smaller than their ulp must not be lost.
        self.has_master = tuple(p.dtype != ms.float32 for p in self.params)
        self.master = ms.ParameterTuple(
            Parameter(Tensor(p.asnumpy().astype(np.float32)), name=f"master.{p.name}", requires_grad=False)
            for p, low in zip(self.params, self.has_master) if low)
        self.step = Parameter(Tensor(0.0, ms.float32), name="step", requires_grad=False)
        # What the mapped update writes: the fp32 master where there is one, else the parameter itself.
        masters = iter(self.master)
        self._targets = ms.ParameterTuple(next(masters) if low else p for p, low in zip(self.params, self.has_master))
        self.low_params = ms.ParameterTuple(p for p, low in zip(self.params, self.has_master) if low)
        self.hyper_map = ops.HyperMap()
        self.inplace = _use_inplace_kernel(inplace, all(p.dtype == ms.float32 for p in self.params))

    def state(self):
        """Named optimizer tensors, for checkpoints: {name: Parameter}."""
        out = {"step": self.step}
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            out[f"exp_avg.{p.name}"], out[f"exp_avg_sq.{p.name}"] = m, v
        for master in self.master:
            out[master.name] = master
        return out

    def load_state(self, tensors):
        """Set every tensor of ``state()`` from ``tensors`` ({name: array}, e.g. a checkpoint's)."""
        for name, param in self.state().items():
            param.set_data(Tensor(tensors[name]).astype(param.dtype))

    def master_weights(self):
        """{parameter name: fp32 value} of every optimised parameter (the exported model's weights)."""
        return {p.name: target for p, target in zip(self.params, self._targets)}

    def construct(self, grads, lr, grad_scale):
        """One update with ``grads * grad_scale`` (the clipping coefficient, folded into the update's pass)."""
        step = self.step + 1.0
        ops.assign(self.step, step)
        step_size = lr / (1.0 - ops.pow(self._beta1, step))
        # torch's denominator sqrt(v) / sqrt(1 - beta2^t) + eps with the scalar inverted once: one division per
        # element fewer.
        bias_correction2_rsqrt = ops.rsqrt(1.0 - ops.pow(self._beta2, step))
        # One mapped update per parameter: a Python loop would unroll into nested calls whose depth grows with the
        # parameter count (a graph of a few hundred parameters exceeds MindSpore's call-depth limit).
        if self.inplace:  # the kernel writes weights and moments; the step depends on every call, so none is pruned
            hyper = ops.stack([self._beta1, self._beta2, self._eps, lr, step_size, bias_correction2_rsqrt,
                               grad_scale.astype(ms.float32)])
            done = self.hyper_map(ops.partial(_adamw_inplace, hyper), self._decay, self._targets, self.exp_avg,
                                  self.exp_avg_sq, grads)
            return ops.depend(step, done)
        update = ops.partial(_adamw, self._beta1, self._beta2, self._eps, lr, step_size, bias_correction2_rsqrt,
                             grad_scale)
        self.hyper_map(update, self._decay, self._targets, self.exp_avg, self.exp_avg_sq, grads)
        if self.low_params:
            self.hyper_map(_copy_cast, self.low_params, self.master)
        return step


_adamw = ops.MultitypeFuncGraph("adamw")
# The exact division as RealDiv: operator fusion takes it into the update's fused kernel (same results), while
# the ``/`` operator's Div stays a kernel of its own (~7 % of the 56 M model's step on CPU).
_real_div = ops.RealDiv()


@_adamw.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                 "Tensor", "Tensor")
def _adamw_one(beta1, beta2, eps, lr, step_size, bias_correction2_rsqrt, grad_scale, decay, weight, m, v, grad):
    g = grad.astype(ms.float32) * grad_scale
    new_m = m * beta1 + g * (1.0 - beta1)
    new_v = v * beta2 + g * g * (1.0 - beta2)
    value = weight * (1.0 - lr * decay)
    value = value - _real_div(step_size * new_m, ops.sqrt(new_v) * bias_correction2_rsqrt + eps)
    ops.assign(m, new_m)
    ops.assign(v, new_v)
    ops.assign(weight, value)
    return True


_INPLACE_KERNEL = None  # the Custom op of train/kernels/adamw_inplace.cc, built by the first AdamW that uses it
_adamw_inplace = ops.MultitypeFuncGraph("adamw_inplace")


@_adamw_inplace.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_inplace_one(hyper, decay, weight, m, v, grad):
    return _INPLACE_KERNEL(weight, m, v, grad, hyper, decay)


def _use_inplace_kernel(requested, all_fp32):
    """Whether an AdamW updates through the in-place kernel (building it if so); see ``AdamW.__init__``."""
    global _INPLACE_KERNEL
    from emu3.device import device_target
    from emu3.native import library, library_or_note

    from . import KERNELS_DIR

    if requested is None:
        if os.environ.get("EMU3_INPLACE_ADAMW", "1").strip() == "0" or device_target() != "CPU" or not all_fp32:
            return False
    elif not requested:
        return False
    elif device_target() != "CPU" or not all_fp32:
        raise ValueError("the in-place AdamW kernel is for fp32 parameters on the CPU")
    if _INPLACE_KERNEL is None:
        path = library("adamw_inplace", KERNELS_DIR) if requested else library_or_note(
            "adamw_inplace", "AdamW updates without its in-place CPU kernel (slower, same results)", KERNELS_DIR)
        if path is None:
            return False
        kernel = ops.Custom(f"{path}:InplaceAdamW", out_shape=lambda *shapes: (1,),
                            out_dtype=lambda *dtypes: ms.float32, func_type="aot")
        kernel.add_prim_attr("side_effect_mem", True)  # it writes its first three inputs: keep reads after it
        _INPLACE_KERNEL = kernel
    return True


_copy_cast = ops.MultitypeFuncGraph("copy_cast")


@_copy_cast.register("Tensor", "Tensor")
def _copy_cast_one(param, master):
    """A low-precision parameter takes its fp32 master's new value."""
    ops.assign(param, master.astype(param.dtype))
    return True


def _zeros_like(param, prefix):
    return Parameter(Tensor(np.zeros(param.shape, np.float32)), name=f"{prefix}.{param.name}", requires_grad=False)
