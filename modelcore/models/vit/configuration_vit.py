"""ViTConfig: the hyperparameters of a Vision Transformer, with the Hugging Face field names and defaults.

The defaults describe google/vit-base-patch16-224. ``image_size`` and ``patch_size`` are an int (square) or a
``[height, width]`` pair, as in transformers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from modelcore.configuration_utils import ConfigError, PretrainedConfig
from modelcore.nn.activation_names import ACTIVATION_NAMES

__all__ = ["ViTConfig", "as_pair"]


def as_pair(value: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """``224`` -> ``(224, 224)``; ``[224, 160]`` -> ``(224, 160)`` (height, width)."""
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def check_image_sizes(config: PretrainedConfig) -> None:
    """``image_size``, ``patch_size`` (ints or pairs of positive ints) and ``num_channels`` are usable."""
    name = type(config).__name__
    for field in ("image_size", "patch_size"):
        value = getattr(config, field)
        pair = [value] if isinstance(value, int) else list(value)
        if len(pair) not in (1, 2) or any(v <= 0 for v in pair):
            raise ConfigError(f"{name}.{field} must be a positive int or a [height, width] pair, got {value!r}")
    image, patch = as_pair(config.image_size), as_pair(config.patch_size)
    if image[0] < patch[0] or image[1] < patch[1]:
        raise ConfigError(f"{name}.image_size {config.image_size!r} is smaller than patch_size {config.patch_size!r}")
    config._require_positive("num_channels")


@dataclasses.dataclass(kw_only=True, eq=False)
class ViTConfig(PretrainedConfig):
    """Configuration of a ViT encoder and its image classification head.

    Args:
        hidden_size: width C of every layer.
        num_hidden_layers: number of ``ViTLayer`` blocks.
        num_attention_heads: heads per attention layer; must divide ``hidden_size``.
        intermediate_size: width of the feed-forward layer.
        hidden_act: feed-forward activation, one of ``nn.activation_names.ACTIVATION_NAMES``.
        hidden_dropout_prob: dropout on embeddings and on each residual branch.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        initializer_range: std of the (truncated) normal init of weights, CLS token and positions.
        layer_norm_eps: epsilon of every LayerNorm.
        image_size: the training resolution (int or [height, width]); the position table has one row per patch.
        patch_size: side of the square (or [height, width]) patches the image is cut into.
        num_channels: input channels (3 for RGB).
        qkv_bias: whether the query, key and value projections have a bias.
        encoder_stride: upsampling factor of transformers' masked-image-modelling decoder (kept for config.json).
        pooler_output_size: width of the pooler (bare ``ViTModel``); None means ``hidden_size``.
        pooler_act: the pooler's activation.
    """

    model_type: ClassVar[str] = "vit"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int | list[int] = 224
    patch_size: int | list[int] = 16
    num_channels: int = 3
    qkv_bias: bool = True
    encoder_stride: int = 16
    pooler_output_size: int | None = None
    pooler_act: str = "tanh"

    def __post_init__(self) -> None:
        if self.pooler_output_size is None:
            self.pooler_output_size = self.hidden_size
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        self._require_positive(
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "layer_norm_eps",
            "pooler_output_size",
        )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"ViTConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        check_image_sizes(self)
        self._require_probability("hidden_dropout_prob", "attention_probs_dropout_prob")
        self._require_non_negative("initializer_range")
        self._require_one_of("hidden_act", ACTIVATION_NAMES)
        self._require_one_of("pooler_act", ACTIVATION_NAMES)

    @property
    def num_patches(self) -> int:
        """Patches per image at ``image_size``: rows of the position table, less the CLS row."""
        (height, width), (patch_h, patch_w) = as_pair(self.image_size), as_pair(self.patch_size)
        return (height // patch_h) * (width // patch_w)

    def parameter_estimate(self) -> dict[str, int]:
        """Parameters by term: patch projection, positions, encoder layers, pooler and classifier."""
        h, inter = self.hidden_size, self.intermediate_size
        patch_h, patch_w = as_pair(self.patch_size)
        per_layer = 4 * (h * h + h) + 2 * h * inter + inter + h + 4 * h
        return {
            "patch projection (num_channels x patch area x hidden_size)": self.num_channels * patch_h * patch_w * h,
            "positions ((num_patches + 1) x hidden_size)": (self.num_patches + 1) * h,
            "layers (num_hidden_layers x hidden_size x (4 hidden_size + 2 intermediate_size))": (
                self.num_hidden_layers * per_layer
            ),
            "pooler and head (hidden_size x (pooler_output_size + num_labels))": h
            * ((self.pooler_output_size or h) + self.num_labels),
        }
