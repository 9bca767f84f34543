"""A timm-style factory: ``create_model("vit_tiny_patch16_224", num_classes=10)`` over a registry of named sizes.

Each name is a function returning literal sizes (a :class:`ModelSpec`); ``@register`` puts it in
:data:`MODEL_REGISTRY` under the function's name, so the tests, parametrized over the registry, enrol a new
size by themselves. The models are the families' own classes (``ViTForImageClassification``...), with the
Hugging Face weight names, so ``save_pretrained`` / ``from_pretrained`` work on them as on any checkpoint.

Hub weights are unreachable here: ``pretrained=True`` is an error that says so; ``pretrained=<folder>`` loads
a local checkpoint (one saved by ``save_pretrained``, or a Hugging Face folder) of the same family.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelcore.auto.configuration_auto import config_class_for
from modelcore.auto.modeling_auto import AutoModel, AutoModelForImageClassification
from modelcore.errors import ConfigError, ModelcoreError
from modelcore.image_processing import ViTImageProcessor
from modelcore.modeling_utils import PreTrainedModel

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # the statistics timm's and Microsoft's ImageNet checkpoints were trained with
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The literal sizes of one named model.

    Attributes:
        model_type: the family (``"vit"``, ``"swin"``), a key of ``modelcore.auto.registry.FAMILIES``.
        sizes: the family config's fields (``hidden_size=192, ...``).
        num_classes: the classifier's width unless ``create_model`` is given another.
        processor: ``ViTImageProcessor`` settings matching the model's input (size, mean, std, resample).
    """

    model_type: str
    sizes: dict[str, Any]
    num_classes: int = 1000
    processor: dict[str, Any] = dataclasses.field(default_factory=dict)


MODEL_REGISTRY: dict[str, Callable[[], ModelSpec]] = {}


def register(function: Callable[[], ModelSpec]) -> Callable[[], ModelSpec]:
    """Add a size function to :data:`MODEL_REGISTRY` under its own name."""
    if function.__name__ in MODEL_REGISTRY:
        raise ValueError(f"model {function.__name__!r} is already registered")
    MODEL_REGISTRY[function.__name__] = function
    return function


# ----------------------------------------------------------------------------------------------------- ViT
def _vit(image_size: int = 224, patch_size: int = 16, **sizes: Any) -> dict[str, Any]:
    return dict(image_size=image_size, patch_size=patch_size, **sizes)


def _processor(image_size: int, mean: list[float], std: list[float], resample: int = 2) -> dict[str, Any]:
    return dict(size={"height": image_size, "width": image_size}, image_mean=mean, image_std=std, resample=resample)


@register
def vit_tiny_patch16_224() -> ModelSpec:
    sizes = _vit(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768)
    return ModelSpec("vit", sizes, processor=_processor(224, [0.5] * 3, [0.5] * 3))


