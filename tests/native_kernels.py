"""Shared by the tests of the C++ kernels (train/kernels/): skip them where a kernel cannot be built."""

import pytest

from train import native


def needs_kernel(name):
    """A skip marker for tests of ``train/kernels/{name}.cc``, active where it cannot be built (no compiler)."""
    try:
        native.library(name)
        why = None
    except native.NativeKernelUnavailable as e:
        why = str(e)
    return pytest.mark.skipif(why is not None, reason=f"the {name} kernel cannot be built here: {why}")
