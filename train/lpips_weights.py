"""The perceptual term's weights file (``train/vq_perceptual.py``): what it holds, its check, and the converter
that makes it where the weights can be downloaded. No MindSpore here: the training script checks the file before
loading it.

    python -m train.lpips_weights --vgg vgg16-397923af.pth --lpips lpips/weights/v0.1/vgg.pth \\
        --out lpips_vgg16.safetensors

(``vgg16-397923af.pth``: torchvision's VGG16 ImageNet weights; ``lpips/weights/v0.1/vgg.pth``: inside the
``lpips`` pip package; reading .pth files needs PyTorch.) The file keeps their parameter names:
``features.{i}.weight/bias`` of torchvision's VGG16 and ``lin{l}.model.1.weight`` of the LPIPS package.
"""

import argparse
import os
import sys

import numpy as np

# VGG16's convolutions up to relu5_3, by torchvision's index in ``features`` (a max pool before each new stage).
VGG16_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
               (28, 512, 512))
TAPS = (2, 7, 14, 21, 28)  # the convolutions whose ReLU output LPIPS compares: relu1_2 ... relu5_3
POOLS = (4, 9, 16, 23)  # max pools (2x2, stride 2) at these indices of ``features``
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's scaling layer, on pictures in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # LPIPS's normalisation: x / (|x| + eps)
MIN_IMAGE_SIZE = 16  # relu5_3 comes after four 2x2 poolings


def weight_names():
    """{name: shape} of every tensor a perceptual weights file must hold."""
    names, width = {}, {}
    for index, cin, cout in VGG16_CONVS:
        names[f"features.{index}.weight"] = (cout, cin, 3, 3)
        names[f"features.{index}.bias"] = (cout,)
        width[index] = cout
    for tap, index in enumerate(TAPS):
        names[f"lin{tap}.model.1.weight"] = (1, width[index], 1, 1)
    return names


def check_weights_file(path):
    """Raise ValueError unless ``path`` is a safetensors file with every tensor of ``weight_names`` (headers only)."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise ValueError(f"--perceptual_weights {path!r} is not a file; make it with `python -m train.lpips_weights "
                         "--vgg vgg16-397923af.pth --lpips lpips/weights/v0.1/vgg.pth --out FILE.safetensors`")
    try:
        with safe_open(path, framework="np") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a file that is not one
        raise ValueError(f"--perceptual_weights {path!r} is not a safetensors file ({e})") from None
    wrong = [f"{name} {shapes.get(name, 'missing')} (needs {shape})" for name, shape in weight_names().items()
             if shapes.get(name) != shape]
    if wrong:
        raise ValueError(f"--perceptual_weights {path!r} is not VGG16 + LPIPS v0.1 weights: "
                         + ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""))


# ---- the converter ---------------------------------------------------------------------------------------------
def _read_pth(path):
    try:
        import torch
    except ImportError:
        raise SystemExit(f"error: reading {path} needs PyTorch (`pip install torch`); convert the weights where it "
                         "is installed and copy the .safetensors file here") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: never unpickles code
    except Exception as e:
        raise SystemExit(f"error: {path} is not a PyTorch weights file ({e})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def convert(vgg_path, lpips_path, out_path):
    """torchvision's VGG16 .pth + the LPIPS package's v0.1 vgg.pth -> one safetensors file of ``weight_names``."""
    from safetensors.numpy import save_file

    from emu3.atomic import atomic_path

    tensors = {**_read_pth(vgg_path), **_read_pth(lpips_path)}
    needed = weight_names()
    missing = [name for name in needed if name not in tensors]
    if missing:
        raise SystemExit(f"error: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} not found: --vgg must "
                         "be torchvision's VGG16 weights (features.N.*) and --lpips the LPIPS package's "
                         "weights/v0.1/vgg.pth (linN.model.1.weight)")
    wrong = [name for name, shape in needed.items() if tuple(tensors[name].shape) != shape]
    if wrong:
        raise SystemExit(f"error: {wrong[0]} has shape {tuple(tensors[wrong[0]].shape)}, VGG16 + LPIPS need "
                         f"{needed[wrong[0]]}: not VGG16 weights?")
    with atomic_path(out_path) as tmp:
        save_file({name: np.ascontiguousarray(tensors[name]) for name in needed}, tmp)
    return out_path


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.lpips_weights", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--vgg", required=True, help="torchvision's VGG16 ImageNet weights (vgg16-397923af.pth)")
    p.add_argument("--lpips", required=True, help="the lpips package's lpips/weights/v0.1/vgg.pth")
    p.add_argument("--out", required=True, help="the .safetensors file for --perceptual_weights")
    args = p.parse_args(argv)
    for flag in ("vgg", "lpips"):
        if not os.path.isfile(getattr(args, flag)):
            p.error(f"--{flag} {getattr(args, flag)!r} is not a file")
    out = convert(args.vgg, args.lpips, args.out)
    print(f"wrote {out}: pass it as --perceptual_weights to train/train_vision_tokenizer.py")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
