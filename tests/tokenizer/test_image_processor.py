"""Tests for Emu3VisionVQImageProcessor.

The oracle is transformers' `Emu3ImageProcessor` (the slow, PIL-based one; 5.23 ships no fast variant for Emu3). It
follows the same algorithm as the original Emu3 processor; we pass it the original's 0.5/0.5 mean/std (it defaults to
CLIP's) and the original's pixel bounds. Test images are seeded random noise, generated here.
"""

import json

import numpy as np
import pytest
from PIL import Image

from emu3.tokenizer.image_processing_emu3visionvq import Emu3VisionVQImageProcessor, smart_resize


MIN_PIXELS = 512 * 512
MAX_PIXELS = 1024 * 1024


def make_image(height, width, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(array[..., 0] if channels == 1 else array)  # mode follows from the shape
    assert image.mode == mode
    return image


@pytest.fixture(scope="module")
def processor():
    return Emu3VisionVQImageProcessor()


@pytest.fixture(scope="module")
def reference():
    transformers = pytest.importorskip("transformers")
    return transformers.Emu3ImageProcessor(
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        spatial_factor=8,
    )


# ---------------------------------------------------------------------------------------------------------------------
# smart_resize
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, expected",
    [((384, 384), (512, 512)), ((720, 720), (720, 720)), ((1080, 1920), (768, 1360)), ((300, 400), (448, 592))],
)
def test_smart_resize_spec_examples(size, expected):
    assert smart_resize(*size, factor=8, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS) == expected


def test_smart_resize_uses_bankers_rounding():
    # 36.5 rounds to 36 and 37.5 to 38 (half to even); the area stays inside the bounds so no rescaling happens.
    assert smart_resize(8 * 36.5, 8 * 100, min_pixels=1, max_pixels=10**9) == (8 * 36, 8 * 100)
    assert smart_resize(8 * 37.5, 8 * 100, min_pixels=1, max_pixels=10**9) == (8 * 38, 8 * 100)


def test_smart_resize_rejects_too_small():
    with pytest.raises(ValueError, match="at least factor=8"):
        smart_resize(7, 7)


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(ValueError, match="limit of 5"):
        smart_resize(100, 600)
    # Exactly 5:1 is still accepted.
    assert smart_resize(100, 500) == (232, 1152)


