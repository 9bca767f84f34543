"""Image processors: images (files, PIL, numpy, torch) -> normalized ``pixel_values`` for vision models.

Each step is computed as transformers' PIL backend computes it, so pixel values match it exactly:

1. load: a file path (or a file's encoded bytes) is opened with Pillow, EXIF-rotated and converted to RGB (as transformers' ``load_image``);
2. layout: arrays are HWC or CHW (the axis of size 1, 3 or 4 is the channel axis; CHW when both are);
3. convert to RGB: gray -> 3 equal channels, RGBA -> composited onto white (``do_convert_rgb``);
4. resize: through Pillow (``resample``, bilinear by default) on uint8 pixels;
5. rescale: ``* rescale_factor`` (1/255) in float64, then float32;
6. normalize: ``(x - image_mean) / image_std`` per channel.

Where transformers raises on a gray or RGBA image because the processor's mean has three channels
(``do_convert_rgb`` unset), we convert it to RGB instead, as ``do_convert_rgb=True`` does there. An image
whose channel count fits nothing (2 or 5 channels) or a file that cannot be read is a ``DataError`` naming
the image's index, its shape or file, and the fix.

The settings round-trip through ``preprocessor_config.json`` (the Hugging Face file): unknown keys from a
file are kept and written back; unknown keywords in code are a ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modelcore.errors import ConfigError, DataError
from modelcore.feature_extraction import BatchFeature  # one output type for image and audio preprocessors
from modelcore.json_files import read_json_object
from modelcore.serialization.atomic import atomic_write_text
from modelcore.typecheck import as_float_if_wanted, matches, type_name

logger = logging.getLogger(__name__)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]
PIL_RESAMPLE_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_CHANNEL_COUNTS = (1, 3, 4)  # gray, RGB, RGBA: the sizes a channel axis is recognized by


def _pil_image() -> Any:
    """The ``PIL.Image`` module (Pillow resizes and decodes images; it is imported on first use)."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow ships with the test environment
        raise ImportError("image processing needs Pillow: pip install pillow") from err
    return Image


