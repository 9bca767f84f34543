"""BERT (Devlin et al., 2018): a bidirectional Transformer encoder and its task heads.

Reads top to bottom: embeddings, attention, feed-forward, layer, encoder, pooler,
the bare ``BertModel``, then the heads. Module and parameter names follow the Hugging Face
checkpoints (``encoder.layer.0.attention.self.query.weight``, ``embeddings.LayerNorm.weight``,
``bert.`` inside heads), so published BERT checkpoints load unchanged.

Shapes: B batch, T sequence length, C hidden size, nh heads, hs head size (C = nh * hs), V vocabulary.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
import torch.utils.checkpoint
from torch import nn

from modelcore.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from modelcore.modeling_utils import PreTrainedModel
from modelcore.models.bert.configuration_bert import BertConfig
from modelcore.nn.activations import get_activation
from modelcore.nn.attention import eager_attention, get_attention_function
from modelcore.nn.dropout import dropout_module, fast_dropout
from modelcore.nn.init import init_linear_and_embedding
from modelcore.nn.losses import question_answering_loss, sequence_classification_loss, token_cross_entropy
from modelcore.nn.masks import padding_mask
from modelcore.nn.unpad import Unpadded

# Padding-free training pays off from this fraction of padded positions on (measured on MiniLM-L6, CPU: at 2.5%
# padding it is 5% slower per step, at 48% it is 1.5x faster).
PADDING_FREE_MIN_PADDING = 0.1


# -------------------------------------------------------------------------------------------- embeddings
class BertEmbeddings(nn.Module):
    """Sum of word, learned position and token type (segment) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # Default position and segment ids, (1, max_positions); not saved (older checkpoints did save position_ids).
        positions = torch.arange(config.max_position_embeddings).expand(1, -1)
        self.register_buffer("position_ids", positions, persistent=False)
        self.register_buffer("token_type_ids", torch.zeros_like(positions), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        fast_masks: bool = False,
    ) -> torch.Tensor:
        """Embed (B, T) ids, or (B, T, C) ``inputs_embeds``; ``fast_masks`` drops out with ``fast_dropout``'s masks."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, C)
        batch_size, seq_length = inputs_embeds.shape[:2]
        max_positions = self.position_ids.shape[1]
        if position_ids is None:
            if seq_length > max_positions:
                raise ValueError(f"sequence length {seq_length} exceeds max_position_embeddings ({max_positions})")
            position_ids = self.position_ids[:, :seq_length]  # (1, T)
        if token_type_ids is None:
            token_type_ids = self.token_type_ids[:, :seq_length].expand(batch_size, seq_length)  # all segment 0
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return dropout_module(self.dropout, self.LayerNorm(embeddings), fast_masks)


# --------------------------------------------------------------------------------------------- attention
class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention; the kernel comes from ``config.attn_implementation``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config  # read at forward time, so switching eager/sdpa needs no rebuild
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        unpadded: Unpadded | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, C) -> (B, T, C); with ``unpadded``, (N, C) real tokens -> (N, C), padded only around attention."""
        hidden_size = hidden_states.shape[-1]
        if unpadded is not None:  # attention per group of rows of similar length, each padded to its longest row
            # one (N, C) -> (N, 3C) projection, so the real tokens are moved into the groups once, not three times
            weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
            bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
            qkv = nn.functional.linear(hidden_states, weight, bias).view(-1, 3, self.num_heads, self.head_size)
            outs = [
                self._attend(*block.unbind(2), group_mask, fast_masks=True)[0]
                for block, group_mask in unpadded.to_groups(qkv)
            ]
            return unpadded.from_groups(outs).reshape(-1, hidden_size), None
        head_shape = (*hidden_states.shape[:-1], self.num_heads, self.head_size)
        query, key, value = (proj(hidden_states).view(head_shape) for proj in (self.query, self.key, self.value))
        out, weights = self._attend(query, key, value, mask, output_attentions)
        return out.reshape(*out.shape[:2], hidden_size), weights

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        fast_masks: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, nh, hs) queries, keys, values -> (B, T, nh, hs), and (B, nh, T, T) weights or None.

        ``fast_masks``: drop attention weights with ``fast_dropout``'s masks. On CPU that takes eager attention,
        since SDPA draws its own masks there with the slow ``bernoulli_`` (and computes the same way otherwise).
        """
        attend = get_attention_function(self.config.attn_implementation)
        dropout = self.dropout_prob if self.training else 0.0
        if fast_masks and dropout > 0 and query.device.type == "cpu":
            attend = functools.partial(eager_attention, dropout_fn=fast_dropout)
        return attend(
            query.transpose(1, 2),  # (B, nh, T, hs)
            key.transpose(1, 2),
            value.transpose(1, 2),
            mask,
            scaling=self.scaling,
            dropout=dropout,
            is_causal=False,
            output_attentions=output_attentions,
        )


class _BertResidualOutput(nn.Module):
    """Projection in_features -> C, dropout, then post-LayerNorm around the residual.

    Both sublayers of a block end this way; they stay two classes only for the Hugging Face names.
    """

    def __init__(self, config: BertConfig, in_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor, fast_masks: bool = False) -> torch.Tensor:
        """``fast_masks`` drops out with ``fast_dropout``'s masks (padding-free training)."""
        return self.LayerNorm(dropout_module(self.dropout, self.dense(hidden_states), fast_masks) + residual)


