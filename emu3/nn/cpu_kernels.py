"""The vision tokenizer's C++ CPU kernels (``emu3/kernels/``), installed on a model's layers.

MindSpore's CPU GroupNorm takes ~20x one pass over its input and its Im2Col / Col2Im are slow too; on the CPU the
vision tokenizer (``Emu3VisionVQModel``, at construction) runs its GroupNorms and its convolutions' unfold through
these kernels instead, forward and backward, for inference and training alike: same results to fp32 rounding
(the unfold's columns bit for bit). On another device, with ``EMU3_GROUP_NORM_KERNEL=0`` / ``EMU3_UNFOLD_KERNEL=0``,
or without a C++ compiler (then with a note) the layers keep MindSpore's ops.
"""

import mindspore as ms
from mindspore import ops

from ..native import cpu_kernel
from .conv import Conv2d
from .layers import GroupNorm


def use_cpu_kernels(model):
    """Both kernels below on ``model``'s layers (a no-op off the CPU). Before the model's first graph is compiled."""
    use_group_norm_kernel(model)
    use_unfold_kernel(model)


def use_group_norm_kernel(model):
    """On the CPU, ``model``'s GroupNorms (``emu3.nn.layers.GroupNorm``) compute through emu3/kernels/group_norm.cc
    (forward and backward one pass each over their input, where MindSpore's CPU kernels take ~20x that; the same
    results to fp32 rounding). ``EMU3_GROUP_NORM_KERNEL=0`` keeps ops.group_norm; so does a machine without a C++
    compiler (with a note). Set before the model's first graph is compiled."""
    norms = [cell for _, cell in model.cells_and_names() if isinstance(cell, GroupNorm)]
    if not norms:
        return
    path = cpu_kernel("group_norm", "EMU3_GROUP_NORM_KERNEL",
                      "GroupNorm runs without its CPU kernel (slower, the same results to fp32 rounding)")
    if path is None:
        return
    backward = ops.Custom(f"{path}:GroupNormBackward",
                          out_shape=lambda x, weight, mean, rstd, dy: (x, weight, weight),
                          out_dtype=lambda *dtypes: (ms.float32, ms.float32, ms.float32), func_type="aot")

    def bprop(x, weight, bias, eps, out, dout):
        dx, dweight, dbias = backward(x, weight, out[1], out[2], dout[0])
        return dx, dweight, dbias, ops.zeros_like(eps)

    forward = ops.Custom(f"{path}:GroupNormForward", out_shape=lambda x, weight, bias, eps: (x, x[:2], x[:2]),
                         out_dtype=lambda *dtypes: (ms.float32, ms.float32, ms.float32), func_type="aot",
                         bprop=bprop)
    for norm in norms:
        norm.kernel = forward


def use_unfold_kernel(model):
    """On the CPU, ``model``'s im2col convolutions (``emu3.nn.conv.Conv2d``) unfold through emu3/kernels/unfold.cc,
    whose gradient (col2im) takes a fraction of MindSpore's Col2Im time; the same columns, bit for bit, and the same
    gradient up to the order of its sums. ``EMU3_UNFOLD_KERNEL=0`` keeps ops.unfold; so does a machine without a
    C++ compiler (with a note). Set before the model's first graph is compiled."""
    convs = [cell for _, cell in model.cells_and_names() if isinstance(cell, Conv2d)
             and not cell.native and not cell.pointwise]
    if not convs:
        return
    path = cpu_kernel("unfold", "EMU3_UNFOLD_KERNEL",
                      "convolutions unfold without their CPU kernel (slower, the same results to fp32 rounding)")
    if path is None:
        return
    fold = ops.Custom(f"{path}:Fold", out_shape=lambda cols, geometry, x: x, out_dtype=lambda *dtypes: ms.float32,
                      func_type="aot")

    def bprop(x, geometry, out, dout):
        return fold(dout, geometry, x), ops.zeros_like(geometry)

    def unfold_op(kh, kw, sh, sw, ph, pw):
        def out_shape(x, geometry):
            out_h, out_w = (x[2] + 2 * ph - kh) // sh + 1, (x[3] + 2 * pw - kw) // sw + 1
            return (x[0], x[1] * kh * kw, out_h * out_w)

        op = ops.Custom(f"{path}:Unfold", out_shape=out_shape, out_dtype=lambda *dtypes: ms.float32,
                        func_type="aot", bprop=bprop)
        # Told apart by an attribute: pynative caches inferred shapes per primitive and input shapes, and two
        # geometries take the same input shapes.
        op.add_prim_attr("geometry", [kh, kw, sh, sw, ph, pw])
        return op

    ops_by_geometry = {}
    for conv in convs:
        geometry = conv.kernel_size + conv.stride + conv.padding
        if geometry not in ops_by_geometry:
            ops_by_geometry[geometry] = unfold_op(*geometry)
        conv.unfold = ops_by_geometry[geometry]
