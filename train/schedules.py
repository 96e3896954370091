"""HF's learning-rate schedules (transformers' ``get_scheduler``), as plain Python: the flags and the launcher
check them without loading MindSpore."""

import math

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_min_lr")


def lr_lambda(schedule, warmup_steps, total_steps, min_lr_rate=0.0):
    """transformers' schedule multipliers: lr at optimizer step s (0-based) = base lr * f(s)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"--lr_scheduler_type must be one of {SCHEDULES}, got {schedule!r}")
    warmup_steps, total_steps = int(warmup_steps), int(total_steps)

    def warmup(s):
        return s / max(1, warmup_steps)

    def f(s):
        if schedule == "constant":
            return 1.0
        if s < warmup_steps:
            return warmup(s)
        if schedule == "constant_with_warmup":
            return 1.0
        decay_steps = max(1, total_steps - warmup_steps)
        if schedule == "linear":
            return max(0.0, (total_steps - s) / decay_steps)
        progress = (s - warmup_steps) / decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "cosine":
            return max(0.0, cosine)
        return max(0.0, cosine * (1.0 - min_lr_rate) + min_lr_rate)

    return f


def learning_rates(base_lr, schedule, warmup_steps, total_steps, min_lr=None):
    """The learning rate of every optimizer step 0 .. total_steps - 1."""
    min_lr_rate = 0.0
    if schedule == "cosine_with_min_lr":
        if min_lr is None:
            raise ValueError("--lr_scheduler_type cosine_with_min_lr needs --min_learning_rate")
        min_lr_rate = min_lr / base_lr if base_lr else 0.0
    f = lr_lambda(schedule, warmup_steps, total_steps, min_lr_rate)
    return [base_lr * f(s) for s in range(total_steps)]
