import numpy as np
import torch

import mindspore as ms

from emu3.arrays import batches_by_shape, to_numpy


def test_framework_tensors_become_numpy_and_others_pass_through():
    values = np.array([1.5, -2.25], np.float32)
    np.testing.assert_array_equal(to_numpy(ms.Tensor(values)), values)
    np.testing.assert_array_equal(to_numpy(ms.Tensor(values).astype(ms.bfloat16)), values)  # exact in bf16
    np.testing.assert_array_equal(to_numpy(torch.from_numpy(values).bfloat16()), values)
    ragged = [[1, 2], [3]]
    assert to_numpy(ragged) is ragged


def test_batches_by_shape_groups_equal_shapes_in_bounded_batches():
    arrays = [np.zeros(shape) for shape in ((2, 3), (1, 2), (2, 3), (2, 3), (1, 2), (2, 3))]
    assert batches_by_shape(arrays, 2) == [[0, 2], [3, 5], [1, 4]]
    assert batches_by_shape(arrays, 3) == [[0, 2, 3], [5], [1, 4]]
    assert batches_by_shape([], 4) == []
