"""Image-quality metrics for reconstructions (numpy, uint8 or float images, HWC or HW)."""

import numpy as np


def psnr(reference, test, data_range=255.0):
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    reference, test = _pair(reference, test)
    mse = np.mean((reference - test) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(reference, test, data_range=255.0, window=11, sigma=1.5):
    """Structural similarity (Wang et al. 2004): Gaussian window 11/σ 1.5, K1 0.01, K2 0.03, averaged over channels."""
    reference, test = _pair(reference, test)
    if reference.ndim == 2:
        reference, test = reference[..., None], test[..., None]
    if min(reference.shape[:2]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {reference.shape[:2]}")
    kernel = np.exp(-0.5 * ((np.arange(window) - window // 2) / sigma) ** 2)
    kernel /= kernel.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    scores = []
    for c in range(reference.shape[2]):
        x, y = reference[..., c], test[..., c]
        mu_x, mu_y = _blur(x, kernel), _blur(y, kernel)
        var_x = _blur(x * x, kernel) - mu_x ** 2
        var_y = _blur(y * y, kernel) - mu_y ** 2
        cov = _blur(x * y, kernel) - mu_x * mu_y
        numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        denominator = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
        scores.append(np.mean(numerator / denominator))
    return float(np.mean(scores))


def _blur(image, kernel):
    """Separable 'valid' Gaussian filtering."""
    rows = np.apply_along_axis(np.convolve, 0, image, kernel, mode="valid")
    return np.apply_along_axis(np.convolve, 1, rows, kernel, mode="valid")


def _pair(reference, test):
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if reference.shape != test.shape:
        raise ValueError(f"images differ in shape: {reference.shape} vs {test.shape}")
    return reference, test
