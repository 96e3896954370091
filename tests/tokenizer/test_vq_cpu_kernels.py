"""The vision tokenizer runs its GroupNorms and convolutions' unfold through the C++ CPU kernels
(emu3/nn/cpu_kernels.py) from construction, for inference as for training, with the numbers of MindSpore's ops."""

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from emu3.nn.conv import Conv2d
from emu3.nn.layers import GroupNorm
from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel
from native_kernels import needs_kernel

SWITCHES = ("EMU3_GROUP_NORM_KERNEL", "EMU3_UNFOLD_KERNEL")


def _model():
    ms.set_seed(3)
    config = Emu3VisionVQConfig(codebook_size=64, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[1],
                                z_channels=4, embed_dim=4)  # spatial factor 2
    return Emu3VisionVQModel(config)


def _installed(model):
    cells = [cell for _, cell in model.cells_and_names()]
    norms = [c.kernel is not None for c in cells if isinstance(c, GroupNorm)]
    unfolds = [c.unfold is not None for c in cells if isinstance(c, Conv2d) and not c.pointwise]
    return norms, unfolds


@needs_kernel("group_norm")
@needs_kernel("unfold")
@pytest.mark.parametrize("graph", [False, True], ids=["pynative", "graph"])
def test_the_kernels_reconstruct_as_mindspores_ops(monkeypatch, graph):
    for switch in SWITCHES:
        monkeypatch.delenv(switch, raising=False)
    fast = _model()
    norms, unfolds = _installed(fast)
    assert norms and all(norms) and unfolds and all(unfolds)
    for switch in SWITCHES:
        monkeypatch.setenv(switch, "0")
    plain = _model()  # the same weights (same seed), MindSpore's GroupNorm and unfold
    norms, unfolds = _installed(plain)
    assert not any(norms) and not any(unfolds)
    x = Tensor(np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32))
    outs = []
    for model in (fast, plain):
        model.set_graph_mode(graph)
        codes = model.encode(x)
        outs.append((codes.asnumpy(), model.decode(codes).asnumpy()))
    (fast_codes, fast_pixels), (plain_codes, plain_pixels) = outs
    assert np.array_equal(fast_codes, plain_codes)
    np.testing.assert_allclose(fast_pixels, plain_pixels, rtol=0, atol=2e-5 * np.abs(plain_pixels).max())


def test_off_the_cpu_no_kernel_is_chosen(monkeypatch, capsys):
    import emu3.device
    from emu3 import native

    monkeypatch.setattr(emu3.device, "device_target", lambda: "Ascend")
    assert native.cpu_kernel("group_norm", SWITCHES[0], "GroupNorm runs without its CPU kernel") is None
    assert native.cpu_kernel("unfold", SWITCHES[1], "convolutions unfold without their CPU kernel") is None
    assert capsys.readouterr().err == ""  # not a fallback: nothing to say
