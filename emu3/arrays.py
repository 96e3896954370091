"""One conversion from framework tensors to numpy, for code that accepts MindSpore, torch or numpy inputs."""

def to_numpy(x):
    """A MindSpore or torch tensor -> numpy array (bf16 through fp32, which is exact); anything else unchanged.

    mindspore is never imported here: a MindSpore tensor is recognised by its ``asnumpy`` method.
    """
    if hasattr(x, "asnumpy"):
        if str(x.dtype) == "BFloat16":  # numpy has no bfloat16
            import mindspore

            x = x.astype(mindspore.float32)
        return x.asnumpy()
    if hasattr(x, "detach"):
        return x.detach().cpu().float().numpy() if str(x.dtype) == "torch.bfloat16" else x.detach().cpu().numpy()
    return x


def as_array(x):
    """``to_numpy`` for any array-like (lists included) as a numpy array; None stays None (an optional input)."""
    import numpy as np

    return None if x is None else np.asarray(to_numpy(x))
