"""Whisper: a log-mel audio encoder and a text decoder that attends to it (Radford et al., 2022).

Reads top to bottom: attention, encoder block, decoder block, encoder, decoder, bare model, the
conditional-generation head. Parameter names follow the Hugging Face checkpoints
(``model.encoder.conv1.weight``, ``model.decoder.layers.0.encoder_attn.q_proj.weight``, ...), so published
Whisper weights load unchanged; ``proj_out`` shares the decoder's token embedding.

Shapes: B batch, F mel bins, N input frames (3000 = 30 s), Te encoder positions (N / 2), T new decoder
tokens, S keys (cached + new), C d_model, nh heads, hs head size, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.utils import GenerationMixin
from modelcore.modeling_outputs import BaseModelOutput, ModelOutput
from modelcore.modeling_utils import PreTrainedModel
from modelcore.models.whisper.configuration_whisper import WhisperConfig
from modelcore.nn.activations import get_activation
from modelcore.nn.attention import get_attention_function
from modelcore.nn.cache import DynamicCache
from modelcore.nn.losses import token_cross_entropy
from modelcore.nn.masks import causal_mask
from modelcore.nn.packed_linear import linear


@dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # decoder output (B, T, C)
    past_key_values: Any = None  # a WhisperCache
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, Te, C)
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, V)
    past_key_values: Any = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None


class WhisperCache:
    """The decoder's cache: self-attention keys/values grow per token; cross-attention ones are computed once.

    The encoder output does not change while decoding, so each layer projects it to keys and values on the
    first step and reuses them on every later one.
    """

    def __init__(self) -> None:
        self.self_attention = DynamicCache()
        self.cross_attention: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (B, nh, Te, hs) k, v

    def get_seq_length(self) -> int:
        return self.self_attention.get_seq_length()

    def reorder(self, rows: torch.LongTensor) -> None:
        """Pick batch rows (beam search)."""
        self.self_attention.reorder(rows)
        self.cross_attention = {
            i: (k.index_select(0, rows.to(k.device)), v.index_select(0, rows.to(v.device)))
            for i, (k, v) in self.cross_attention.items()
        }


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """(length, channels) sine then cosine features: the encoder's fixed position table (as OpenAI's code)."""
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length).view(-1, 1) * inv_timescales.view(1, -1)
    return torch.cat([scaled_time.sin(), scaled_time.cos()], dim=1)


class WhisperAttention(nn.Module):
    """Multi-head attention; keys have no bias (as OpenAI's checkpoints). Self- or cross-attention."""

    def __init__(self, config: WhisperConfig, num_heads: int, layer_idx: int | None = None) -> None:
        super().__init__()
        c = config.d_model
        self.config = config
        self.num_heads = num_heads
        self.head_dim = c // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.layer_idx = layer_idx  # the cache slot of a decoder layer
        self.q_proj = nn.Linear(c, c)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

    def forward(
        self,
        hidden: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        cache: WhisperCache | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); cross-attention when ``key_value_states`` (B, Te, C) is given."""
        b, t, _ = hidden.shape
        q = self._heads(linear(self.q_proj, hidden))
        if key_value_states is None:  # self-attention
            k, v = self._heads(linear(self.k_proj, hidden)), self._heads(linear(self.v_proj, hidden))
            if cache is not None:
                k, v = cache.self_attention.update(k, v, self.layer_idx)  # (B, nh, S, hs)
        elif cache is not None and self.layer_idx in cache.cross_attention:
            k, v = cache.cross_attention[self.layer_idx]
        else:
            k, v = (
                self._heads(linear(self.k_proj, key_value_states)),
                self._heads(linear(self.v_proj, key_value_states)),
            )
            if cache is not None:
                cache.cross_attention[self.layer_idx] = (k, v)
        attend = get_attention_function(self.config.attn_implementation)
        out, _ = attend(
            q,
            k,
            v,
            mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, T, nh, hs)
        return linear(self.out_proj, out.reshape(b, t, -1))


class WhisperEncoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + fc2(act(fc1(norm(x))))."""

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        self.self_attn = WhisperAttention(config, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.activation_fn = get_activation(config.activation_function)
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        attn_out = self.self_attn(self.self_attn_layer_norm(hidden))
        hidden = hidden + F.dropout(attn_out, self.dropout, self.training)
        ffn = self.activation_fn(linear(self.fc1, self.final_layer_norm(hidden)))
        ffn = linear(self.fc2, F.dropout(ffn, self.activation_dropout, self.training))
        return hidden + F.dropout(ffn, self.dropout, self.training)


class WhisperDecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to the encoder output, then the MLP."""

    def __init__(self, config: WhisperConfig, layer_idx: int) -> None:
        super().__init__()
        heads = config.decoder_attention_heads
        self.self_attn = WhisperAttention(config, heads, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.encoder_attn = WhisperAttention(config, heads, layer_idx)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.activation_fn = get_activation(config.activation_function)
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout

    def forward(
        self,
        hidden: torch.Tensor,
        encoder_hidden: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: WhisperCache | None,
    ) -> torch.Tensor:
        attn_out = self.self_attn(self.self_attn_layer_norm(hidden), cache=cache, mask=mask, is_causal=is_causal)
        hidden = hidden + F.dropout(attn_out, self.dropout, self.training)
        cross_out = self.encoder_attn(
            self.encoder_attn_layer_norm(hidden), key_value_states=encoder_hidden, cache=cache
        )
        hidden = hidden + F.dropout(cross_out, self.dropout, self.training)
        ffn = self.activation_fn(linear(self.fc1, self.final_layer_norm(hidden)))
        ffn = linear(self.fc2, F.dropout(ffn, self.activation_dropout, self.training))
        return hidden + F.dropout(ffn, self.dropout, self.training)


class WhisperPreTrainedModel(PreTrainedModel):
    config_class = WhisperConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    _no_split_modules = ["WhisperEncoderLayer", "WhisperDecoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        with torch.no_grad():
            if isinstance(module, (nn.Linear, nn.Conv1d)):
                module.weight.normal_(mean=0.0, std=std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(mean=0.0, std=std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            if isinstance(module, WhisperEncoder):
                module.embed_positions.weight.copy_(sinusoids(*module.embed_positions.weight.shape))


class WhisperEncoder(WhisperPreTrainedModel):
    """(B, F, N) log-mel frames -> two convolutions (the second halves N) -> positions -> blocks -> norm."""

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__(config)
        c = config.d_model
        self.conv1 = nn.Conv1d(config.num_mel_bins, c, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, c)
        self.embed_positions.requires_grad_(False)  # fixed sinusoids, stored in the checkpoints all the same
        self.layers = nn.ModuleList(WhisperEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(c)
        self.post_init()

    @property
    def expected_frames(self) -> int:
        """N, the input length the position table was made for (3000 frames = 30 s)."""
        return self.config.max_source_positions * self.conv1.stride[0] * self.conv2.stride[0]

    def forward(self, input_features: torch.Tensor, output_hidden_states: bool = False) -> BaseModelOutput:
        """Encode (B, F, N) log-mel features into (B, Te, C).

        Raises:
            ValueError: the features are not (B, num_mel_bins, expected_frames) (pad or cut audio to 30 s).
        """
        expected = (self.config.num_mel_bins, self.expected_frames)
        if input_features.ndim != 3 or tuple(input_features.shape[1:]) != expected:
            raise ValueError(
                f"Whisper expects input_features of shape (batch, {expected[0]}, {expected[1]}), got "
                f"{tuple(input_features.shape)}: the feature extractor pads or truncates audio to 30 s"
            )
        x = F.gelu(self.conv1(input_features.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, Te, C)
        hidden = F.dropout(x + self.embed_positions.weight, self.config.dropout, self.training)
        all_hidden: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            hidden = layer(hidden)
        hidden = self.layer_norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=tuple(all_hidden) if all_hidden else None)


class WhisperDecoder(WhisperPreTrainedModel):
    """Token + learned position embeddings -> blocks (causal self-attention, cross-attention) -> norm."""

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__(config)
        c = config.d_model
        self.embed_tokens = nn.Embedding(config.vocab_size, c, config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_target_positions, c)
        self.layers = nn.ModuleList(WhisperDecoderLayer(config, i) for i in range(config.decoder_layers))
        self.layer_norm = nn.LayerNorm(c)
        self.embed_scale = math.sqrt(c) if config.scale_embedding else 1.0
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: WhisperCache | None = None,
        output_hidden_states: bool = False,
    ) -> Seq2SeqModelOutput:
        """(B, T) token ids attending to (B, Te, C) encoder states -> (B, T, C).

        Raises:
            ValueError: more tokens (cached + new) than ``max_target_positions``.
        """
        t = input_ids.shape[1]
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past_length + t > self.config.max_target_positions:
            raise ValueError(
                f"the decoder takes at most max_target_positions={self.config.max_target_positions} tokens, got "
                f"{past_length} cached + {t} new; lower max_new_tokens"
            )
        positions = self.embed_positions.weight[past_length : past_length + t]  # (T, C)
        hidden = self.embed_tokens(input_ids) * self.embed_scale + positions
        hidden = F.dropout(hidden, self.config.dropout, self.training)
        mask, is_causal = causal_mask(attention_mask, t, past_length, hidden.device)
        all_hidden: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            hidden = layer(hidden, encoder_hidden_states, mask, is_causal, past_key_values)
        hidden = self.layer_norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return Seq2SeqModelOutput(
            last_hidden_state=hidden,
            past_key_values=past_key_values,
            decoder_hidden_states=tuple(all_hidden) if all_hidden else None,
        )


def shift_tokens_right(labels: torch.LongTensor, pad_token_id: int, decoder_start_token_id: int) -> torch.LongTensor:
    """Decoder inputs for teacher forcing: ``decoder_start_token_id`` then the labels but the last; -100 -> pad."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


class WhisperModel(WhisperPreTrainedModel):
    """Encoder + decoder, returning the decoder's hidden states (B, T, C) and the encoder's (B, Te, C)."""

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__(config)
        self.encoder = WhisperEncoder(config)
        self.decoder = WhisperDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.decoder.embed_tokens = value

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | torch.Tensor | None = None,
        past_key_values: WhisperCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> Seq2SeqModelOutput:
        """Encode (unless ``encoder_outputs`` is given) and decode.

        Args:
            input_features: (B, F, N) log-mel features from ``WhisperFeatureExtractor``.
            decoder_input_ids: (B, T) decoder tokens (the new ones when a cache is passed).
            decoder_attention_mask: (B, S) 1 for real decoder tokens, 0 for padding; None means none.
            encoder_outputs: a previous encoder output (its ``last_hidden_state``, or that tensor) to reuse.
            past_key_values: a ``WhisperCache`` from an earlier call, extended in place.
            use_cache: create a cache when none is passed; default ``config.use_cache``.
            output_hidden_states: also return every layer's input and the final states.

        Returns:
            ``Seq2SeqModelOutput``.
        """
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids are required (start with config.decoder_start_token_id)")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if encoder_outputs is None:
            if input_features is None:
                raise ValueError("pass input_features or encoder_outputs")
            encoder_outputs = self.encoder(input_features, output_hidden_states=output_hidden_states)
        elif isinstance(encoder_outputs, torch.Tensor):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = WhisperCache()
        decoded = self.decoder(
            decoder_input_ids,
            encoder_outputs.last_hidden_state,
            decoder_attention_mask,
            past_key_values if use_cache else None,
            output_hidden_states,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoded.last_hidden_state,
            past_key_values=decoded.past_key_values,
            decoder_hidden_states=decoded.decoder_hidden_states,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
        )


class WhisperForConditionalGeneration(WhisperPreTrainedModel, GenerationMixin):
    """Whisper + the language-model head ``proj_out`` (tied to the decoder's token embedding).

    ``generate(input_features)`` transcribes: the decoder starts from the prompt ``<|startoftranscript|>``
    plus the ``forced_decoder_ids`` of the config (``<|notimestamps|>`` for the English-only checkpoints) and
    decodes greedily with a KV cache (see ``modelcore.models.whisper.generation_whisper``).
    """

    _tied_weights_keys = {"proj_out.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__(config)
        self.model = WhisperModel(config)
        self.proj_out = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.proj_out

    def get_encoder(self) -> WhisperEncoder:
        return self.model.encoder

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | torch.Tensor | None = None,
        past_key_values: WhisperCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
    ) -> Seq2SeqLMOutput:
        """Next-token logits over the vocabulary, and the loss when ``labels`` are given.

        Args:
            labels: (B, T) target ids; without ``decoder_input_ids`` the decoder reads them shifted right
                behind ``decoder_start_token_id`` (as transformers). -100 positions carry no loss.
            logits_to_keep: 0 computes logits for every position; n > 0 only for the last n.
            Other arguments: see ``WhisperModel.forward``.

        Returns:
            ``Seq2SeqLMOutput`` with ``logits`` (B, T', V).
        """
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        outputs = self.model(
            input_features=input_features,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = linear(self.proj_out, hidden)  # (B, T', V)
        loss = token_cross_entropy(logits.float(), labels) if labels is not None else None
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            decoder_hidden_states=outputs.decoder_hidden_states,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
        )

    @torch.inference_mode()
    def generate(
        self,
        input_features: torch.Tensor,
        generation_config: GenerationConfig | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Transcribe (B, F, N) log-mel features greedily; see ``generation_whisper.whisper_generate``.

        Returns:
            (B, n) the generated tokens after the decoder prompt, without EOS (rows that stopped early are
            padded with ``pad_token_id``), as transformers' ``WhisperForConditionalGeneration.generate``.
        """
        from modelcore.models.whisper.generation_whisper import whisper_generate

        return whisper_generate(self, input_features, generation_config, decoder_input_ids, **kwargs)
