"""AutoImageProcessor: the image processor class of a checkpoint, from its files, through an explicit registry."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from modelcore.auto.registry import resolve
from modelcore.errors import ConfigError
from modelcore.image_processing import PREPROCESSOR_CONFIG_NAME, BaseImageProcessor
from modelcore.json_files import read_json_object

logger = logging.getLogger(__name__)

# key (preprocessor_config.json's image_processor_type / feature_extractor_type, or config.json's model_type)
# -> "module:Class". transformers names one processor under several class names (its fast, PIL and legacy
# feature-extractor variants); all compute the same pixels, so they map to one class here.
_VIT = "modelcore.image_processing:ViTImageProcessor"
IMAGE_PROCESSOR_REGISTRY: dict[str, str | type[BaseImageProcessor]] = {
    "ViTImageProcessor": _VIT,
    "ViTImageProcessorFast": _VIT,
    "ViTImageProcessorPil": _VIT,
    "ViTFeatureExtractor": _VIT,
    "vit": _VIT,
    "swin": _VIT,
}


class AutoImageProcessor:
    """Loads the registered image processor class of a checkpoint.

    The class is looked up by ``image_processor_type`` (or the older ``feature_extractor_type``) in
    ``preprocessor_config.json`` first, then by ``model_type`` in ``config.json``.
    """

    def __init__(self) -> None:
        raise TypeError("AutoImageProcessor is not instantiable: use AutoImageProcessor.from_pretrained(src)")

    @staticmethod
    def register(key: str, processor_class: type[BaseImageProcessor], exist_ok: bool = False) -> None:
        """Map an ``image_processor_type`` name or a ``model_type`` to an image processor class.

        Args:
            key: ``"ViTImageProcessor"`` or ``"vit"``.
            processor_class: a :class:`BaseImageProcessor` subclass.
            exist_ok: allow replacing an existing registration.

        Raises:
            ValueError: ``key`` is registered already and ``exist_ok`` is False.
            TypeError: ``processor_class`` is not an image processor class.
        """
        if not (isinstance(processor_class, type) and issubclass(processor_class, BaseImageProcessor)):
            raise TypeError(f"processor_class must be a subclass of BaseImageProcessor, got {processor_class!r}")
        if key in IMAGE_PROCESSOR_REGISTRY and not exist_ok:
            raise ValueError(f"{key!r} is already registered; pass exist_ok=True to replace it")
        IMAGE_PROCESSOR_REGISTRY[key] = processor_class

    @staticmethod
    def from_pretrained(src: str | os.PathLike, **overrides: Any) -> BaseImageProcessor:
        """Load the image processor of a checkpoint with its registered class.

        Args:
            src: a checkpoint directory or an asset name (see ``modelcore.serialization.sources``).
            **overrides: settings replacing the stored ones (``size=...``).

        Returns:
            The image processor.

        Raises:
            FileNotFoundError: the directory has no ``preprocessor_config.json``.
            ConfigError: the file is not a JSON object, or names a processor type (and model type) with no class.
        """
        from modelcore.serialization.sources import resolve_source

        directory = Path(resolve_source(src))
        path = directory / PREPROCESSOR_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; the checkpoint has no image processor settings")
        data = read_json_object(path, ConfigError)
        keys = [data.get("image_processor_type"), data.get("feature_extractor_type")]
        config_path = directory / "config.json"
        if config_path.is_file():
            keys.append(read_json_object(config_path, ConfigError).get("model_type"))
        known = [key for key in keys if isinstance(key, str) and key in IMAGE_PROCESSOR_REGISTRY]
        if not known:
            raise ConfigError(
                f"{path}: no image processor class for {[k for k in keys if k is not None]}; known: "
                f"{', '.join(sorted(IMAGE_PROCESSOR_REGISTRY))} (register one with AutoImageProcessor.register)"
            )
        processor_class = resolve(IMAGE_PROCESSOR_REGISTRY[known[0]])
        logger.debug("AutoImageProcessor: %s -> %s (keys %s)", directory, processor_class.__name__, keys)
        return processor_class.from_dict(data, str(path), **overrides)
