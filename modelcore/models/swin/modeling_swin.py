"""Swin Transformer (Liu et al., 2021): attention inside shifted windows, in stages joined by patch merging.

Reads top to bottom: patch embeddings, embeddings, windows (partition / reverse / shift mask), window
attention with its relative position bias, feed-forward, block, patch merging, stage, encoder, the bare
``SwinModel``, then the classification head. Module and parameter names follow the Hugging Face checkpoints
(``swin.embeddings.patch_embeddings.projection``, ``swin.encoder.layers.0.blocks.1.attention.self.query``,
``swin.encoder.layers.0.downsample.reduction``, ``classifier``), so published Swin checkpoints load unchanged.

Shapes: B batch, Ch image channels, H x W image, h x w patch grid of a stage, L = h * w tokens, C stage
width, ws window side, N = ws * ws tokens per window, nW windows per image, nh heads, hs head size.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from modelcore.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from modelcore.modeling_utils import PreTrainedModel
from modelcore.models.swin.configuration_swin import SwinConfig
from modelcore.models.vit.configuration_vit import as_pair
from modelcore.nn.activations import get_activation
from modelcore.nn.attention import get_attention_function
from modelcore.nn.losses import sequence_classification_loss

# Added to the scores of token pairs that a shifted window brought together from different image regions.
SHIFT_MASK_VALUE = -100.0


# -------------------------------------------------------------------------------------------- embeddings
class SwinPatchEmbeddings(nn.Module):
    """Patches projected by a strided convolution; an image not a multiple of the patch size is zero-padded."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = as_pair(config.patch_size)
        self.projection = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, Ch, H, W) -> (B, L, C) and the patch grid (h, w)."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, {self.num_channels}, height, width) as config.num_channels says, "
                f"got shape {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        pad_h, pad_w = (-height) % self.patch_size[0], (-width) % self.patch_size[1]
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
        embeddings = self.projection(pixel_values)  # (B, C, h, w)
        grid = (embeddings.shape[2], embeddings.shape[3])
        return embeddings.flatten(2).transpose(1, 2), grid


class SwinEmbeddings(nn.Module):
    """Patch embeddings, LayerNorm, optional absolute positions, dropout."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.patch_embeddings = SwinPatchEmbeddings(config)
        (height, width), (patch_h, patch_w) = as_pair(config.image_size), as_pair(config.patch_size)
        self.patch_grid = (height // patch_h, width // patch_w)
        num_patches = self.patch_grid[0] * self.patch_grid[1]
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, num_patches, config.embed_dim)) if config.use_absolute_embeddings else None
        )
        self.norm = nn.LayerNorm(config.embed_dim)  # default eps, as in the reference code
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The absolute position table resized bicubically to another patch grid (no CLS row, unlike ViT)."""
        if grid == self.patch_grid and grid[0] == grid[1] and not torch.jit.is_tracing():
            return self.position_embeddings
        dim = self.position_embeddings.shape[-1]
        table = self.position_embeddings.reshape(1, *self.patch_grid, dim).permute(0, 3, 1, 2)  # (1, C, h0, w0)
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, -1, dim)

    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        embeddings, grid = self.patch_embeddings(pixel_values)
        embeddings = self.norm(embeddings)  # (B, L, C)
        if self.position_embeddings is not None:
            if interpolate_pos_encoding:
                embeddings = embeddings + self.interpolate_pos_encoding(grid)
            elif grid != self.patch_grid:
                raise ValueError(
                    f"input patch grid {grid} doesn't match the model's absolute position table {self.patch_grid}; "
                    "resize the image (the image processor does) or pass interpolate_pos_encoding=True"
                )
            else:
                embeddings = embeddings + self.position_embeddings
        return self.dropout(embeddings), grid


