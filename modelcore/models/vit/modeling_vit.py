"""ViT (Dosovitskiy et al., 2020): an image cut into patches, read by a pre-norm Transformer encoder.

Reads top to bottom: patch embeddings, embeddings (CLS token + positions, interpolated for another image
size), attention, feed-forward, layer, encoder, pooler, the bare ``ViTModel``, then the classification head.
Module and parameter names follow the Hugging Face checkpoints (``vit.embeddings.patch_embeddings.projection``,
``vit.encoder.layer.0.attention.attention.query``, ``classifier``), so published ViT checkpoints load unchanged.

Shapes: B batch, Ch image channels, H x W image, P number of patches, T = P + 1 tokens (with CLS),
C hidden size, nh heads, hs head size (C = nh * hs).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.utils.checkpoint
from torch import nn

from modelcore.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, SequenceClassifierOutput
from modelcore.modeling_utils import PreTrainedModel
from modelcore.models.vit.configuration_vit import ViTConfig, as_pair
from modelcore.nn.activations import get_activation
from modelcore.nn.attention import get_attention_function
from modelcore.nn.losses import sequence_classification_loss


# -------------------------------------------------------------------------------------------- embeddings
class ViTPatchEmbeddings(nn.Module):
    """Non-overlapping patches, each projected to C by one strided convolution: (B, Ch, H, W) -> (B, P, C)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = as_pair(config.patch_size)
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, {self.num_channels}, height, width) as config.num_channels says, "
                f"got shape {tuple(pixel_values.shape)}"
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, C, H/p, W/p) -> (B, P, C)


class ViTEmbeddings(nn.Module):
    """CLS token followed by the patch embeddings, plus learned positions, then dropout."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.image_size = as_pair(config.image_size)
        self.patch_size = as_pair(config.patch_size)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """The position table for an H x W image: the patch grid resized bicubically, the CLS row kept.

        As transformers (after DINO): at the training size the table is returned unchanged.

        Returns:
            (1, T, C) positions for ``(height // patch) * (width // patch)`` patches plus CLS.
        """
        grid_h, grid_w = (size // patch for size, patch in zip(self.image_size, self.patch_size, strict=True))
        new_h, new_w = height // self.patch_size[0], width // self.patch_size[1]
        if (new_h, new_w) == (grid_h, grid_w) and height == width and not torch.jit.is_tracing():
            return self.position_embeddings
        dim = self.position_embeddings.shape[-1]
        class_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        patch_pos = patch_pos.reshape(1, grid_h, grid_w, dim).permute(0, 3, 1, 2)  # (1, C, gh, gw)
        patch_pos = nn.functional.interpolate(patch_pos, size=(new_h, new_w), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, P, C)
        return torch.cat((class_pos, patch_pos), dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        patches = self.patch_embeddings(pixel_values)  # (B, P, C)
        embeddings = torch.cat((self.cls_token.expand(batch_size, -1, -1), patches), dim=1)  # (B, T, C)
        if interpolate_pos_encoding:
            positions = self.interpolate_pos_encoding(height, width)
        elif (height, width) != self.image_size:
            raise ValueError(
                f"input image size ({height}*{width}) doesn't match the model's image_size "
                f"({self.image_size[0]}*{self.image_size[1]}); resize the image (the image processor does) or pass "
                "interpolate_pos_encoding=True"
            )
        else:
            positions = self.position_embeddings
        return self.dropout(embeddings + positions)


# --------------------------------------------------------------------------------------------- attention
class ViTSelfAttention(nn.Module):
    """Multi-head self-attention over all tokens; the kernel comes from ``config.attn_implementation``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config  # read at forward time, so switching eager/sdpa needs no rebuild
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.dropout_prob = config.attention_probs_dropout_prob

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, C) -> (B, T, C), and the (B, nh, T, T) weights when asked."""
        batch_size, seq_length, hidden_size = hidden_states.shape
        head_shape = (batch_size, seq_length, self.num_heads, self.head_size)
        query, key, value = (
            proj(hidden_states).view(head_shape).transpose(1, 2)  # (B, nh, T, hs)
            for proj in (self.query, self.key, self.value)
        )
        attend = get_attention_function(self.config.attn_implementation)
        out, weights = attend(
            query,
            key,
            value,
            None,
            scaling=self.scaling,
            dropout=self.dropout_prob if self.training else 0.0,
            output_attentions=output_attentions,
        )
        return out.reshape(batch_size, seq_length, hidden_size), weights


class ViTSelfOutput(nn.Module):
    """Output projection of attention, then dropout; the residual is added by the layer (pre-norm)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class ViTAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTSelfAttention(config)
        self.output = ViTSelfOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(hidden_states, output_attentions)
        return self.output(attended), weights