@dataclasses.dataclass(kw_only=True, eq=False)
class BaseImageProcessor:
    """Typed settings with a ``preprocessor_config.json`` round trip; subclasses add fields and ``__call__``."""

    model_input_names: ClassVar[list[str]] = ["pixel_values"]

    def __post_init__(self) -> None:
        self._extra: dict[str, Any] = {}
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = as_float_if_wanted(getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
            if not matches(value, hints[field.name]):
                raise ConfigError(
                    f"{type(self).__name__}.{field.name} must be {type_name(hints[field.name])}, got {value!r}"[:300]
                )
        self.validate()

    def validate(self) -> None:
        """Check the settings; raise ``ConfigError`` naming the field."""

    # ---------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """The settings plus the extra keys read from a file and ``image_processor_type``."""
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        out.update(self._extra)
        out["image_processor_type"] = type(self).__name__
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed), atomically.

        Args:
            save_directory: the checkpoint directory.

        Returns:
            The path of the written file.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PREPROCESSOR_CONFIG_NAME
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "", **overrides: Any) -> BaseImageProcessor:
        """Build a processor from a ``preprocessor_config.json`` dict: unknown keys are kept, overrides must be fields.

        Args:
            data: the parsed JSON.
            where: the file it came from, for messages.
            **overrides: settings replacing the stored ones; an unknown name is a ``TypeError``.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"{cls.__name__} got unexpected keyword argument(s): {', '.join(unknown)}")
        data = {**data, **overrides}
        data.pop("image_processor_type", None)
        try:
            processor = cls(**{k: v for k, v in data.items() if k in names})
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}" if where else str(err)) from err
        processor._extra = {k: v for k, v in data.items() if k not in names}
        return processor

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **overrides: Any) -> BaseImageProcessor:
        """Load the processor settings of a checkpoint (its ``preprocessor_config.json``).

        Args:
            source: a checkpoint directory (or asset name, ``models:/`` URI), or the JSON file itself.
            **overrides: settings replacing the stored ones.
        """
        path = Path(source)
        if not path.is_file():  # a directory, an asset name or a models:/ URI
            from modelcore.serialization.sources import resolve_source

            path = Path(resolve_source(source)) / PREPROCESSOR_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; save the processor with save_pretrained first")
        return cls.from_dict(read_json_object(path, ConfigError), str(path), **overrides)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()


@dataclasses.dataclass(kw_only=True, eq=False)
class ViTImageProcessor(BaseImageProcessor):
    """Resize to a fixed size, rescale to [0, 1], normalize: the processor of ViT, Swin and most classifiers.

    Args:
        do_resize: resize every image to ``size``.
        size: ``{"height": H, "width": W}``, or an int for a square (older files write ``"size": 224``).
        resample: Pillow filter code: 0 nearest, 1 lanczos, 2 bilinear (default), 3 bicubic, 4 box, 5 hamming.
        do_rescale: multiply pixels by ``rescale_factor``.
        rescale_factor: 1/255 maps uint8 pixels to [0, 1].
        do_normalize: subtract ``image_mean`` and divide by ``image_std``, per channel.
        image_mean: per-channel mean (its length is the channel count the model takes), or one float for all.
        image_std: per-channel standard deviation, or one float for all.
        do_convert_rgb: True converts every image to RGB; False never converts; None (default) converts gray
            and RGBA images to RGB when ``image_mean`` has three channels (transformers raises there).
    """

    do_resize: bool = True
    size: int | dict[str, int] = dataclasses.field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = 2
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: float | list[float] = dataclasses.field(default_factory=lambda: list(IMAGENET_STANDARD_MEAN))
    image_std: float | list[float] = dataclasses.field(default_factory=lambda: list(IMAGENET_STANDARD_STD))
    do_convert_rgb: bool | None = None

    def validate(self) -> None:
        name = type(self).__name__
        if isinstance(self.size, int):
            self.size = {"height": self.size, "width": self.size}
        if set(self.size) != {"height", "width"} or min(self.size.values()) <= 0:
            raise ConfigError(f"{name}.size must be an int or {{'height': H, 'width': W}} > 0, got {self.size!r}")
        if self.resample not in PIL_RESAMPLE_CODES:
            raise ConfigError(
                f"{name}.resample must be one of {PIL_RESAMPLE_CODES} (Pillow codes), got {self.resample}"
            )
        mean, std = np.atleast_1d(self.image_mean), np.atleast_1d(self.image_std)
        if len(mean) != len(std) and min(len(mean), len(std)) > 1:
            raise ConfigError(f"{name}.image_mean has {len(mean)} channels but image_std has {len(std)}")
        if (std <= 0).any():
            raise ConfigError(f"{name}.image_std must be > 0, got {self.image_std!r}")

    @property
    def num_channels(self) -> int | None:
        """The channel count ``image_mean`` / ``image_std`` fix (None when both are one float for any count)."""
        lengths = [len(v) for v in (self.image_mean, self.image_std) if isinstance(v, list)]
        return max(lengths) if lengths else None

    def __call__(self, images: Any, return_tensors: str | None = None, **overrides: Any) -> BatchFeature:
        """Process one image or a list of images.

        Args:
            images: a file path, an image file's bytes, a PIL image, an array (HWC or CHW; 2-D for gray), a tensor, a
                list of those, or a 4-D array / tensor holding a batch.
            return_tensors: ``"pt"`` for one (B, C, H, W) float32 tensor, ``"np"`` for one array, None for a
                list of (C, H, W) arrays.
            **overrides: settings for this call only (``size=...``, ``do_resize=False``...).

        Returns:
            ``BatchFeature`` with ``pixel_values``.

        Raises:
            DataError: an empty list, an unreadable file, or an image whose channels fit no layout or not the
                processor's ``image_mean``; the message names the image's index and its shape or file.
        """
        settings = dataclasses.replace(self, **overrides) if overrides else self
        batch = _as_list(images)
        pixels = [settings._process_one(image, index) for index, image in enumerate(batch)]
        return BatchFeature(pixel_values=_collate(pixels, return_tensors))

    def _process_one(self, image: Any, index: int) -> np.ndarray:
        """One image -> (C, H, W) float32 pixels."""
        image = _load_if_path(image, index)
        array = self._to_channels_first(image, index)  # (C, H, W), input dtype
        if self.do_resize:
            array = _resize(array, (self.size["height"], self.size["width"]), self.resample, index)
        if self.do_rescale:
            if np.issubdtype(array.dtype, np.floating) and array.size and array.min() >= 0 and array.max() <= 1:
                logger.warning("image %d already looks rescaled to [0, 1]; rescaling it again (as transformers)", index)
            array = (array.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            array = self._normalize(array, index)
        return array

    def _to_channels_first(self, image: Any, index: int) -> np.ndarray:
        """Any single image -> (C, H, W), RGB-converted as ``do_convert_rgb`` says; channels checked."""
        pil = _pil_image()
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        if isinstance(image, pil.Image):
            if self._converts(len(image.getbands())):
                image = _pil_to_rgb(image)
            array = np.asarray(image)
            return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        if not isinstance(image, np.ndarray):
            raise DataError(
                f"image {index}: expected a path, PIL image, numpy array or tensor, got {type(image).__name__}"
            )
        if image.ndim == 2:
            image = image[None]
        elif image.ndim != 3:
            raise DataError(f"image {index}: shape {image.shape} is not an image (expected (H, W), HWC or CHW)")
        elif image.shape[0] in _CHANNEL_COUNTS:
            pass  # CHW (also when both ends could be channels, as transformers assumes)
        elif image.shape[-1] in _CHANNEL_COUNTS:
            image = np.moveaxis(image, -1, 0)
        else:
            raise DataError(
                f"image {index}: shape {image.shape} has no channel axis of 1, 3 or 4 channels (first or last); "
                "pass a gray (H, W), an RGB or an RGBA image as HWC or CHW"
            )
        if self._converts(image.shape[0]):
            image = _array_to_rgb(image)
        return image

    def _converts(self, channels: int) -> bool:
        """Whether an image with ``channels`` channels is converted to RGB."""
        if self.do_convert_rgb is not None:
            return self.do_convert_rgb
        return self.num_channels == 3 and channels != 3

    def _normalize(self, array: np.ndarray, index: int) -> np.ndarray:
        channels = array.shape[0]
        if self.num_channels is not None and self.num_channels != channels:
            raise DataError(
                f"image {index}: {channels} channel(s) (shape {array.shape}, channels first) but image_mean/image_std "
                f"have {self.num_channels}; convert the image (do_convert_rgb=True gives RGB) or use a processor "
                "whose image_mean matches the model's num_channels"
            )
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        mean = np.broadcast_to(np.asarray(self.image_mean, dtype=array.dtype), (channels,))
        std = np.broadcast_to(np.asarray(self.image_std, dtype=array.dtype), (channels,))
        return ((array.T - mean) / std).T  # the same operations as transformers, for the same float32 rounding


# ----------------------------------------------------------------------------------------------- helpers
def _as_list(images: Any) -> list[Any]:
    """The images of one call as a list: a list/tuple as is, a 4-D array or tensor split, anything else alone."""
    is_batch_array = isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4
    batch = list(images) if isinstance(images, (list, tuple)) or is_batch_array else [images]
    if not batch:
        raise DataError("no images to process: got an empty list; pass at least one image")
    return batch


def _load_if_path(image: Any, index: int) -> Any:
    """A file path, or the encoded bytes of an image file (PNG, JPEG...), opened as an RGB PIL image with its EXIF
    orientation applied (as transformers' ``load_image``); anything else as it is."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        import io

        return decode_image(io.BytesIO(image), f"image {index} ({len(image)} bytes)")
    if not isinstance(image, (str, os.PathLike)):
        return image
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {index}: {path}: no such image file")
    return decode_image(path, f"image {index}: {path}")


def decode_image(file: Any, where: str) -> Any:
    """An image file (a path or a binary file object) decoded whole into an RGB PIL image, EXIF-rotated.

    Raises:
        DataError: naming ``where``: the data is damaged, truncated or not an image.
    """
    pil = _pil_image()
    from PIL import ImageOps

    try:
        with pil.open(file) as opened:
            opened.load()  # decode now: a truncated or damaged file fails here, not later
            return ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, SyntaxError, ValueError, pil.DecompressionBombError) as err:
        raise DataError(
            f"{where}: cannot read the image ({type(err).__name__}: {err}); the file is damaged, "
            "truncated or not an image: re-export or re-download it"
        ) from err