# ------------------------------------------------------------------------------------------------ windows
def window_partition(features: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, h, w, C) -> (B * nW, ws, ws, C); h and w are multiples of ``window_size``."""
    batch_size, height, width, channels = features.shape
    features = features.view(
        batch_size, height // window_size, window_size, width // window_size, window_size, channels
    )
    return features.transpose(2, 3).reshape(-1, window_size, window_size, channels)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """(B * nW, ws, ws, C) -> (B, h, w, C): the inverse of ``window_partition``."""
    channels = windows.shape[-1]
    windows = windows.view(-1, height // window_size, width // window_size, window_size, window_size, channels)
    return windows.transpose(2, 3).reshape(-1, height, width, channels)


def shifted_window_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device
) -> torch.Tensor:
    """(nW, N, N) additive mask: ``SHIFT_MASK_VALUE`` between tokens that the cyclic shift put in one window
    from different regions of the image, 0 elsewhere. Regions per axis: [0, n - ws), [n - ws, n - shift), [n - shift, n).
    """
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    row_region = (rows >= height - window_size).long() + (rows >= height - shift_size).long()
    col_region = (cols >= width - window_size).long() + (cols >= width - shift_size).long()
    regions = (row_region[:, None] * 3 + col_region[None, :]).float()[None, :, :, None]  # (1, h, w, 1)
    windows = window_partition(regions, window_size).reshape(-1, window_size * window_size)  # (nW, N)
    differs = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(differs.shape, device=device).masked_fill(differs, SHIFT_MASK_VALUE)


def relative_position_index(window_size: int, table_window: int | None = None) -> torch.Tensor:
    """(N, N) row of the bias table for each pair of tokens in a ``window_size`` window.

    The table has (2 * table_window - 1)^2 rows, one per relative offset; a window smaller than the table's
    (an input smaller than the configured window) uses the rows of its offsets.
    """
    table_window = table_window or window_size
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # (2, N)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (table_window - 1)  # (N, N, 2)
    return relative[..., 0] * (2 * table_window - 1) + relative[..., 1]


# --------------------------------------------------------------------------------------------- attention
def _eager_biased_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, scaling: float, dropout: float
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v with (B', nh, N, hs) inputs; returns (B', N, nh, hs)."""
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling + bias
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0:
        probs = F.dropout(probs, dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous()


class SwinSelfAttention(nn.Module):
    """Multi-head attention inside each window, with a learned bias per head and relative offset.

    The bias is additive (a float mask), which the shared dispatch table's ``sdpa`` kernel takes as is; its
    ``eager`` kernel takes boolean masks only, so eager runs ``_eager_biased_attention`` here.
    """

    def __init__(self, config: SwinConfig, dim: int, num_heads: int) -> None:
        super().__init__()
        self.config = config  # read at forward time, so switching eager/sdpa needs no rebuild
        self.num_heads = num_heads
        self.head_size = dim // num_heads
        self.scaling = self.head_size**-0.5
        self.window_size = config.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * config.window_size - 1) ** 2, num_heads))
        self.register_buffer(
            "relative_position_index", relative_position_index(config.window_size).flatten(), persistent=False
        )
        self.query = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.key = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.value = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.dropout_prob = config.attention_probs_dropout_prob

    def position_bias(self, window_size: int) -> torch.Tensor:
        """(1, nh, N, N) bias for a ``window_size`` window (the configured one, or smaller)."""
        if window_size == self.window_size:
            index = self.relative_position_index
        else:
            index = relative_position_index(window_size, self.window_size).flatten().to(self.relative_position_index)
        area = window_size * window_size
        return self.relative_position_bias_table[index].view(area, area, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, windows: torch.Tensor, window_size: int, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """(B * nW, N, C) windows -> (B * nW, N, C); ``shift_mask`` is (nW, N, N) or None."""
        num_windows_total, tokens, dim = windows.shape
        head_shape = (num_windows_total, tokens, self.num_heads, self.head_size)
        query, key, value = (
            proj(windows).view(head_shape).transpose(1, 2) for proj in (self.query, self.key, self.value)
        )  # (B * nW, nh, N, hs)
        bias = self.position_bias(window_size)  # (1, nh, N, N)
        if shift_mask is not None:
            windows_per_image = shift_mask.shape[0]
            bias = bias.unsqueeze(1) + shift_mask[None, :, None]  # (1, nW, nh, N, N)
            bias = bias.expand(num_windows_total // windows_per_image, -1, -1, -1, -1).reshape(
                num_windows_total, self.num_heads, tokens, tokens
            )
        dropout = self.dropout_prob if self.training else 0.0
        if self.config.attn_implementation == "eager":
            out = _eager_biased_attention(query, key, value, bias, self.scaling, dropout)
        else:
            attend = get_attention_function(self.config.attn_implementation)
            out, _ = attend(query, key, value, bias.to(query.dtype), scaling=self.scaling, dropout=dropout)
        return out.reshape(num_windows_total, tokens, dim)


class SwinSelfOutput(nn.Module):
    """Output projection of attention, then dropout."""

    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class SwinAttention(nn.Module):
    def __init__(self, config: SwinConfig, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self = SwinSelfAttention(config, dim, num_heads)
        self.output = SwinSelfOutput(config, dim)

    def forward(self, windows: torch.Tensor, window_size: int, shift_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(windows, window_size, shift_mask))


# ---------------------------------------------------------------------------------------------------- MLP
class SwinIntermediate(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, int(config.mlp_ratio * dim))
        self.intermediate_act_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class SwinOutput(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(int(config.mlp_ratio * dim), dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class SwinDropPath(nn.Module):
    """Stochastic depth: in training, drop a sample's residual branch with probability ``drop_prob``."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)
        mask = torch.rand(shape, dtype=hidden_states.dtype, device=hidden_states.device).add_(keep).floor_()
        return hidden_states / keep * mask


# ---------------------------------------------------------------------------------------------------- block
class SwinLayer(nn.Module):
    """One block: (shifted) window attention and feed-forward, each pre-norm with a residual.

    Even blocks of a stage use regular windows, odd ones windows shifted by half a window. A grid no larger
    than the window is one window, unshifted (as in transformers).
    """

    def __init__(self, config: SwinConfig, dim: int, num_heads: int, drop_path: float, shift_size: int) -> None:
        super().__init__()
        self.window_size = config.window_size
        self.shift_size = shift_size
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = SwinAttention(config, dim, num_heads)
        self.drop_path = SwinDropPath(drop_path)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = SwinIntermediate(config, dim)
        self.output = SwinOutput(config, dim)

    def forward(self, hidden_states: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, L, C) tokens of an (h, w) grid -> (B, L, C)."""
        height, width = grid
        window_size, shift_size = self.window_size, self.shift_size
        if min(grid) <= window_size:
            window_size, shift_size = min(grid), 0
        batch_size, _, channels = hidden_states.shape
        shortcut = hidden_states
        features = self.layernorm_before(hidden_states).view(batch_size, height, width, channels)
        pad_h, pad_w = (-height) % window_size, (-width) % window_size
        features = F.pad(features, (0, 0, 0, pad_w, 0, pad_h))  # (B, h', w', C), multiples of ws
        padded_h, padded_w = height + pad_h, width + pad_w
        shift_mask = None
        if shift_size > 0:
            features = torch.roll(features, shifts=(-shift_size, -shift_size), dims=(1, 2))
            shift_mask = shifted_window_mask(padded_h, padded_w, window_size, shift_size, features.device)
            shift_mask = shift_mask.to(features.dtype)
        windows = window_partition(features, window_size).view(-1, window_size * window_size, channels)
        attended = self.attention(windows, window_size, shift_mask)  # (B * nW, N, C)
        features = window_reverse(
            attended.view(-1, window_size, window_size, channels), window_size, padded_h, padded_w
        )
        if shift_size > 0:
            features = torch.roll(features, shifts=(shift_size, shift_size), dims=(1, 2))
        features = features[:, :height, :width].reshape(batch_size, height * width, channels)
        hidden_states = shortcut + self.drop_path(features)
        return hidden_states + self.output(self.intermediate(self.layernorm_after(hidden_states)))


class SwinPatchMerging(nn.Module):
    """Each 2 x 2 group of tokens concatenated (4C) and projected to 2C: the grid halves, the width doubles."""

    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)  # default eps, as in the reference code

    def forward(self, hidden_states: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, h * w, C) -> (B, ceil(h/2) * ceil(w/2), 2C); an odd grid is zero-padded first."""
        height, width = grid
        batch_size, _, channels = hidden_states.shape
        features = hidden_states.view(batch_size, height, width, channels)
        features = F.pad(features, (0, 0, 0, width % 2, 0, height % 2))
        # order (row, col): (0, 0), (1, 0), (0, 1), (1, 1), as the checkpoints' reduction weights expect
        features = torch.cat([features[:, row::2, col::2] for col in range(2) for row in range(2)], dim=-1)
        return self.reduction(self.norm(features.view(batch_size, -1, 4 * channels)))


class SwinStage(nn.Module):
    """``depth`` blocks at one width, then patch merging (all stages but the last)."""

    def __init__(self, config: SwinConfig, stage: int, drop_path: list[float]) -> None:
        super().__init__()
        dim = config.stage_dim(stage)
        self.blocks = nn.ModuleList(
            SwinLayer(
                config, dim, config.num_heads[stage], rate, shift_size=0 if i % 2 == 0 else config.window_size // 2
            )
            for i, rate in enumerate(drop_path)
        )
        self.downsample = SwinPatchMerging(config, dim) if stage < config.num_layers - 1 else None

    def forward(self, hidden_states: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for block in self.blocks:
            hidden_states = block(hidden_states, grid)
        if self.downsample is None:
            return hidden_states, grid
        return self.downsample(hidden_states, grid), ((grid[0] + 1) // 2, (grid[1] + 1) // 2)


class SwinEncoder(nn.Module):
    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # rising linearly to the rate
        starts = [sum(config.depths[:stage]) for stage in range(config.num_layers)]
        self.layers = nn.ModuleList(
            SwinStage(config, stage, rates[start : start + depth])
            for stage, (start, depth) in enumerate(zip(starts, config.depths, strict=True))
        )

    def forward(
        self, hidden_states: torch.Tensor, grid: tuple[int, int], output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Run the stages; also return the embeddings and each stage's (merged) output when asked."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for stage in self.layers:
            hidden_states, grid = stage(hidden_states, grid)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


# ------------------------------------------------------------------------------------------------- models
class SwinPreTrainedModel(PreTrainedModel):
    """Shared Swin plumbing: config class, checkpoint prefix, weight init."""

    config_class = SwinConfig
    base_model_prefix = "swin"
    main_input_name = "pixel_values"
    _no_split_modules: ClassVar[list[str]] = ["SwinStage"]
    # Older checkpoints store the relative position index, a constant rebuilt at init; MIM ones a mask token.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
        r"attention\.self\.relative_position_index$",
        r"(^|\.)embeddings\.mask_token$",
    ]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Swin's init: N(0, initializer_range) Linear/Conv weights, zero biases, bias tables and positions."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, SwinEmbeddings) and module.position_embeddings is not None:
            module.position_embeddings.zero_()
        elif isinstance(module, SwinSelfAttention):  # the index buffer too, for models built on the meta device
            module.relative_position_bias_table.zero_()
            module.relative_position_index.copy_(relative_position_index(module.window_size).flatten())

    def get_input_embeddings(self) -> nn.Module:
        return getattr(self, self.base_model_prefix).embeddings.patch_embeddings


class SwinModel(SwinPreTrainedModel):
    """The bare Swin encoder: embeddings, the stages, a final LayerNorm and (optionally) average pooling.

    Args:
        config: the model configuration.
        add_pooling_layer: return ``pooler_output``, the mean of the final tokens (no weights).
    """

    def __init__(self, config: SwinConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.num_features = config.hidden_size
        self.embeddings = SwinEmbeddings(config)
        self.encoder = SwinEncoder(config)
        self.layernorm = nn.LayerNorm(self.num_features, eps=config.layer_norm_eps)
        self.add_pooling_layer = add_pooling_layer
        self.post_init()

    def get_input_embeddings(self) -> SwinPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        *,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """Encode a batch of images of any size (padded to the patch and window sizes as needed).

        Args:
            pixel_values: (B, Ch, H, W) normalized pixels (the image processor's output).
            interpolate_pos_encoding: resize the absolute position table (``use_absolute_embeddings``) to
                another image size; without absolute positions any size works as is.
            output_hidden_states: also return the embeddings and each stage's output (default: config).

        Returns:
            ``BaseModelOutputWithPooling``: ``last_hidden_state`` (B, L, hidden_size) after the final LayerNorm,
            ``pooler_output`` (B, hidden_size) or None, and the optional ``hidden_states``.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        embeddings, grid = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states, all_hidden_states = self.encoder(embeddings, grid, output_hidden_states)
        sequence_output = self.layernorm(hidden_states)  # (B, L, hidden_size)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=sequence_output.mean(dim=1) if self.add_pooling_layer else None,
            hidden_states=all_hidden_states,
        )


# -------------------------------------------------------------------------------------------------- heads
class SwinForImageClassification(SwinPreTrainedModel):
    """Swin with a linear classifier on the mean of the final tokens."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.swin = SwinModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
    ) -> SequenceClassifierOutput:
        """Classify each image; inputs as in ``SwinModel.forward``.

        Args:
            labels: (B,) class ids (or floats for regression / multi-label, as in ``sequence_classification_loss``).

        Returns:
            ``SequenceClassifierOutput`` with ``logits`` (B, num_labels) and ``loss`` when labels are given.
        """
        outputs = self.swin(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, output_hidden_states=output_hidden_states
        )
        logits = self.classifier(outputs.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(logits, labels, self.num_labels, self.config.problem_type)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = ["SwinForImageClassification", "SwinLayer", "SwinModel", "SwinPreTrainedModel", "SwinStage"]