# ---------------------------------------------------------------------------------------------------------------------
# preprocess vs. the transformers oracle
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, mode",
    [(37, 53, "RGB"), (1080, 1920, "RGB"), (100, 500, "RGB"), (200, 300, "L")],
    ids=["37x53", "1080x1920", "strip-5to1", "grayscale"],
)
def test_preprocess_matches_reference(processor, reference, height, width, mode):
    image = make_image(height, width, mode)
    ours = processor(image)["pixel_values"]
    theirs = reference(image, return_tensors="np")["pixel_values"]

    expected_size = smart_resize(height, width, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape == (1, 3, *expected_size)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_preprocess_rgba_drops_alpha_like_the_original(processor, reference):
    # The original called transformers 4.44's image_transforms.convert_to_rgb, which is a plain image.convert("RGB")
    # (alpha dropped). transformers 5.23 composites transparency over white instead, so RGBA is checked against the
    # reference fed with the plainly converted image.
    image = make_image(120, 160, "RGBA", seed=1)
    ours = processor(image)["pixel_values"]
    theirs = reference(image.convert("RGB"), return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 448, 592)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_preprocess_numpy_and_list_inputs(processor):
    images = [make_image(64, 96, seed=2), make_image(64, 96, seed=3)]
    from_pil = processor(images)["pixel_values"]
    from_numpy = processor([np.asarray(im) for im in images])["pixel_values"]
    assert from_pil.shape == (2, 3, 424, 632)
    np.testing.assert_array_equal(from_pil, from_numpy)
    assert from_pil.min() >= -1.0 and from_pil.max() <= 1.0


def test_preprocess_return_tensors_ms(processor):
    mindspore = pytest.importorskip("mindspore")
    image = make_image(64, 64)
    tensor = processor(image, return_tensors="ms")["pixel_values"]
    assert isinstance(tensor, mindspore.Tensor)
    assert tensor.dtype == mindspore.float32
    np.testing.assert_array_equal(tensor.asnumpy(), processor(image)["pixel_values"])


def test_preprocess_rejects_tiny_image(processor):
    with pytest.raises(ValueError, match="too small"):
        processor(make_image(7, 7))


def test_preprocess_rejects_long_strip(processor):
    with pytest.raises(ValueError, match="limit of 5"):
        processor(make_image(100, 600))


def test_preprocess_rejects_mixed_sizes(processor):
    with pytest.raises(ValueError, match="once per image"):
        processor([make_image(512, 512), make_image(512, 1024)])


# ---------------------------------------------------------------------------------------------------------------------
# postprocess
# ---------------------------------------------------------------------------------------------------------------------


def test_postprocess_round_trip_within_one_grey_level(processor):
    image = make_image(300, 400, seed=4)
    pixel_values = processor(image)["pixel_values"]
    restored = processor.postprocess(pixel_values)["pixel_values"]

    assert len(restored) == 1 and isinstance(restored[0], Image.Image)
    resized = np.asarray(image.resize((592, 448), resample=Image.Resampling.BICUBIC), dtype=np.int16)
    diff = np.abs(np.asarray(restored[0], dtype=np.int16) - resized)
    assert diff.max() <= 1


def test_postprocess_truncates_like_the_original(processor):
    # 127.9 -> 127 (astype truncation), not 128; out-of-range values clip to 0 and 255.
    x = np.empty((1, 3, 8, 8), dtype=np.float32)
    x[:, 0] = 2 * 127.9 / 255 - 1
    x[:, 1] = -1.5
    x[:, 2] = 1.5
    out = processor.postprocess(x, return_tensors="np")["pixel_values"]
    assert out.dtype == np.uint8 and out.shape == (1, 3, 8, 8)
    assert (out[:, 0] == 127).all() and (out[:, 1] == 0).all() and (out[:, 2] == 255).all()


def test_postprocess_matches_reference(processor, reference):
    # Decoder outputs overshoot [-1, 1] a little; cover that range.
    x = np.random.default_rng(5).uniform(-1.2, 1.2, size=(2, 3, 24, 40)).astype(np.float32)
    ours = processor.postprocess(x)["pixel_values"]
    theirs = reference.postprocess(x)["pixel_values"]
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_postprocess_accepts_mindspore_tensor_and_single_image(processor):
    mindspore = pytest.importorskip("mindspore")
    x = np.random.default_rng(6).uniform(-1, 1, size=(3, 16, 24)).astype(np.float32)
    from_numpy = processor.postprocess(x)["pixel_values"][0]
    from_tensor = processor.postprocess(mindspore.Tensor(x))["pixel_values"][0]
    assert from_numpy.size == (24, 16) and from_numpy.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(from_numpy), np.asarray(from_tensor))


def test_postprocess_returns_pil_input_unchanged(processor):
    image = make_image(16, 16)
    assert processor.postprocess(image) is image


# ---------------------------------------------------------------------------------------------------------------------
# from_pretrained / save_pretrained
# ---------------------------------------------------------------------------------------------------------------------

RELEASED_CONFIG = {
    "auto_map": {"AutoImageProcessor": "image_processing_emu3visionvq.Emu3VisionVQImageProcessor"},
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Emu3VisionVQImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "max_pixels": 1048576,
    "min_pixels": 262144,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"max_pixels": 1048576, "min_pixels": 262144},
    "spatial_factor": 8,
}


def test_defaults_match_released_config():
    defaults = Emu3VisionVQImageProcessor().to_dict()
    for key, value in RELEASED_CONFIG.items():
        if key != "auto_map":
            assert defaults[key] == value, key


def test_save_and_load_round_trip(tmp_path):
    (tmp_path / "released").mkdir()
    (tmp_path / "released" / "preprocessor_config.json").write_text(json.dumps(RELEASED_CONFIG))
    loaded = Emu3VisionVQImageProcessor.from_pretrained(tmp_path / "released", max_pixels=720 * 720)
    assert loaded.max_pixels == 720 * 720 and loaded.resample == 3 and loaded.spatial_factor == 8

    written = loaded.save_pretrained(tmp_path / "saved")
    assert written == [str(tmp_path / "saved" / "preprocessor_config.json")]
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["preprocessor_config.json"]
    reloaded = Emu3VisionVQImageProcessor.from_pretrained(tmp_path / "saved")
    assert reloaded.to_dict() == loaded.to_dict()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        Emu3VisionVQImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="preprocessor_config.json is not valid JSON"):
        Emu3VisionVQImageProcessor.from_pretrained(tmp_path)