class BertSelfOutput(_BertResidualOutput):
    """Output projection of attention (C -> C), dropout, then post-LayerNorm around the residual."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config, config.hidden_size)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        unpadded: Unpadded | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self(hidden_states, mask, output_attentions, unpadded)
        return self.output(attended, hidden_states, fast_masks=unpadded is not None), weights


# ---------------------------------------------------------------------------------------------------- MLP
class BertIntermediate(nn.Module):
    """First feed-forward projection C -> intermediate_size, with the activation."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))  # (B, T, intermediate_size)


class BertOutput(_BertResidualOutput):
    """Second feed-forward projection back to C, dropout, then post-LayerNorm around the residual."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config, config.intermediate_size)


# -------------------------------------------------------------------------------------------- layer, encoder
class BertLayer(nn.Module):
    """One post-norm Transformer block: self-attention, then feed-forward."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        unpadded: Unpadded | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, weights = self.attention(hidden_states, mask, output_attentions, unpadded)
        layer_output = self.output(  # (B, T, C), or (N, C) with unpadded
            self.intermediate(attention_output), attention_output, fast_masks=unpadded is not None
        )
        return layer_output, weights


class BertEncoder(nn.Module):
    """The stack of ``num_hidden_layers`` layers, optionally with activation checkpointing per layer."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False  # set by PreTrainedModel.gradient_checkpointing_enable()

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        unpadded: Unpadded | None = None,
    ) -> BaseModelOutput:
        """Run the layers over (B, T, C) hidden states, or over (N, C) real tokens with ``unpadded``."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                # Recompute the layer's activations in backward instead of keeping them.
                hidden_states, weights = torch.utils.checkpoint.checkpoint(
                    layer, hidden_states, mask, output_attentions, unpadded, use_reentrant=False
                )
            else:
                hidden_states, weights = layer(hidden_states, mask, output_attentions, unpadded)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


class BertPooler(nn.Module):
    """Dense + tanh on the first ([CLS]) token: the sentence vector used by sequence classification."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))  # (B, C)


# ----------------------------------------------------------------------------------------------- MLM head
class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = get_activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """Transform, then project to the vocabulary.

    ``decoder.weight`` is tied to the word embeddings and ``decoder.bias`` to ``bias`` (when
    ``config.tie_word_embeddings``), as in the Hugging Face checkpoints, which store ``bias``.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))  # (B, T, V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


# ------------------------------------------------------------------------------------------------- models
class BertPreTrainedModel(PreTrainedModel):
    """Shared BERT plumbing: config class, checkpoint prefix, weight init.

    Legacy LayerNorm ``gamma``/``beta`` checkpoint names are mapped by ``from_pretrained`` for every family.
    """

    config_class = BertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["BertEmbeddings", "BertLayer"]
    # Older checkpoints saved the position_ids buffer; it is rebuilt at init instead.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"(^|\.)embeddings\.position_ids$"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """BERT's init: N(0, initializer_range) for Linear/Embedding weights, zero biases and padding row."""
        init_linear_and_embedding(module, self.config.initializer_range)
        if isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, BertLMPredictionHead):
            module.bias.zero_()
        elif isinstance(module, BertEmbeddings):  # buffers, for models materialized from the meta device
            module.position_ids.copy_(torch.arange(module.position_ids.shape[1]).expand(1, -1))
            module.token_type_ids.zero_()


