"""BertConfig: the hyperparameters of a BERT encoder, with the Hugging Face field names and defaults.

The defaults describe bert-base-uncased. Only the encoder is modelled: ``is_decoder=True`` (BERT as
a causal decoder) and relative position embeddings are rejected with a ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from modelcore.configuration_utils import PROBLEM_TYPES, SIZE_LIMITS, ConfigError, PretrainedConfig
from modelcore.nn.activation_names import ACTIVATION_NAMES

__all__ = ["PROBLEM_TYPES", "BertConfig"]


@dataclasses.dataclass(kw_only=True, eq=False)
class BertConfig(PretrainedConfig):
    """Configuration of a BERT encoder and its heads.

    Args:
        vocab_size: number of token ids (rows of ``word_embeddings``).
        hidden_size: width C of every layer.
        num_hidden_layers: number of ``BertLayer`` blocks.
        num_attention_heads: heads per attention layer; must divide ``hidden_size``.
        intermediate_size: width of the feed-forward layer.
        hidden_act: feed-forward (and MLM transform) activation, one of ``nn.activation_names.ACTIVATION_NAMES``.
        hidden_dropout_prob: dropout on embeddings and on each residual branch.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        max_position_embeddings: longest sequence the learned position table covers.
        type_vocab_size: number of segment (token type) ids.
        initializer_range: std of the normal init of Linear and Embedding weights.
        layer_norm_eps: epsilon of every LayerNorm.
        position_embedding_type: only "absolute" (learned positions) is supported.
        use_cache: kept for config.json compatibility; an encoder has no KV cache.
        classifier_dropout: dropout before classification heads; None means ``hidden_dropout_prob``.
        is_decoder: must be False (BERT as a causal decoder is not modelled).
    """

    model_type: ClassVar[str] = "bert"
    # Position and segment ids are real (1, max_position_embeddings) int64 buffers even on the meta device:
    # 2**20 positions cost 16 MB there [8,192 in the longest BERT-style checkpoints].
    size_limits: ClassVar[dict[str, int]] = {**SIZE_LIMITS, "max_position_embeddings": 2**20}

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    use_cache: bool = True
    classifier_dropout: float | None = None
    is_decoder: bool = False
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        self._require_positive(
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "layer_norm_eps",
        )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"{name}.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        self._require_probability("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
        self._require_non_negative("initializer_range")
        self._require_one_of("hidden_act", ACTIVATION_NAMES)
        if self.position_embedding_type != "absolute":
            raise ConfigError(
                f"{name}.position_embedding_type {self.position_embedding_type!r} is not supported; only 'absolute'"
            )
        if self.is_decoder:
            raise ConfigError(f"{name}.is_decoder=True is not supported: only the bidirectional encoder is modelled")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"{name}.pad_token_id ({self.pad_token_id}) must be in [0, vocab_size={self.vocab_size})")

    def parameter_estimate(self) -> dict[str, int]:
        """Parameters by term: embeddings, encoder layers, pooler and the largest head (MLM or classifier)."""
        h, inter = self.hidden_size, self.intermediate_size
        attention = 4 * (h * h + h) + 2 * h  # q, k, v, output dense, LayerNorm
        feed_forward = h * inter + inter + inter * h + h + 2 * h
        return {
            "embeddings (vocab_size x hidden_size)": self.vocab_size * h,
            "positions (max_position_embeddings x hidden_size)": self.max_position_embeddings * h,
            "segments (type_vocab_size x hidden_size)": self.type_vocab_size * h,
            "layers (num_hidden_layers x hidden_size x (4 hidden_size + 2 intermediate_size))": (
                self.num_hidden_layers * (attention + feed_forward)
            ),
            "pooler and heads (hidden_size x (hidden_size + num_labels))": h * (h + self.num_labels + 4),
        }
