"""ViTImageProcessor against transformers' (PIL backend) on real MNIST digits, its file round trip, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from modelcore import AutoImageProcessor, ViTImageProcessor
from modelcore.errors import ConfigError, DataError
from modelcore.image_processing import PREPROCESSOR_CONFIG_NAME

transformers = pytest.importorskip("transformers")
ViTImageProcessorPil = transformers.ViTImageProcessorPil
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def digits(mnist_digits) -> np.ndarray:
    """30 real MNIST digits (3 of each class), (30, 28, 28) uint8."""
    return mnist_digits[0]


def _same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_gray_digits_upsized_to_224_match_transformers(digits):
    """Gray images become 3 equal channels (transformers needs do_convert_rgb=True for that; unset, it raises)."""
    images = [Image.fromarray(d) for d in digits]
    ours = ViTImageProcessor()(images, return_tensors="pt").pixel_values
    theirs = ViTImageProcessorPil()(images, do_convert_rgb=True, return_tensors="pt").pixel_values
    assert ours.shape == (30, 3, 224, 224)
    _same(ours, theirs)
    assert torch.equal(ours[:, 0], ours[:, 2])
    # the same digits as 2-D arrays and as (H, W, 1) arrays
    _same(ViTImageProcessor()(list(digits), return_tensors="pt").pixel_values, theirs)
    _same(ViTImageProcessor()([d[..., None] for d in digits], return_tensors="pt").pixel_values, theirs)


def test_rgb_arrays_of_stacked_digits_match_transformers_in_every_layout(digits):
    rgb = np.stack([digits[0:10], digits[10:20], digits[20:30]], axis=-1)  # (10, 28, 28, 3): three digits per image
    theirs = ViTImageProcessorPil()(list(rgb), return_tensors="pt").pixel_values
    layouts = {
        "HWC": list(rgb),
        "CHW": [np.moveaxis(image, -1, 0) for image in rgb],
        "torch CHW": [torch.from_numpy(np.moveaxis(image, -1, 0).copy()) for image in rgb],
        "batch array": rgb,
        "PIL": [Image.fromarray(image) for image in rgb],
    }
    for name, images in layouts.items():
        ours = ViTImageProcessor()(images, return_tensors="pt").pixel_values
        assert ours.shape == (10, 3, 224, 224), name
        _same(ours, theirs)
    # float pixels in [0, 1] go through Pillow scaled to uint8, as transformers does
    floats = list(rgb.astype(np.float32) / 255)
    _same(
        ViTImageProcessor()(floats, return_tensors="pt").pixel_values,
        ViTImageProcessorPil()(floats, return_tensors="pt").pixel_values,
    )


@pytest.mark.parametrize(
    "settings",
    [
        dict(resample=3, size={"height": 64, "width": 48}, **IMAGENET),  # bicubic, not square, ImageNet statistics
        dict(resample=0, size={"height": 20, "width": 20}),  # nearest, downsized
        dict(do_resize=False, image_mean=[0.1307], image_std=[0.3081]),  # one-channel model at 28 x 28
    ],
)
def test_other_settings_match_transformers(digits, settings):
    gray = [d[..., None] for d in digits[:8]]
    convert = len(settings.get("image_mean", [0, 0, 0])) == 3
    ours = ViTImageProcessor(**settings)(gray, return_tensors="pt").pixel_values
    theirs = ViTImageProcessorPil(**settings)(gray, do_convert_rgb=convert, return_tensors="pt").pixel_values
    _same(ours, theirs)


def test_rgba_and_files_match_transformers(digits, tmp_path):
    rgba = np.stack([digits[3], digits[13], digits[23], digits[4]], axis=-1)  # alpha from a fourth digit
    ours = ViTImageProcessor()(Image.fromarray(rgba, mode="RGBA"), return_tensors="pt").pixel_values
    theirs = ViTImageProcessorPil()(Image.fromarray(rgba, mode="RGBA"), do_convert_rgb=True, return_tensors="pt")
    _same(ours, theirs.pixel_values)
    _same(ViTImageProcessor()(rgba, return_tensors="pt").pixel_values, theirs.pixel_values)  # the array too
    paths = []
    for index, digit in enumerate(digits[:4]):
        paths.append(tmp_path / f"digit{index}.png")
        Image.fromarray(digit).save(paths[-1])
    theirs = ViTImageProcessorPil()([str(p) for p in paths], return_tensors="pt").pixel_values
    _same(ViTImageProcessor()(paths, return_tensors="pt").pixel_values, theirs)


def test_outputs_without_tensors_and_per_call_settings(digits):
    processor = ViTImageProcessor()
    out = processor(digits[0])
    assert isinstance(out.pixel_values, list) and out.pixel_values[0].shape == (3, 224, 224)
    assert isinstance(processor(list(digits[:2]), return_tensors="np")["pixel_values"], np.ndarray)
    small = processor(digits[0], return_tensors="pt", size={"height": 32, "width": 16}).pixel_values
    assert small.shape == (1, 3, 32, 16)
    assert processor.size == {"height": 224, "width": 224}  # the call's settings are not kept
    with pytest.raises(TypeError, match="sise"):
        processor(digits[0], sise=32)


def test_preprocessor_config_round_trips_with_transformers(tmp_path, digits):
    ours = ViTImageProcessor(size=96, resample=3, **IMAGENET)
    ours.save_pretrained(tmp_path / "ours")
    theirs = ViTImageProcessorPil.from_pretrained(tmp_path / "ours")
    image = Image.fromarray(np.stack([digits[5]] * 3, axis=-1))
    _same(ours(image, return_tensors="pt").pixel_values, theirs(image, return_tensors="pt").pixel_values)
    theirs.save_pretrained(tmp_path / "theirs")
    for loaded in (
        ViTImageProcessor.from_pretrained(tmp_path / "theirs"),
        AutoImageProcessor.from_pretrained(tmp_path / "theirs"),
    ):
        assert type(loaded) is ViTImageProcessor
        assert (loaded.size, loaded.resample, loaded.image_std) == (
            {"height": 96, "width": 96},
            3,
            IMAGENET["image_std"],
        )
    assert ViTImageProcessor.from_pretrained(tmp_path / "ours") == ours


def test_older_files_load_and_unknown_keys_are_kept(tmp_path):
    """A feature-extractor era file (microsoft/swin-tiny's layout): an int size, no image_processor_type."""
    legacy = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor", "resample": 3,
              "size": 224, "crop_pct": 0.875, **IMAGENET}  # fmt: skip
    (tmp_path / PREPROCESSOR_CONFIG_NAME).write_text(json.dumps(legacy))
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"height": 224, "width": 224} and processor.do_rescale
    processor.save_pretrained(tmp_path / "again")
    written = json.loads((tmp_path / "again" / PREPROCESSOR_CONFIG_NAME).read_text())
    assert written["crop_pct"] == 0.875 and written["image_processor_type"] == "ViTImageProcessor"