class BertModel(BertPreTrainedModel):
    """The bare BERT encoder: embeddings, ``num_hidden_layers`` layers and (optionally) the pooler.

    Args:
        config: the model configuration.
        add_pooling_layer: build ``pooler`` (dense + tanh on [CLS]); heads over tokens leave it out.
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        # In training, run projections, feed-forward and LayerNorms on the real tokens only; False computes every
        # padded position too (slower, same loss). See ``_trains_padding_free``.
        self.padding_free_training = True
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """Encode a batch.

        Args:
            input_ids: (B, T) token ids; exactly one of ``input_ids`` and ``inputs_embeds`` is given.
            attention_mask: (B, T), 1 for real tokens and 0 for padding; None attends everywhere.
            token_type_ids: (B, T) segment ids; None means all 0.
            position_ids: (B|1, T) positions; None means 0..T-1.
            inputs_embeds: (B, T, C) word embeddings to use instead of looking up ``input_ids``.
            output_hidden_states: also return the embeddings and every layer's output (default: config).
            output_attentions: also return every layer's attention probabilities (default: config).

        Returns:
            ``BaseModelOutputWithPooling``: ``last_hidden_state`` (B, T, C), ``pooler_output`` (B, C)
            or None without a pooler, and the optional ``hidden_states`` / ``attentions`` tuples.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        mask = padding_mask(attention_mask)  # (B, 1, 1, T) bool, or None when nothing is padded
        if mask is not None and self._trains_padding_free(attention_mask, output_hidden_states, output_attentions):
            unpadded = Unpadded(attention_mask)
            embeddings = self._embed_real_tokens(unpadded, input_ids, token_type_ids, position_ids, inputs_embeds)
            encoded = self.encoder(embeddings, mask, unpadded=unpadded)  # (N, C) real tokens
            sequence_output = unpadded.pad(encoded.last_hidden_state)  # zeros at the padded positions
        else:
            embeddings = self.embeddings(
                input_ids=input_ids,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
            )  # (B, T, C)
            encoded = self.encoder(
                embeddings, mask, output_hidden_states=output_hidden_states, output_attentions=output_attentions
            )
            sequence_output = encoded.last_hidden_state
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )

    def _embed_real_tokens(
        self,
        unpadded: Unpadded,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
    ) -> torch.Tensor:
        """The embeddings of the real tokens only, (N, C): each keeps the position and segment it has when padded."""
        batch_size, seq_length = unpadded.batch_size, unpadded.seq_length
        if position_ids is None:
            position_ids = self.embeddings.position_ids[:, :seq_length]
        position_ids = position_ids.expand(batch_size, seq_length)
        if token_type_ids is None:
            token_type_ids = self.embeddings.token_type_ids[:, :seq_length]
        token_type_ids = token_type_ids.expand(batch_size, seq_length)
        embeddings = self.embeddings(
            input_ids=None if input_ids is None else unpadded.unpad(input_ids)[None],
            token_type_ids=unpadded.unpad(token_type_ids)[None],
            position_ids=unpadded.unpad(position_ids)[None],
            inputs_embeds=None if inputs_embeds is None else unpadded.unpad(inputs_embeds)[None],
            fast_masks=True,
        )  # (1, N, C): the N real tokens as one row
        return embeddings[0]

    def _trains_padding_free(
        self, attention_mask: torch.Tensor, output_hidden_states: bool, output_attentions: bool
    ) -> bool:
        """Whether this forward runs its per-token layers on the real tokens only (see ``modelcore.nn.unpad``).

        Only in training, where the padded positions feed no loss: in eval mode every position is computed, as in
        transformers, so outputs match it everywhere. Not for the optional per-layer outputs, and not under
        ``torch.compile`` or export, whose graphs would then depend on each batch's token count. And only when
        padding is at least ``PADDING_FREE_MIN_PADDING`` of the batch: moving the tokens costs more than it saves
        on batches that are almost full (length-grouped batches are 2-3% padding).
        """
        return (
            self.training
            and self.padding_free_training
            and not (output_hidden_states or output_attentions)
            and not (torch.compiler.is_compiling() or torch.compiler.is_exporting())
            and (attention_mask == 0).sum().item() >= PADDING_FREE_MIN_PADDING * attention_mask.numel()
        )


