"""Device-level choices: OpenMP wait policy at import, operator fusion for the fixed-shape hot graphs."""

import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn, ops

from emu3 import device
from emu3.device import FusedJit, operator_fusion

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, **env):
    """Run ``code`` in a fresh interpreter, from a file (``mindspore.jit`` reads its functions' source); returns
    its stdout and stderr."""
    # Without what this session's own emu3 import and device selection put into the environment.
    run_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MS_DEV_HOST_BLOCKING_RUN")}
    run_env.update(GLOG_v="3", PYTHONPATH=REPO, **env)
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "script.py")
        with open(script, "w") as f:
            f.write(code)
        out = subprocess.run([sys.executable, script], capture_output=True, text=True, env=run_env, check=True)
    return out.stdout + out.stderr


def test_importing_emu3_first_loads_mindspore_with_passive_openmp_and_leaves_the_environment_alone():
    out = _python("import os, emu3.device\n"
                  "print('passive', emu3.PASSIVE_OPENMP, 'left', os.environ.get('OMP_WAIT_POLICY'))",
                  OMP_DISPLAY_ENV="VERBOSE")
    assert "passive True left None" in out
    assert "GOMP_SPINCOUNT = '0'" in out  # what libgomp made of the policy when MindSpore loaded it


def test_openmp_runtime_loaded_before_emu3_turns_fusion_off():
    out = _python("import mindspore, emu3\nfrom emu3.device import operator_fusion\n"
                  "print('passive', emu3.PASSIVE_OPENMP, 'fusion', operator_fusion())", OMP_DISPLAY_ENV="VERBOSE")
    assert "GOMP_SPINCOUNT = '300000'" in out
    assert "passive False fusion False" in out


_TRAINING_STEP_THREADS = """
import os, emu3.device
import numpy as np, mindspore as ms
from mindspore import ops
emu3.device.select_device("CPU")
def loss(x, w):
    return (ops.matmul(x, w) ** 2).mean()
step = ms.jit(ms.value_and_grad(loss, grad_position=1))
x, w = ms.Tensor(np.ones((4, 8), np.float32)), ms.Tensor(np.ones((8, 2), np.float32))
print("loss", step(x, w)[0].asnumpy())
names = {open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")}
print("variable", os.environ.get("MS_DEV_HOST_BLOCKING_RUN"), "frontend thread", "frontend_queue" in names)
"""


def test_cpu_dispatches_a_compiled_training_step_in_the_calling_thread():
    # Otherwise a "frontend_queue" thread runs the step while the caller busy-waits for it (design notes).
    assert "variable 1 frontend thread False" in _python(_TRAINING_STEP_THREADS)
    # The user's choice is kept, and it is what makes the difference.
    assert "variable 0 frontend thread True" in _python(_TRAINING_STEP_THREADS, MS_DEV_HOST_BLOCKING_RUN="0")


def test_fusion_setting_is_validated(monkeypatch):
    monkeypatch.setenv("EMU3_OPERATOR_FUSION", "yes")
    with pytest.raises(ValueError, match="EMU3_OPERATOR_FUSION"):
        operator_fusion()
    monkeypatch.setenv("EMU3_OPERATOR_FUSION", "0")
    assert not operator_fusion()


def test_test_session_runs_the_fused_configuration_users_get():
    # conftest imports emu3 before MindSpore, as the scripts do; requirements.txt brings AKG's `decorator`.
    assert operator_fusion(), "operator fusion is off: is `decorator` installed, or was MindSpore imported first?"


class _NormThenProject(nn.Cell):
    """An RMSNorm-like elementwise chain feeding a matmul: what fusion rewrites in the decode step."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Dense(64, 32, has_bias=False)

    def construct(self, x):
        h = x * ops.rsqrt(ops.mean(x * x, axis=-1, keep_dims=True) + 1e-6)
        return self.proj(ops.silu(h) * h + x)


def test_fused_graph_matches_pynative_and_compiles_fused_kernels(tmp_path, monkeypatch):
    kernel_meta = os.path.join(os.environ.get("MS_COMPILER_CACHE_PATH", device.kernel_cache_dir()), "akg_kernel_meta")

    def kernels_of_this_graph():
        return [path for path in glob.glob(os.path.join(kernel_meta, "Fused_*.info"))
                if '"shape":[3,1,64]' in open(path).read()]

    for info in kernels_of_this_graph():  # from an earlier run: they would hide whether this compile fuses
        for path in glob.glob(info[:-len(".info")] + ".*"):
            os.remove(path)
    monkeypatch.chdir(tmp_path)  # fusion must not write into the user's working directory
    cell = _NormThenProject()
    x = Tensor(np.random.default_rng(0).standard_normal((3, 1, 64)).astype(np.float32))
    fused = FusedJit(cell.construct)
    out = fused(x).asnumpy()
    np.testing.assert_allclose(out, cell(x).asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fused(x).asnumpy(), out)  # compiled once, reused
    assert os.listdir(tmp_path) == []
    assert not ms.get_context("enable_graph_kernel")  # the flag is on only while a FusedJit graph compiles
    assert kernels_of_this_graph(), "no fused kernel was compiled for this graph"


def test_kernel_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMU3_CACHE_DIR", str(tmp_path))
    assert device.kernel_cache_dir() == os.path.join(str(tmp_path), "kernels")
    monkeypatch.delenv("EMU3_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert device.kernel_cache_dir() == os.path.join(str(tmp_path / "xdg"), "emu3-mindspore", "kernels")


def test_fusion_toolchain_failure_falls_back_to_an_unfused_graph(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("EMU3_CACHE_DIR", str(blocker))  # the kernel cache cannot be created under a file
    cell = _NormThenProject()
    x = Tensor(np.random.default_rng(1).standard_normal((2, 1, 64)).astype(np.float32))
    fused = FusedJit(cell.construct)
    with pytest.warns(RuntimeWarning, match="compiling it without fusion"):
        out = fused(x).asnumpy()
    np.testing.assert_allclose(out, cell(x).asnumpy(), rtol=1e-5, atol=1e-6)
    assert not ms.get_context("enable_graph_kernel")
    assert os.getcwd() != str(blocker)


@pytest.mark.filterwarnings("ignore:operator fusion could not compile")
def test_errors_of_the_graph_itself_still_reach_the_caller():
    def broken(x):
        return ops.matmul(x, x)  # (2, 1, 64) @ (2, 1, 64): shapes do not chain

    with pytest.raises((ValueError, RuntimeError), match="(?i)shape|dim"):
        FusedJit(broken)(Tensor(np.ones((2, 1, 64), np.float32)))


def test_compiler_dumps_never_land_in_the_working_directory(tmp_path):
    """A graph that fails to compile writes rank_0/om/analyze_fail.ir; it goes to the cache, not the user's folder."""
    import subprocess
    import sys

    script = tmp_path / "bad_graph.py"  # MindSpore compiles graphs from source files, not from `python -c`
    script.write_text("import emu3\nfrom emu3.device import select_device\nimport mindspore as ms\n"
                      "select_device('CPU')\n\n\ndef bad(x):\n    return undefined_name + x\n\n\n"
                      "try:\n    ms.jit(bad)(ms.Tensor(1.0))\nexcept NameError as e:\n    print('NameError')\n")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, EMU3_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("MS_OM_PATH", None)
    result = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True, env=env,
                            timeout=300)
    assert "NameError" in result.stdout, result.stderr[-2000:]
    assert not os.listdir(work), "nothing written to the working directory"
    assert (tmp_path / "cache" / "graphs" / "rank_0" / "om" / "analyze_fail.ir").is_file()
