"""Mixed precision through the one policy: fp16 on CPU stays close to fp32 (bf16 kernels exist only on Ascend)."""

import numpy as np

import mindspore as ms

from emu3.nn.precision import PrecisionPolicy
from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel
from vq_reference import make_reference

TINY = dict(codebook_size=64, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[1])


def test_fp16_policy_tracks_fp32(tmp_path):
    config = Emu3VisionVQConfig(**TINY)
    make_reference(config, [n for n, _ in Emu3VisionVQModel(config).parameters_and_names()], str(tmp_path))
    fp32 = Emu3VisionVQModel.from_pretrained(str(tmp_path))
    fp16 = Emu3VisionVQModel.from_pretrained(str(tmp_path), precision=PrecisionPolicy.for_device("fp16"))
    assert fp16.compute_dtype == ms.float16
    assert fp16.quantize.embedding.weight.dtype == ms.float32  # the fp32 island survives an fp16 policy
    assert fp16.encoder.time_res_stack[0].norm1.running_var.dtype == ms.float32

    pixels = ms.Tensor(np.random.default_rng(3).uniform(-1, 1, (2, 3, 16, 24)).astype(np.float32))
    codes32, codes16 = fp32.encode(pixels).asnumpy(), fp16.encode(pixels).asnumpy()
    assert (codes16 == codes32).mean() >= 0.9  # near-ties may flip in half precision, most codes must not
    image32 = fp32.decode(ms.Tensor(codes32))
    image16 = fp16.decode(ms.Tensor(codes32))
    assert image16.dtype == ms.float16
    error = np.abs(image16.astype(ms.float32).asnumpy() - image32.asnumpy())
    assert error.max() < 0.05 * max(1.0, np.abs(image32.asnumpy()).max())