# ---------------------------------------------------------------------------------------------------- MLP
class ViTIntermediate(nn.Module):
    """First feed-forward projection C -> intermediate_size, with the activation."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class ViTOutput(nn.Module):
    """Second feed-forward projection back to C, dropout, plus the residual."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states)) + residual


# -------------------------------------------------------------------------------------------- layer, encoder
class ViTLayer(nn.Module):
    """One pre-norm Transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTAttention(config)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutput(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        hidden_states = attended + hidden_states
        return self.output(self.intermediate(self.layernorm_after(hidden_states)), hidden_states), weights


class ViTEncoder(nn.Module):
    """The stack of ``num_hidden_layers`` layers, optionally with activation checkpointing per layer."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ViTLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False  # set by PreTrainedModel.gradient_checkpointing_enable()

    def forward(
        self, hidden_states: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> BaseModelOutput:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                hidden_states, weights = torch.utils.checkpoint.checkpoint(
                    layer, hidden_states, output_attentions, use_reentrant=False
                )
            else:
                hidden_states, weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


class ViTPooler(nn.Module):
    """Dense + activation (tanh) on the CLS token: the image vector of a bare ``ViTModel``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.pooler_output_size)
        self.activation = get_activation(config.pooler_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))  # (B, pooler_output_size)


# ------------------------------------------------------------------------------------------------- models
class ViTPreTrainedModel(PreTrainedModel):
    """Shared ViT plumbing: config class, checkpoint prefix, weight init."""

    config_class = ViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["ViTEmbeddings", "ViTLayer"]
    # Masked-image-modelling checkpoints carry a mask token this model does not use.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"(^|\.)embeddings\.mask_token$"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """ViT's init: truncated N(0, initializer_range) for projections, CLS token and positions; zero biases."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, ViTEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)

    def get_input_embeddings(self) -> nn.Module:
        return getattr(self, self.base_model_prefix).embeddings.patch_embeddings


class ViTModel(ViTPreTrainedModel):
    """The bare ViT encoder: embeddings, ``num_hidden_layers`` layers, final LayerNorm and (optionally) the pooler.

    Args:
        config: the model configuration.
        add_pooling_layer: build ``pooler`` (dense + tanh on CLS); the classification head leaves it out.
    """

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config)
        self.encoder = ViTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> ViTPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        *,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """Encode a batch of images.

        Args:
            pixel_values: (B, Ch, H, W) normalized pixels (the image processor's output).
            interpolate_pos_encoding: allow an H x W other than ``config.image_size`` by resizing the position
                table (bicubic, as transformers); otherwise another size is an error.
            output_hidden_states: also return the embeddings and every layer's output (default: config).
            output_attentions: also return every layer's attention probabilities (default: config).

        Returns:
            ``BaseModelOutputWithPooling``: ``last_hidden_state`` (B, T, C) after the final LayerNorm,
            ``pooler_output`` (B, pooler_output_size) or None, and the optional tuples.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        embeddings = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)  # (B, T, C)
        encoded = self.encoder(embeddings, output_hidden_states, output_attentions)
        sequence_output = self.layernorm(encoded.last_hidden_state)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )


# -------------------------------------------------------------------------------------------------- heads
class ViTForImageClassification(ViTPreTrainedModel):
    """ViT (without pooler) with a linear classifier on the final CLS token."""

    # An ImageNet-21k (bare ViTModel) checkpoint also carries the pooler, which this head does not use.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
        *ViTPreTrainedModel._keys_to_ignore_on_load_unexpected,
        r"^(vit\.)?pooler\.",
    ]

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> SequenceClassifierOutput:
        """Classify each image; inputs as in ``ViTModel.forward``.

        Args:
            labels: (B,) class ids (or floats for regression / multi-label, as in ``sequence_classification_loss``).

        Returns:
            ``SequenceClassifierOutput`` with ``logits`` (B, num_labels) and ``loss`` when labels are given.
        """
        outputs = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.classifier(outputs.last_hidden_state[:, 0])  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(logits, labels, self.num_labels, self.config.problem_type)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = ["ViTForImageClassification", "ViTLayer", "ViTModel", "ViTPreTrainedModel"]