# -------------------------------------------------------------------------------------------------- heads
def _classifier_dropout(config: BertConfig) -> float:
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT with dropout and a linear classifier (or regressor) on the pooled [CLS] vector."""

    # A pre-training checkpoint's MLM/NSP heads are not used here.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
        *BertPreTrainedModel._keys_to_ignore_on_load_unexpected,
        r"^cls\.",
    ]

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> SequenceClassifierOutput:
        """Classify each sequence; inputs as in ``BertModel.forward``.

        Args:
            labels: (B,) class ids, (B,) or (B, 1) floats for regression (``num_labels == 1``), or
                (B, num_labels) floats for multi-label. ``config.problem_type`` decides the loss; when
                None it is inferred per call as in transformers: one label -> regression (MSE), integer
                labels -> single-label (cross-entropy), otherwise multi-label (BCE with logits).

        Returns:
            ``SequenceClassifierOutput`` with ``logits`` (B, num_labels) and ``loss`` when labels are given.
        """
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(logits, labels, self.num_labels, self.config.problem_type)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class BertForMaskedLM(BertPreTrainedModel):
    """BERT (without pooler) with the masked-language-model head; the decoder shares the word embeddings."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }
    # A pre-training (or bare BertModel) checkpoint also carries the pooler, and the next-sentence head.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
        *BertPreTrainedModel._keys_to_ignore_on_load_unexpected,
        r"^(bert\.)?pooler\.",
        r"^cls\.seq_relationship\.",
    ]

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> MaskedLMOutput:
        """Predict every position's token; inputs as in ``BertModel.forward``.

        Args:
            labels: (B, T) target ids; -100 marks positions without a loss (the unmasked ones).

        Returns:
            ``MaskedLMOutput`` with ``logits`` (B, T, V) and the mean cross-entropy ``loss`` when labels are given.
        """
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.cls(outputs.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = token_cross_entropy(logits, labels)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class BertForTokenClassification(BertPreTrainedModel):
    """BERT (without pooler) with dropout and a linear classifier on every token (NER, POS tagging)."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
        *BertPreTrainedModel._keys_to_ignore_on_load_unexpected,
        r"^(bert\.)?pooler\.",
        r"^cls\.",
    ]

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> TokenClassifierOutput:
        """Classify every token; inputs as in ``BertModel.forward``.

        Args:
            labels: (B, T) class ids; -100 marks positions without a loss (padding, sub-word continuations).

        Returns:
            ``TokenClassifierOutput`` with ``logits`` (B, T, num_labels) and ``loss`` when labels are given.
        """
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = token_cross_entropy(logits, labels)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class BertForQuestionAnswering(BertPreTrainedModel):
    """BERT (without pooler) with a linear ``qa_outputs`` head giving each token a start and an end logit."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
        *BertPreTrainedModel._keys_to_ignore_on_load_unexpected,
        r"^(bert\.)?pooler\.",
        r"^cls\.",
    ]

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)  # num_labels is 2: start, end
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> QuestionAnsweringModelOutput:
        """Score every token as the start and the end of the answer span; inputs as in ``BertModel.forward``.

        Args:
            start_positions: (B,) index of each answer's first token; with ``end_positions`` gives the loss.
            end_positions: (B,) index of each answer's last token.

        Returns:
            ``QuestionAnsweringModelOutput`` with ``start_logits`` and ``end_logits`` (B, T), and ``loss``.
        """
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.qa_outputs(outputs.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = (part.squeeze(-1).contiguous() for part in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "BertForMaskedLM",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertLayer",
    "BertModel",
    "BertPreTrainedModel",
]