def test_auto_image_processor_falls_back_to_model_type_and_names_unknown_types(tmp_path):
    (tmp_path / PREPROCESSOR_CONFIG_NAME).write_text(json.dumps({"image_processor_type": "Unheard"}))
    with pytest.raises(ConfigError, match=r"preprocessor_config.json: no image processor class for \['Unheard'\]"):
        AutoImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swin"}))
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is ViTImageProcessor


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("shape", [(28, 28, 2), (5, 28, 28), (28, 28, 5), (2, 28, 28)])
def test_wrong_channel_count_names_the_image_and_its_shape(digits, shape):
    bad = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(DataError, match=rf"image 1: shape \({shape[0]}, {shape[1]}, {shape[2]}\) has no channel axis"):
        ViTImageProcessor()([digits[0], bad, digits[1]], return_tensors="pt")


def test_channels_that_do_not_fit_the_processor_are_refused(digits):
    with pytest.raises(DataError, match=r"image 0: 1 channel\(s\) \(shape \(1, 224, 224\).*do_convert_rgb=True"):
        ViTImageProcessor(do_convert_rgb=False)(digits[0], return_tensors="pt")
    rgb = np.stack([digits[0]] * 3, axis=-1)
    with pytest.raises(DataError, match=r"image 0: 3 channel\(s\).*image_mean/image_std have 1"):
        ViTImageProcessor(image_mean=[0.5], image_std=[0.5])(rgb)


def test_corrupt_image_file_names_the_file(tmp_path, digits):
    good, truncated, garbage = tmp_path / "good.png", tmp_path / "truncated.png", tmp_path / "garbage.png"
    Image.fromarray(digits[0]).save(good)
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage.write_bytes(b"not an image at all" * 10)
    for index, bad in ((1, truncated), (2, garbage)):
        images = [good, truncated, garbage][: index + 1] if index == 1 else [good, good, garbage]
        with pytest.raises(DataError, match=rf"image {index}: {bad}: cannot read the image .*damaged"):
            ViTImageProcessor()(images, return_tensors="pt")
    with pytest.raises(FileNotFoundError, match=r"image 0: .*missing.png: no such image file"):
        ViTImageProcessor()(tmp_path / "missing.png")


def test_empty_input_and_out_of_range_pixels_are_refused():
    with pytest.raises(DataError, match="empty list"):
        ViTImageProcessor()([], return_tensors="pt")
    with pytest.raises(DataError, match=r"image 0: float pixel values outside \[0, 1\]"):
        ViTImageProcessor()(np.full((8, 8, 3), 1.5, dtype=np.float32))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"size": {"shortest_edge": 224}}, "size must be an int or"),
        ({"resample": 9}, "resample must be one of"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std must be > 0"),
        ({"do_resize": "yes"}, "do_resize must be bool"),
    ],
)
def test_bad_settings_in_a_file_name_the_file_and_field(tmp_path, settings, message):
    (tmp_path / PREPROCESSOR_CONFIG_NAME).write_text(
        json.dumps({"image_processor_type": "ViTImageProcessor", **settings})
    )
    with pytest.raises(ConfigError, match=rf"{PREPROCESSOR_CONFIG_NAME}: ViTImageProcessor.*{message}"):
        AutoImageProcessor.from_pretrained(tmp_path)
