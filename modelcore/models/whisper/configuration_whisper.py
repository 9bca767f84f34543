"""WhisperConfig: the hyperparameters of a Whisper encoder-decoder, with the Hugging Face field names and defaults.

The defaults describe whisper-tiny (multilingual, 51,865 tokens); tiny.en has 51,864. Besides the sizes, the
configuration carries what decoding needs from the checkpoint: ``decoder_start_token_id`` (``<|startoftranscript|>``),
``suppress_tokens`` (never generated) and ``begin_suppress_tokens`` (not generated first), as Hugging Face's
``config.json`` of the published checkpoints does.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from modelcore.configuration_utils import SIZE_LIMITS, ConfigError, PretrainedConfig
from modelcore.nn.activation_names import ACTIVATION_NAMES

__all__ = ["WhisperConfig"]


@dataclasses.dataclass(kw_only=True, eq=False)
class WhisperConfig(PretrainedConfig):
    """Configuration of a Whisper model.

    Args:
        vocab_size: number of token ids (rows of ``decoder.embed_tokens``).
        num_mel_bins: mel channels of the log-mel input (80; 128 for large-v3).
        d_model: width C of every layer, encoder and decoder.
        encoder_layers / decoder_layers: number of blocks in each stack.
        encoder_attention_heads / decoder_attention_heads: heads per attention layer; must divide ``d_model``.
        encoder_ffn_dim / decoder_ffn_dim: width of the feed-forward layers.
        activation_function: feed-forward activation, one of ``nn.activation_names.ACTIVATION_NAMES``.
        dropout / attention_dropout / activation_dropout: dropout on residual branches, attention weights and
            the feed-forward activation (training only).
        encoder_layerdrop / decoder_layerdrop: kept for config.json round trips; layers are never dropped here.
        max_source_positions: encoder positions (1500 = 30 s of audio after the stride-2 convolution).
        max_target_positions: decoder positions, the longest token sequence (448).
        init_std: std of the normal init of Linear, Conv1d and Embedding weights.
        scale_embedding: multiply token embeddings by sqrt(d_model) (False for every Whisper checkpoint).
        decoder_start_token_id: the first decoder token, ``<|startoftranscript|>``.
        suppress_tokens: token ids never generated.
        begin_suppress_tokens: token ids not generated as the first token after the prompt.
        forced_decoder_ids: ``[[position, token], ...]`` the tokens after ``decoder_start_token_id`` in every
            transcription prompt (``[[1, <|notimestamps|>]]`` for the English-only checkpoints).
        use_cache: whether the decoder returns a KV cache by default.
    """

    model_type: ClassVar[str] = "whisper"
    # Position tables are real parameters; 2**20 positions x 2**20 width would already be far past any checkpoint.
    size_limits: ClassVar[dict[str, int]] = {
        **SIZE_LIMITS,
        "d_model": 2**20,
        "max_source_positions": 2**20,
        "max_target_positions": 2**20,
        "encoder_layers": 10_000,
        "decoder_layers": 10_000,
    }

    vocab_size: int = 51865
    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    decoder_layers: int = 4
    decoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    decoder_ffn_dim: int = 1536
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    activation_function: str = "gelu"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    scale_embedding: bool = False
    max_source_positions: int = 1500
    max_target_positions: int = 448
    decoder_start_token_id: int = 50257
    pad_token_id: int | None = 50256
    bos_token_id: int | list[int] | None = 50256
    eos_token_id: int | list[int] | None = 50256
    suppress_tokens: list[int] | None = None
    begin_suppress_tokens: list[int] | None = dataclasses.field(default_factory=lambda: [220, 50256])
    forced_decoder_ids: list[list[int | None]] | None = None
    use_cache: bool = True
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = True

    @property
    def num_hidden_layers(self) -> int:
        """The encoder's depth (Hugging Face's alias)."""
        return self.encoder_layers

    @property
    def hidden_size(self) -> int:
        """``d_model`` (Hugging Face's alias)."""
        return self.d_model

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        self._require_positive(
            "vocab_size",
            "num_mel_bins",
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "max_source_positions",
            "max_target_positions",
        )
        for heads in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, heads) != 0:
                raise ConfigError(
                    f"{name}.d_model ({self.d_model}) must be divisible by {heads} ({getattr(self, heads)})"
                )
        self._require_probability("dropout", "attention_dropout", "activation_dropout")
        self._require_probability("encoder_layerdrop", "decoder_layerdrop")
        self._require_non_negative("init_std")
        self._require_one_of("activation_function", ACTIVATION_NAMES)
        if not self.is_encoder_decoder:
            raise ConfigError(f"{name}.is_encoder_decoder must be True: Whisper is an encoder-decoder")
        for field in ("decoder_start_token_id", "pad_token_id"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name}.{field} ({value}) must be in [0, vocab_size={self.vocab_size})")
        for field in ("suppress_tokens", "begin_suppress_tokens"):
            bad = [i for i in getattr(self, field) or [] if not 0 <= i < self.vocab_size]
            if bad:
                raise ConfigError(f"{name}.{field} holds ids outside [0, vocab_size={self.vocab_size}): {bad[:5]}")

        for pair in self.forced_decoder_ids or []:
            if len(pair) != 2 or pair[0] is None or pair[0] < 1:
                raise ConfigError(f"{name}.forced_decoder_ids entries must be [position >= 1, token], got {pair}")

    def parameter_estimate(self) -> dict[str, int]:
        """Parameters by term: embeddings, positions, convolutions, encoder and decoder layers."""
        c = self.d_model
        attention = 4 * c * c + 3 * c + 2 * c  # q, k (no bias), v, out, LayerNorm
        encoder_ffn = 2 * c * self.encoder_ffn_dim + self.encoder_ffn_dim + c + 2 * c
        decoder_ffn = 2 * c * self.decoder_ffn_dim + self.decoder_ffn_dim + c + 2 * c
        return {
            "embeddings (vocab_size x d_model)": self.vocab_size * c,
            "positions ((max_source_positions + max_target_positions) x d_model)": (
                (self.max_source_positions + self.max_target_positions) * c
            ),
            "convolutions (3 x d_model x (num_mel_bins + d_model))": 3 * c * (self.num_mel_bins + c),
            "encoder layers (encoder_layers x (attention + feed-forward))": self.encoder_layers
            * (attention + encoder_ffn),
            "decoder layers (decoder_layers x (2 attentions + feed-forward))": self.decoder_layers
            * (2 * attention + decoder_ffn),
        }
