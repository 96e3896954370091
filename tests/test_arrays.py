import numpy as np
import torch

import mindspore as ms

from emu3.arrays import to_numpy


def test_framework_tensors_become_numpy_and_others_pass_through():
    values = np.array([1.5, -2.25], np.float32)
    np.testing.assert_array_equal(to_numpy(ms.Tensor(values)), values)
    np.testing.assert_array_equal(to_numpy(ms.Tensor(values).astype(ms.bfloat16)), values)  # exact in bf16
    np.testing.assert_array_equal(to_numpy(torch.from_numpy(values).bfloat16()), values)
    ragged = [[1, 2], [3]]
    assert to_numpy(ragged) is ragged
