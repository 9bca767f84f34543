"""SwinConfig: the hyperparameters of a Swin Transformer, with the Hugging Face field names and defaults.

The defaults describe microsoft/swin-tiny-patch4-window7-224. ``hidden_size`` (the width of the last stage,
``embed_dim * 2 ** (len(depths) - 1)``) and ``num_layers`` (the number of stages) are derived, as in
transformers, and written to config.json for readers that expect them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from modelcore.configuration_utils import ConfigError, PretrainedConfig
from modelcore.models.vit.configuration_vit import as_pair, check_image_sizes
from modelcore.nn.activation_names import ACTIVATION_NAMES

__all__ = ["SwinConfig"]


@dataclasses.dataclass(kw_only=True, eq=False)
class SwinConfig(PretrainedConfig):
    """Configuration of a Swin encoder and its image classification head.

    Args:
        image_size: the training resolution (int or [height, width]).
        patch_size: side of the patches of the patch embedding (4 for every published Swin).
        num_channels: input channels (3 for RGB).
        embed_dim: width of the first stage; each later stage doubles it (patch merging).
        depths: blocks per stage.
        num_heads: attention heads per stage; ``num_heads[i]`` must divide ``embed_dim * 2 ** i``.
        window_size: side of the square windows attention runs in.
        mlp_ratio: feed-forward width as a multiple of the stage width.
        qkv_bias: whether the query, key and value projections have a bias.
        hidden_dropout_prob: dropout on embeddings and residual branches.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        drop_path_rate: stochastic depth rate of the last block (rising linearly from 0 over the blocks).
        hidden_act: feed-forward activation, one of ``nn.activation_names.ACTIVATION_NAMES``.
        use_absolute_embeddings: add learned absolute position embeddings to the patches.
        initializer_range: std of the normal init of Linear weights.
        layer_norm_eps: epsilon of the blocks' and the final LayerNorms.
        encoder_stride: upsampling factor of transformers' masked-image-modelling decoder (kept for config.json).
    """

    model_type: ClassVar[str] = "swin"

    image_size: int | list[int] = 224
    patch_size: int | list[int] = 4
    num_channels: int = 3
    embed_dim: int = 96
    depths: list[int] = dataclasses.field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = dataclasses.field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    hidden_act: str = "gelu"
    use_absolute_embeddings: bool = False
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    encoder_stride: int = 32

    @property
    def num_layers(self) -> int:
        """Number of stages."""
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Width of the last stage: what the final LayerNorm, the pooled output and the classifier see."""
        return int(self.embed_dim * 2 ** (len(self.depths) - 1))

    def stage_dim(self, stage: int) -> int:
        """Width of stage ``stage`` (0-based): ``embed_dim`` doubled once per patch merging before it."""
        return int(self.embed_dim * 2**stage)

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        self._require_positive("embed_dim", "window_size", "mlp_ratio", "layer_norm_eps")
        if not self.depths or any(d <= 0 for d in self.depths):
            raise ConfigError(f"{name}.depths must be a non-empty list of positive ints, got {self.depths!r}")
        if len(self.num_heads) != len(self.depths):
            raise ConfigError(
                f"{name}.num_heads has {len(self.num_heads)} entries but depths has {len(self.depths)}: one per stage"
            )
        for stage, heads in enumerate(self.num_heads):
            if heads <= 0 or self.stage_dim(stage) % heads != 0:
                raise ConfigError(
                    f"{name}.num_heads[{stage}]={heads} must be positive and divide the stage width "
                    f"embed_dim * 2**{stage} = {self.stage_dim(stage)}"
                )
        check_image_sizes(self)
        self._require_probability("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate")
        self._require_non_negative("initializer_range")
        self._require_one_of("hidden_act", ACTIVATION_NAMES)

    def to_dict(self) -> dict[str, Any]:
        """All fields, plus the derived ``hidden_size`` and ``num_layers`` (recomputed, never a stale file value)."""
        out = super().to_dict()
        out["hidden_size"], out["num_layers"] = self.hidden_size, self.num_layers
        return out

    def parameter_estimate(self) -> dict[str, int]:
        """Parameters by term: patch projection, the stages' blocks and merging layers, classifier."""
        patch_h, patch_w = as_pair(self.patch_size)
        blocks = 0
        for stage, depth in enumerate(self.depths):
            dim = self.stage_dim(stage)
            inner = int(self.mlp_ratio * dim)
            blocks += depth * (
                4 * dim * dim + 2 * dim * inner + (2 * self.window_size - 1) ** 2 * self.num_heads[stage]
            )
            blocks += 8 * dim * dim if stage < len(self.depths) - 1 else 0  # patch merging: 4 dim -> 2 dim
        return {
            "patch projection (num_channels x patch area x embed_dim)": self.num_channels
            * patch_h
            * patch_w
            * self.embed_dim,
            "stages (depths x stage width^2 x (4 + 2 mlp_ratio))": blocks,
            "head (hidden_size x num_labels)": self.hidden_size * (self.num_labels + 2),
        }
