"""One mixed-precision policy, applied to a plain model from outside.

Layers never hard-code casts: a layer that must run in a particular dtype declares a ``precision_role``
("fp32" islands such as BatchNorm3d/RMSNorm, "conv3d" for Ascend's missing bf16 Conv3D) and the policy
decides the dtype for each role and for all other parameters.
"""

from dataclasses import dataclass

import mindspore as ms

from ..device import is_ascend

_DTYPES = {"fp32": ms.float32, "float32": ms.float32, "fp16": ms.float16, "float16": ms.float16,
           "bf16": ms.bfloat16, "bfloat16": ms.bfloat16}


def parse_dtype(name):
    if not isinstance(name, str):
        return name
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of fp32, fp16, bf16") from None


@dataclass(frozen=True)
class PrecisionPolicy:
    param_dtype: object = ms.float32  # weights and activations
    conv3d_dtype: object = ms.float32  # Conv3D kernels (Ascend: no bf16)
    fp32_dtype: object = ms.float32  # numerically sensitive islands (BatchNorm3d, RMSNorm)

    @classmethod
    def for_device(cls, dtype=None):
        """How users run the released models: bf16 with fp16 Conv3d on Ascend, fp32 on CPU (no bf16 kernels)."""
        dtype = parse_dtype(dtype) if dtype is not None else (ms.bfloat16 if is_ascend() else ms.float32)
        if dtype == ms.bfloat16 and not is_ascend():
            # Refused here rather than failing inside a compiled graph with a long C++ trace.
            raise ValueError("bf16 needs an Ascend device: MindSpore's CPU kernels have no bf16 matmul/gather; "
                             "use fp32 (the CPU default) or fp16")
        return cls.for_dtype(dtype)

    @classmethod
    def for_dtype(cls, dtype):
        """The policy for ``dtype`` whatever the device (Ascend has no bf16 Conv3D, so bf16 gets fp16 Conv3d)."""
        dtype = parse_dtype(dtype)
        conv3d = ms.float16 if dtype == ms.bfloat16 else dtype
        return cls(param_dtype=dtype, conv3d_dtype=conv3d)

    def dtype_for(self, role):
        return {"fp32": self.fp32_dtype, "conv3d": self.conv3d_dtype}.get(role, self.param_dtype)


def apply_precision(model, policy: PrecisionPolicy):
    """Cast every floating parameter to the dtype its layer's role asks for, and set the layers' compute dtypes.

    A role covers the layer's whole subtree (e.g. the quantizer's codebook cell), unless a sub-layer has its own.
    """
    roles = {}
    for name, cell in model.cells_and_names():  # parents come before their children
        parent = name.rpartition(".")[0] if name else None
        role = getattr(cell, "precision_role", None) or roles.get(parent)
        roles[name] = role
        dtype = policy.dtype_for(role)
        if "compute_dtype" in vars(cell) or hasattr(type(cell), "precision_role"):
            cell.compute_dtype = dtype
        for param in cell.get_parameters(expand=False):
            if param.dtype in (ms.float32, ms.float16, ms.bfloat16) and param.dtype != dtype:
                param.set_dtype(dtype)
    return model
