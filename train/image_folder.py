"""Images for vision-tokenizer training: a folder of image files, or a JSON list of samples with an "image" path
(the T2I / VQA files of ``train/prepare_*_data.py``: paths relative to the JSON's folder, or absolute).

Every image becomes a square of ``size`` pixels: the shorter side resized to ``size`` (bicubic), then the centre
cropped; pixels scaled to [-1, 1] as the tokenizer's image processor does.
"""

import json
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageDataError(ValueError):
    """Unusable image data: the message says what was wrong and what to do."""


def image_paths(data_path):
    """Absolute image paths of a folder (recursive, sorted) or of a JSON list's "image" fields, in order."""
    if os.path.isdir(data_path):
        found = sorted(os.path.join(root, name) for root, _, names in os.walk(data_path) for name in names
                       if name.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise ImageDataError(f"{data_path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return found
    if not os.path.isfile(data_path):
        raise ImageDataError(f"{data_path!r} does not exist: pass a folder of images or a JSON list of samples "
                             'with an "image" path')
    try:
        with open(data_path, encoding="utf-8") as f:
            items = json.load(f)
    except ValueError as e:
        raise ImageDataError(f"{data_path!r} is not valid JSON ({e})") from None
    if not isinstance(items, list) or not items:
        raise ImageDataError(f'{data_path!r} must hold a non-empty JSON list of samples with an "image" path')
    base = os.path.dirname(os.path.abspath(data_path))
    paths = []
    for i, item in enumerate(items):
        image = item.get("image") if isinstance(item, dict) else None
        if not isinstance(image, str):
            raise ImageDataError(f'{data_path!r}: sample {i} has no "image" path')
        paths.append(os.path.normpath(os.path.join(base, image)))
    return paths


def readable(paths):
    """(paths that open as images, [(path, reason)] of the others); only headers are read."""
    good, bad = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.size
            good.append(path)
        except (OSError, UnidentifiedImageError) as e:
            bad.append((path, str(e) or type(e).__name__))
    return good, bad


def load_square(path, size):
    """(3, size, size) float32 in [-1, 1]."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        if (w, h) != (size, size):
            image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = image.size
            left, top = (w - size) // 2, (h - size) // 2
            image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def load_batch(paths, size):
    return np.stack([load_square(p, size) for p in paths])


def to_uint8(pixels):
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return np.clip((np.asarray(pixels).transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