@register
def vit_small_patch16_224() -> ModelSpec:
    sizes = _vit(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
    return ModelSpec("vit", sizes, processor=_processor(224, [0.5] * 3, [0.5] * 3))


@register
def vit_base_patch16_224() -> ModelSpec:
    sizes = _vit(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    return ModelSpec("vit", sizes, processor=_processor(224, [0.5] * 3, [0.5] * 3))


@register
def vit_large_patch16_224() -> ModelSpec:
    sizes = _vit(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    return ModelSpec("vit", sizes, processor=_processor(224, [0.5] * 3, [0.5] * 3))


@register
def vit_mnist_patch4_28() -> ModelSpec:
    """A small ViT for 28 x 28 digits: 7 x 7 patches of 4 pixels; gray images become 3 equal channels."""
    sizes = _vit(
        image_size=28, patch_size=4, hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=256
    )
    return ModelSpec("vit", sizes, num_classes=10, processor=_processor(28, [0.5] * 3, [0.5] * 3))


# ---------------------------------------------------------------------------------------------------- Swin
def _swin(embed_dim: int, depths: list[int], num_heads: list[int], window_size: int = 7) -> dict[str, Any]:
    return dict(
        image_size=224, patch_size=4, embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size
    )


@register
def swin_tiny_patch4_window7_224() -> ModelSpec:
    sizes = _swin(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])
    return ModelSpec("swin", sizes, processor=_processor(224, IMAGENET_MEAN, IMAGENET_STD, resample=3))


@register
def swin_small_patch4_window7_224() -> ModelSpec:
    sizes = _swin(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24])
    return ModelSpec("swin", sizes, processor=_processor(224, IMAGENET_MEAN, IMAGENET_STD, resample=3))


@register
def swin_base_patch4_window7_224() -> ModelSpec:
    sizes = _swin(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
    return ModelSpec("swin", sizes, processor=_processor(224, IMAGENET_MEAN, IMAGENET_STD, resample=3))


# ----------------------------------------------------------------------------------------------- factory
def list_models(pattern: str = "*") -> list[str]:
    """The registered names matching a shell-style ``pattern`` (``"vit_*"``), sorted."""
    return sorted(name for name in MODEL_REGISTRY if fnmatch.fnmatch(name, pattern))


def model_spec(name: str) -> ModelSpec:
    """The sizes registered under ``name``; an unknown name is a ``ConfigError`` listing the close ones."""
    if name not in MODEL_REGISTRY:
        close = difflib.get_close_matches(name, MODEL_REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_models())}"
        raise ConfigError(f"unknown model name {name!r}{hint}")
    return MODEL_REGISTRY[name]()


def create_model(
    name: str, pretrained: bool | str | os.PathLike = False, num_classes: int | None = None, **overrides: Any
) -> PreTrainedModel:
    """Build a registered model, randomly initialized or from a local checkpoint.

    Args:
        name: a key of :data:`MODEL_REGISTRY` (see :func:`list_models`).
        pretrained: False for random weights; a checkpoint folder to load (its family must be the name's);
            True is an error, as hub weights cannot be downloaded here.
        num_classes: the classifier's width (default: the spec's, 1000 for the ImageNet sizes); 0 returns the
            bare model (features, no head), as timm does. With a checkpoint, a different width gets a new,
            randomly initialized classifier.
        **overrides: config fields replacing the spec's sizes (``num_hidden_layers=2``, ``image_size=32``...);
            an unknown field is a ``TypeError``.

    Returns:
        ``<Family>ForImageClassification`` (``<Family>Model`` for ``num_classes=0``), in train mode when new.

    Raises:
        ModelcoreError: ``pretrained=True`` (no hub here: pass a local folder instead).
        ConfigError: an unknown name, bad sizes, or a checkpoint of another family.
    """
    spec = model_spec(name)
    num_classes = spec.num_classes if num_classes is None else num_classes
    if num_classes < 0:
        raise ConfigError(f"num_classes must be >= 0, got {num_classes}")
    auto_class = AutoModel if num_classes == 0 else AutoModelForImageClassification
    if pretrained is True:
        raise ModelcoreError(
            f"create_model({name!r}, pretrained=True): hub weights are unreachable here; pass pretrained=<folder> "
            "with a local checkpoint, or load one with AutoModelForImageClassification.from_pretrained(<folder>)"
        )
    if pretrained:
        return _from_checkpoint(Path(pretrained), spec, auto_class, num_classes, overrides)
    labels = {"num_labels": num_classes} if num_classes else {}
    config = config_class_for(spec.model_type)(**(spec.sizes | overrides), **labels)
    return auto_class.model_class_for(spec.model_type)(config)


def _from_checkpoint(
    folder: Path, spec: ModelSpec, auto_class: type, num_classes: int, overrides: dict[str, Any]
) -> PreTrainedModel:
    from modelcore.configuration_utils import read_source_config

    data, where = read_source_config(folder)
    if data.get("model_type") != spec.model_type:
        raise ConfigError(
            f"{where}: model_type {data.get('model_type')!r} is not {spec.model_type!r}, this name's family"
        )
    if num_classes and num_classes != len(data.get("id2label") or {}):
        overrides = {**overrides, "num_labels": num_classes}
        return auto_class.from_pretrained(folder, ignore_mismatched_sizes=True, **overrides)
    return auto_class.from_pretrained(folder, **overrides)


def create_image_processor(name: str, **overrides: Any) -> ViTImageProcessor:
    """The image processor matching a registered model's input (size, mean, std, resample).

    Args:
        name: a key of :data:`MODEL_REGISTRY`.
        **overrides: ``ViTImageProcessor`` settings replacing the spec's.
    """
    return ViTImageProcessor(**(model_spec(name).processor | overrides))


__all__ = ["MODEL_REGISTRY", "ModelSpec", "create_image_processor", "create_model", "list_models", "register"]
