"""Shared by the tests of the C++ kernels (emu3/kernels/, train/kernels/): skip them where a kernel cannot be
built."""

import pytest

from emu3 import native


def needs_kernel(name, kernels_dir=native.KERNELS_DIR):
    """A skip marker for tests of ``{kernels_dir}/{name}.cc``, active where it cannot be built (no compiler)."""
    try:
        native.library(name, kernels_dir)
        why = None
    except native.NativeKernelUnavailable as e:
        why = str(e)
    return pytest.mark.skipif(why is not None, reason=f"the {name} kernel cannot be built here: {why}")


def without_compiler(monkeypatch, tmp_path):
    """No kernel can be built from here on: an empty kernel cache and a compiler that does not exist."""
    monkeypatch.setenv("EMU3_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")


def assert_note_names_the_missing_compiler(capsys, note):
    err = capsys.readouterr().err
    assert note in err and "no-such-compiler" in err, err
