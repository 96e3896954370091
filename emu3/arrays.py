"""One conversion from framework tensors to numpy, for code that accepts MindSpore, torch or numpy inputs; and the
batching of arrays of mixed shapes."""

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


def batches_by_shape(arrays, batch_size):
    """Index lists of at most ``batch_size`` arrays of one shape each, covering ``arrays`` (shapes in order of
    first appearance, indices ascending): what a model called on stacked inputs can take one batch at a time."""
    by_shape = {}
    for i, array in enumerate(arrays):
        by_shape.setdefault(array.shape, []).append(i)
    return [indices[start:start + batch_size] for indices in by_shape.values()
            for start in range(0, len(indices), batch_size)]
