import math

import numpy as np
import pytest

from emu3.metrics import psnr, ssim


def test_psnr_known_values(rng):
    image = rng.integers(0, 200, (32, 40, 3)).astype(np.uint8)
    assert psnr(image, image) == math.inf
    assert psnr(image, image + 10) == pytest.approx(20 * math.log10(255 / 10))


def test_ssim_properties(rng):
    image = rng.integers(0, 256, (48, 48, 3)).astype(np.float64)
    assert ssim(image, image) == pytest.approx(1.0)
    slight = np.clip(image + rng.normal(0, 5, image.shape), 0, 255)
    heavy = np.clip(image + rng.normal(0, 60, image.shape), 0, 255)
    assert 1.0 > ssim(image, slight) > ssim(image, heavy) > 0
    assert ssim(image, slight) == pytest.approx(ssim(slight, image))
    # A constant shift changes luminance only: SSIM stays high but below 1.
    assert 0.9 < ssim(image, np.clip(image + 20, 0, 255)) < 1.0


def test_shape_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
