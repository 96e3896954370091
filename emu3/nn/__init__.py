"""Portable building blocks shared by the models (their parameter names follow PyTorch's, so checkpoints load by name)."""

from .layers import BatchNorm3d, Conv3d, GroupNorm, upsample_nearest
from .precision import PrecisionPolicy, apply_precision

__all__ = ["BatchNorm3d", "Conv3d", "GroupNorm", "upsample_nearest", "PrecisionPolicy", "apply_precision"]
