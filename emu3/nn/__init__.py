"""Portable building blocks shared by the models (their parameter names follow PyTorch's, so checkpoints load by name)."""

from .conv import Conv2d, Conv3d
from .layers import BatchNorm3d, GroupNorm, upsample_nearest
from .precision import PrecisionPolicy, apply_precision

__all__ = ["BatchNorm3d", "Conv2d", "Conv3d", "GroupNorm", "upsample_nearest", "PrecisionPolicy", "apply_precision"]
