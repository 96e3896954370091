# Copyright 2024 The Emu team, BAAI and The HuggingFace Inc. team.
# MindSpore port: the emu3-mindspore authors. Licensed under the Apache License, Version 2.0.
"""Image processor for the Emu3 vision tokenizer (`Emu3VisionVQModel`).

Pure numpy + PIL, so it runs anywhere and needs neither torch nor transformers. It reproduces the released PyTorch
processor step by step (same dtypes at each step), so `pixel_values` are bit-identical to the original's for RGB input.

Pipeline of `preprocess`, per image:
    convert to RGB -> PIL bicubic resize of the uint8 image to `smart_resize(H, W)` -> x * (1/255) -> (x - 0.5) / 0.5
    -> channels-first, stacked to float32 (N, 3, H, W) in [-1, 1].
`postprocess` inverts it: (x * 0.5 + 0.5) * 255 -> clip to [0, 255] -> uint8 (truncation) -> PIL images.
"""

import json
import logging
import math
import os
from typing import Dict, List, Optional, Union

import numpy as np
from PIL import Image

from ..arrays import to_numpy
from ..atomic import atomic_write_json
from ..batch import BatchFeature


logger = logging.getLogger(__name__)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

# IMAGENET_STANDARD_MEAN / STD in transformers: maps [0, 1] to [-1, 1].
IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]

# The longest side may be at most this many times the shortest one (the original's limit).
MAX_ASPECT_RATIO = 5

# Keys of the released preprocessor_config.json that are bookkeeping rather than settings.
_IGNORED_CONFIG_KEYS = {"size", "image_processor_type", "processor_class", "auto_map", "feature_extractor_type"}


def smart_resize(
    height: int, width: int, factor: int = 8, min_pixels: int = 512 * 512, max_pixels: int = 1024 * 1024
):
    """Return the (height, width) an image is resized to before tokenization.

    Both sides become multiples of `factor`, the area is brought into [`min_pixels`, `max_pixels`] (approximately:
    the floor/ceil to a multiple of `factor` can land just outside), and the aspect ratio is kept as well as possible.

    Examples: 384x384 -> 512x512, 720x720 -> 720x720, 1080x1920 -> 768x1360, 300x400 -> 448x592.
    """
    if height < factor or width < factor:
        raise ValueError(
            f"Image of height {height} and width {width} is too small: both sides must be at least "
            f"factor={factor} pixels. Upscale or pad the image before passing it to the image processor."
        )
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"Image of height {height} and width {width} has an aspect ratio of {ratio:.2f}, above the supported "
            f"limit of {MAX_ASPECT_RATIO} (longest side / shortest side). Crop or pad the image to at most "
            f"{MAX_ASPECT_RATIO}:1 first."
        )

    # Python's round() rounds halves to even, e.g. round(37.5) == 38 but round(36.5) == 36; the original relies on it.
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar



def _to_channel_list(values, name: str) -> List[float]:
    if isinstance(values, (int, float)):
        return [float(values)] * 3
    values = [float(v) for v in values]
    if len(values) != 3:
        raise ValueError(f"{name} must be a float or a list of 3 floats (one per RGB channel), got {values}.")
    return values