def _pil_to_rgb(image: Any) -> Any:
    """RGB PIL image; transparency composited onto white (transformers' ``convert_to_rgb``)."""
    pil = _pil_image()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        background = pil.new("RGBA", image.size, (255, 255, 255, 255))
        return pil.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) with 1 or 4 channels -> 3 channels: gray repeated, RGBA composited onto white (as transformers)."""
    channels = image.shape[0]
    if channels == 1:
        return np.repeat(image, 3, axis=0)
    if channels == 4:
        if np.issubdtype(image.dtype, np.floating) and (image.min() < 0.0 or image.max() > 1.0):
            raise DataError(f"RGBA image with float values outside [0, 1] ({image.min()}, {image.max()})")
        white = 255 if np.issubdtype(image.dtype, np.integer) else 1.0
        alpha = image[3:4] / white
        composite = alpha * image[:3] + (1 - alpha) * white
        return np.round(composite).astype(image.dtype) if white == 255 else composite.astype(image.dtype)
    return image


def _resize(array: np.ndarray, size: tuple[int, int], resample: int, index: int) -> np.ndarray:
    """(C, H, W) -> (C, height, width) through Pillow on uint8 pixels, as transformers resizes.

    Float pixels in [0, 1] are scaled to [0, 255] for Pillow and back; integral values in [0, 255] pass as uint8.
    """
    pil = _pil_image()
    scaled = _needs_scaling_for_pil(array, index)
    hwc = np.moveaxis(array, 0, -1)
    hwc = hwc[..., 0] if hwc.shape[-1] == 1 else hwc
    if scaled:
        hwc = (hwc.astype(np.float64) * 255).astype(np.float32)
    resized = np.asarray(pil.fromarray(hwc.astype(np.uint8)).resize((size[1], size[0]), resample=resample))
    resized = resized[None] if resized.ndim == 2 else np.moveaxis(resized, -1, 0)
    return (resized.astype(np.float64) * (1 / 255)).astype(np.float32) if scaled else resized


def _needs_scaling_for_pil(array: np.ndarray, index: int) -> bool:
    """Whether pixels must be scaled by 255 to become uint8 for Pillow (floats in [0, 1]); others must fit uint8."""
    if array.dtype == np.uint8:
        return False
    if np.allclose(array, array.astype(int)):
        if array.min() >= 0 and array.max() <= 255:
            return False
        raise DataError(f"image {index}: integer pixel values outside [0, 255] ({array.min()}, {array.max()})")
    if array.min() >= 0 and array.max() <= 1:
        return True
    raise DataError(
        f"image {index}: float pixel values outside [0, 1] ({array.min():.4g}, {array.max():.4g}) cannot be resized; "
        "pass uint8 pixels or floats in [0, 1]"
    )


def _collate(pixels: list[np.ndarray], return_tensors: str | None) -> Any:
    """Stack same-sized (C, H, W) arrays into one batch for ``"pt"`` / ``"np"``; a list of arrays for None."""
    if return_tensors is None:
        return pixels
    if return_tensors not in ("pt", "np"):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        raise DataError(f"images of different shapes {sorted(shapes)} cannot be stacked; resize them (do_resize=True)")
    batch = np.stack(pixels)
    return torch.from_numpy(batch) if return_tensors == "pt" else batch


__all__ = ["BaseImageProcessor", "BatchFeature", "PREPROCESSOR_CONFIG_NAME", "ViTImageProcessor", "decode_image"]