class Emu3VisionVQImageProcessor:
    r"""
    Constructs an Emu3VisionVQ image processor that resizes each image to a size set by its own aspect ratio
    (see [`smart_resize`]).

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize the image's (height, width) to `smart_resize(height, width)`.
        resample (`int`, *optional*, defaults to `3` (`PIL.Image.BICUBIC`)):
            PIL resampling filter used when resizing.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply the pixel values by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Scale factor used when rescaling.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalize with `image_mean` and `image_std`.
        image_mean (`float` or `List[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Per-channel mean used for normalization.
        image_std (`float` or `List[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Per-channel standard deviation used for normalization.
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Whether to convert the image to RGB.
        min_pixels (`int`, *optional*, defaults to `512 * 512`):
            Lower bound on the area of the resized image.
        max_pixels (`int`, *optional*, defaults to `1024 * 1024`):
            Upper bound on the area of the resized image.
        spatial_factor (`int`, *optional*, defaults to 8):
            Spatial downsampling factor of the vision tokenizer; resized sides are multiples of it.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        resample: int = Image.Resampling.BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Optional[Union[float, List[float]]] = None,
        image_std: Optional[Union[float, List[float]]] = None,
        do_convert_rgb: bool = True,
        min_pixels: int = 512 * 512,
        max_pixels: int = 1024 * 1024,
        spatial_factor: int = 8,
        **kwargs,
    ) -> None:
        unknown = sorted(set(kwargs) - _IGNORED_CONFIG_KEYS)
        if unknown:
            logger.warning("Emu3VisionVQImageProcessor ignores these unknown arguments: %s", unknown)

        self.do_resize = do_resize
        self.resample = int(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean) if image_mean is not None else list(IMAGENET_STANDARD_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(IMAGENET_STANDARD_STD)
        self.do_convert_rgb = do_convert_rgb
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.spatial_factor = spatial_factor

    # ------------------------------------------------------------------------------------------------------------
    # Serialization
    # ------------------------------------------------------------------------------------------------------------

    @property
    def size(self) -> Dict[str, int]:
        # Kept for compatibility with the released config, which stores the pixel bounds twice.
        return {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}

    def to_dict(self) -> Dict:
        return {
            "do_convert_rgb": self.do_convert_rgb,
            "do_normalize": self.do_normalize,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": list(self.image_mean),
            "image_processor_type": type(self).__name__,
            "image_std": list(self.image_std),
            "max_pixels": self.max_pixels,
            "min_pixels": self.min_pixels,
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": self.size,
            "spatial_factor": self.spatial_factor,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__} {json.dumps(self.to_dict(), indent=2, sort_keys=True)}"

    @classmethod
    def from_pretrained(cls, pretrained_path: Union[str, os.PathLike], **kwargs) -> "Emu3VisionVQImageProcessor":
        """Load from `pretrained_path/preprocessor_config.json` (or that json file itself); `kwargs` override it."""
        path = os.fspath(pretrained_path)
        config_file = path if os.path.isfile(path) else os.path.join(path, PREPROCESSOR_CONFIG_NAME)
        if not os.path.isfile(config_file):
            raise FileNotFoundError(
                f"Cannot find {config_file}. Pass a directory containing {PREPROCESSOR_CONFIG_NAME} "
                f"(e.g. a local copy of BAAI/Emu3-VisionTokenizer) or the path of that file."
            )
        with open(config_file, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{config_file} is not valid JSON ({err}). Re-download or fix the file.") from err
        if not isinstance(config, dict):
            raise ValueError(f"{config_file} must hold a JSON object, got {type(config).__name__}.")
        config.update(kwargs)
        return cls(**config)

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> List[str]:
        """Write `save_directory/preprocessor_config.json`; returns the list of written files."""
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory ({save_directory}) is a file; pass a directory.")
        os.makedirs(save_directory, exist_ok=True)
        config_file = os.path.join(save_directory, PREPROCESSOR_CONFIG_NAME)

        atomic_write_json(config_file, self.to_dict(), indent=2, sort_keys=True)
        return [config_file]

    # ------------------------------------------------------------------------------------------------------------
    # Preprocessing
    # ------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _make_list_of_images(images) -> list:
        if isinstance(images, (Image.Image, np.ndarray)):
            images = [images]
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise ValueError(
                f"Expected a PIL image, a HWC uint8 numpy array, or a non-empty list of them; got {type(images)}."
            )
        for image in images:
            if not isinstance(image, (Image.Image, np.ndarray)):
                raise ValueError(
                    f"Invalid image type {type(image)}. Pass PIL.Image.Image objects or HWC uint8 numpy arrays."
                )
        return list(images)

    @staticmethod
    def _to_pil(image) -> Image.Image:
        if isinstance(image, Image.Image):
            return image
        if image.dtype != np.uint8:
            raise ValueError(
                f"numpy images must be uint8 in [0, 255], got dtype {image.dtype}. Convert first, e.g. "
                f"(x * 255).round().astype(np.uint8) for a float image in [0, 1]."
            )
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
            raise ValueError(
                f"numpy images must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (channels last), got shape "
                f"{image.shape}."
            )
        return Image.fromarray(image)

    def preprocess(
        self,
        images,
        do_resize: Optional[bool] = None,
        resample: Optional[int] = None,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean: Optional[Union[float, List[float]]] = None,
        image_std: Optional[Union[float, List[float]]] = None,
        do_convert_rgb: Optional[bool] = None,
        spatial_factor: Optional[int] = None,
        return_tensors: Optional[str] = None,
    ) -> BatchFeature:
        """Turn one image or a list of images into `pixel_values` of shape (N, 3, H, W).

        Args:
            images (`PIL.Image.Image`, `np.ndarray` or a list of them):
                Images with pixel values in [0, 255]; numpy arrays must be uint8, channels last.
            return_tensors (`str`, *optional*):
                `None` or `"np"` for a float32 numpy array, `"ms"` for a `mindspore.Tensor`.
            Other arguments override the attributes of the same name for this call.

        All images of one call must resize to the same (H, W), since they are stacked into one array.
        """
        do_resize = do_resize if do_resize is not None else self.do_resize
        resample = int(resample) if resample is not None else self.resample
        do_rescale = do_rescale if do_rescale is not None else self.do_rescale
        rescale_factor = rescale_factor if rescale_factor is not None else self.rescale_factor
        do_normalize = do_normalize if do_normalize is not None else self.do_normalize
        image_mean = _to_channel_list(image_mean if image_mean is not None else self.image_mean, "image_mean")
        image_std = _to_channel_list(image_std if image_std is not None else self.image_std, "image_std")
        do_convert_rgb = do_convert_rgb if do_convert_rgb is not None else self.do_convert_rgb
        spatial_factor = spatial_factor if spatial_factor is not None else self.spatial_factor
        if return_tensors not in (None, "np", "ms"):
            raise ValueError(f"return_tensors must be None, 'np' or 'ms', got {return_tensors!r}.")

        pixel_values = []
        for index, image in enumerate(self._make_list_of_images(images)):
            image = self._to_pil(image)
            if do_convert_rgb and image.mode != "RGB":
                # transformers 4.44's image_transforms.convert_to_rgb, used by the original, is a plain
                # convert("RGB"): alpha is dropped, not composited over white (newer transformers composite).
                image = image.convert("RGB")
            if image.mode != "RGB":
                raise ValueError(
                    f"Image {index} has mode {image.mode!r}; the vision tokenizer needs RGB. "
                    f"Pass do_convert_rgb=True or convert it yourself."
                )

            if do_resize:
                height, width = image.height, image.width
                resized_height, resized_width = smart_resize(
                    height,
                    width,
                    factor=spatial_factor,
                    min_pixels=self.min_pixels,
                    max_pixels=self.max_pixels,
                )
                # Resize the uint8 image itself, as transformers' resize() does for uint8 input.
                image = image.resize((resized_width, resized_height), resample=resample)

            array = np.asarray(image)  # (H, W, 3) uint8
            if do_rescale:
                # Same dtypes as transformers' rescale(): multiply in float64, then cast to float32.
                array = (array.astype(np.float64) * rescale_factor).astype(np.float32)
            if do_normalize:
                if not np.issubdtype(array.dtype, np.floating):
                    array = array.astype(np.float32)
                mean = np.array(image_mean, dtype=array.dtype)
                std = np.array(image_std, dtype=array.dtype)
                array = (array - mean) / std
            pixel_values.append(array.transpose(2, 0, 1))  # channels first

        sizes = sorted({tuple(p.shape[1:]) for p in pixel_values})
        if len(sizes) > 1:
            raise ValueError(
                f"The images of one call resize to different sizes {sizes} (height, width), so they cannot be "
                f"stacked into one batch. Call the processor once per image, or pad/crop the images to one "
                f"aspect ratio first."
            )
        pixel_values = np.stack(pixel_values)
        if pixel_values.dtype == np.float64:
            pixel_values = pixel_values.astype(np.float32)

        if return_tensors == "ms":
            import mindspore

            pixel_values = mindspore.Tensor(pixel_values)
        return BatchFeature(pixel_values=pixel_values)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Postprocessing
    # ------------------------------------------------------------------------------------------------------------

    def postprocess(
        self,
        images,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean: Optional[Union[float, List[float]]] = None,
        image_std: Optional[Union[float, List[float]]] = None,
        return_tensors: str = "PIL.Image.Image",
    ):
        """Inverse of `preprocess`: decoder output in normalized space -> images.

        Args:
            images (`np.ndarray` or `mindspore.Tensor` of shape (N, 3, H, W) or (3, H, W), or PIL images):
                PIL images are returned unchanged.
            rescale_factor (`float`, *optional*):
                The factor used in `preprocess` (default `self.rescale_factor`); pixels are divided by it.
            return_tensors (`str`, *optional*, defaults to `"PIL.Image.Image"`):
                `"PIL.Image.Image"` gives a list of RGB PIL images (when normalizing and rescaling); `"np"` gives a
                numpy array (N, 3, H, W), uint8 when rescaling.

        Returns:
            A `BatchFeature` whose `pixel_values` holds the images, as in the original
            (`processor.postprocess(recon)["pixel_values"][0]` is the first image).
        """
        do_rescale = do_rescale if do_rescale is not None else self.do_rescale
        rescale_factor = rescale_factor if rescale_factor is not None else self.rescale_factor
        do_normalize = do_normalize if do_normalize is not None else self.do_normalize
        image_mean = _to_channel_list(image_mean if image_mean is not None else self.image_mean, "image_mean")
        image_std = _to_channel_list(image_std if image_std is not None else self.image_std, "image_std")
        if return_tensors not in ("PIL.Image.Image", "np"):
            raise ValueError(f"return_tensors must be 'PIL.Image.Image' or 'np', got {return_tensors!r}.")

        if isinstance(images, Image.Image):
            return images
        if isinstance(images, (list, tuple)) and len(images) > 0 and isinstance(images[0], Image.Image):
            return images if len(images) > 1 else images[0]

        images = to_numpy(images)
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"postprocess expects channels-first images of shape (N, 3, H, W) or (3, H, W), got {images.shape}."
            )

        # The original un-normalizes by normalizing again with mean' = -mean/std and std' = 1/std, i.e.
        # x' = (x + mean/std) * std; the exact same float ops are used here so that uint8 values match.
        inverse_mean = [-m / s for m, s in zip(image_mean, image_std)]
        inverse_std = [1 / s for s in image_std]

        outputs = []
        for image in images:
            if do_normalize:
                if not np.issubdtype(image.dtype, np.floating):
                    image = image.astype(np.float32)
                mean = np.array(inverse_mean, dtype=image.dtype)[:, None, None]
                std = np.array(inverse_std, dtype=image.dtype)[:, None, None]
                image = (image - mean) / std
            if do_rescale:
                image = (image.astype(np.float64) * (1 / rescale_factor)).astype(np.float32)
                # astype truncates toward zero (no rounding), as in the original.
                image = image.clip(0, 255).astype(np.uint8)

            if do_normalize and do_rescale and return_tensors == "PIL.Image.Image":
                outputs.append(Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))))
            else:
                outputs.append(image)

        if return_tensors == "np":
            outputs = np.stack(outputs)
        return BatchFeature(pixel_values=outputs)


__all__ = ["Emu3VisionVQImageProcessor", "smart_resize"]
