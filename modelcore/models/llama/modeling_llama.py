"""Llama: a pre-norm decoder with RMSNorm, rotary positions, grouped-query attention and a SwiGLU MLP.

Reads top to bottom: attention, MLP, block, model, heads. Norms and rotary embeddings live in
``modelcore.nn`` (shared with other families). Parameter names follow the Hugging Face checkpoints
(``model.layers.0.self_attn.q_proj.weight``, ...), so published Llama weights load unchanged.

Shapes: B batch, T new tokens, S keys (cached + new), C hidden size, nh query heads,
nkv key/value heads, hs head size, V vocabulary.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from modelcore.generation.utils import GenerationMixin
from modelcore.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
)
from modelcore.modeling_utils import PreTrainedModel
from modelcore.models.llama.configuration_llama import LlamaConfig
from modelcore.nn.activations import get_activation
from modelcore.nn.attention import get_attention_function
from modelcore.nn.cache import DynamicCache, StaticCache
from modelcore.nn.init import init_linear_and_embedding
from modelcore.nn.losses import causal_lm_loss, question_answering_loss, sequence_classification_loss
from modelcore.nn.masks import causal_mask, static_causal_mask
from modelcore.nn.native_decoder import decoder_step
from modelcore.nn.norms import RMSNorm
from modelcore.nn.packed_linear import linear
from modelcore.nn.rotary import RotaryEmbedding, apply_rotary_pos_emb

logger = logging.getLogger(__name__)


class LlamaAttention(nn.Module):
    """Multi-head self-attention with nkv <= nh key/value heads, rotary positions and an optional KV cache."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # which slot of the KV cache this layer owns
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        c, nh, nkv, hs = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.q_proj = nn.Linear(c, nh * hs, bias=config.attention_bias)
        self.k_proj = nn.Linear(c, nkv * hs, bias=config.attention_bias)
        self.v_proj = nn.Linear(c, nkv * hs, bias=config.attention_bias)
        self.o_proj = nn.Linear(nh * hs, c, bias=config.attention_bias)

    def forward(
        self,
        hidden: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        is_causal: bool,
        past_key_values: DynamicCache | StaticCache | None = None,
        output_attentions: bool = False,
        cache_position: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, _ = hidden.shape
        q = linear(self.q_proj, hidden).view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = linear(self.k_proj, hidden).view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = linear(self.v_proj, hidden).view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)

        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx, cache_position)  # (B, nkv, S, hs)

        attend = get_attention_function(self.config.attn_implementation)
        out, weights = attend(
            q,
            k,
            v,
            mask,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
            is_causal=is_causal,
            output_attentions=output_attentions,
        )  # (B, T, nh, hs)
        return linear(self.o_proj, out.reshape(b, t, -1)), weights  # (B, T, C)


class LlamaMLP(nn.Module):
    """SwiGLU (Shazeer, 2020): down(act(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c, hidden = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(c, hidden, bias=config.mlp_bias)
        self.up_proj = nn.Linear(c, hidden, bias=config.mlp_bias)
        self.down_proj = nn.Linear(hidden, c, bias=config.mlp_bias)
        self.act_fn = get_activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.down_proj, self.act_fn(linear(self.gate_proj, x)) * linear(self.up_proj, x))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        is_causal: bool,
        past_key_values: DynamicCache | StaticCache | None = None,
        output_attentions: bool = False,
        cache_position: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if hidden.shape[1] == 1 and not output_attentions:  # a decode step: the layer in native code if it can
            out = decoder_step([self], _layer_parts, hidden, position_embeddings, mask, past_key_values, cache_position)
            if out is not None:
                return out, None
        attn_out, weights = self.self_attn(
            self.input_layernorm(hidden),
            position_embeddings,
            mask,
            is_causal,
            past_key_values,
            output_attentions,
            cache_position,
        )
        hidden = hidden + attn_out
        hidden = hidden + self.mlp(self.post_attention_layernorm(hidden))
        return hidden, weights


def _layer_parts(layer: LlamaDecoderLayer) -> tuple[nn.Module, nn.Module, tuple[nn.Module, nn.Module]]:
    """(attention, mlp, (norm before attention, norm before the MLP)) of a layer, for ``decoder_step``."""
    return layer.self_attn, layer.mlp, (layer.input_layernorm, layer.post_attention_layernorm)


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    _no_split_modules = ["LlamaDecoderLayer"]
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        init_linear_and_embedding(module, self.config.initializer_range)
        if isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


class LlamaModel(LlamaPreTrainedModel):
    """The bare decoder: token embeddings -> blocks -> final norm, returning hidden states (B, T, C)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | StaticCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> BaseModelOutputWithPast:
        """Run the decoder.

        Args:
            input_ids: (B, T) token ids; exactly one of ``input_ids`` / ``inputs_embeds``.
            attention_mask: (B, S) 1 for real tokens, 0 for padding (left or right), covering cached
                positions too; None means no padding.
            position_ids: (B|1, T); default ``past_length + arange(T)``. Left-padded batches should pass
                ``attention_mask.cumsum(-1) - 1`` (clamped at 0) so each row starts at position 0.
            past_key_values: a ``DynamicCache`` from an earlier call, extended in place, or a ``StaticCache``
                (preallocated to L positions, written in place at ``cache_position``; ``attention_mask`` then
                covers up to L positions and keys attend over all L, unwritten ones masked).
            inputs_embeds: (B, T, C) instead of ``input_ids``.
            use_cache: create a cache when none is passed; default ``config.use_cache``.
            output_attentions: also return per-layer attention weights (B, nh, T, S).
            output_hidden_states: also return the embeddings and each layer's output (the last one normed).
            cache_position: (T,) the cache slots of the new tokens; default ``past_length + arange(T)``. A compiled
                decode step over a ``StaticCache`` passes it, so no Python count is read from the cache.

        Returns:
            ``BaseModelOutputWithPast`` with ``last_hidden_state`` (B, T, C).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        checkpointing = self.gradient_checkpointing and self.training
        if checkpointing:  # recomputing a layer would append to the cache twice
            if use_cache:
                logger.warning("use_cache=True is incompatible with gradient checkpointing; setting use_cache=False")
            use_cache = False
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, C)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        t = inputs_embeds.shape[1]
        if isinstance(past_key_values, StaticCache):
            mask, is_causal, cache_position = self._static_cache_mask(
                past_key_values, attention_mask, cache_position, t
            )
        else:
            past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
            mask, is_causal = causal_mask(attention_mask, t, past_length, inputs_embeds.device)
            if position_ids is None and cache_position is None:
                position_ids = torch.arange(past_length, past_length + t, device=inputs_embeds.device)[None]  # (1, T)
        if position_ids is None:
            position_ids = cache_position[None]  # (1, T)

        hidden = inputs_embeds
        position_embeddings = self.rotary_emb(hidden, position_ids)  # cos, sin: (B|1, T, hs)
        all_hidden: list[torch.Tensor] = []
        all_attentions: list[torch.Tensor] = []
        layers, normed = self.layers, False
        if t == 1 and not (output_attentions or output_hidden_states or checkpointing):  # a decode step
            out = decoder_step(
                layers, _layer_parts, hidden, position_embeddings, mask, past_key_values, cache_position, self.norm
            )
            if out is not None:  # every layer, and the final norm, in one call of native code
                hidden, layers, normed = out, [], True
        for layer in layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            args = (hidden, position_embeddings, mask, is_causal, past_key_values, output_attentions, cache_position)
            if checkpointing:
                hidden, weights = checkpoint(layer, *args, use_reentrant=False)
            else:
                hidden, weights = layer(*args)
            if output_attentions:
                all_attentions.append(weights)
        if not normed:
            hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)  # embeddings, the first N-1 layers' outputs, the normed last one

        return BaseModelOutputWithPast(
            last_hidden_state=hidden,
            past_key_values=past_key_values,  # the cache passed in (extended in place) or created here
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )

    @staticmethod
    def _static_cache_mask(
        cache: StaticCache, attention_mask: torch.Tensor | None, cache_position: torch.LongTensor | None, t: int
    ) -> tuple[torch.Tensor, bool, torch.LongTensor]:
        """(mask over the cache's L positions, is_causal=False, cache_position) for a ``StaticCache`` step."""
        device = cache.keys[0].device
        if cache_position is None:  # eager convenience: reads the cache's fill level (a graph break if compiled)
            past_length = cache.get_seq_length()
            cache_position = torch.arange(past_length, past_length + t, device=device)
        return static_causal_mask(attention_mask, cache_position, cache.max_cache_len), False, cache_position


class LlamaForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    """Decoder + language-model head (B, T, C) -> (B, T, V); the head shares the embedding when tied.

    ``generate`` (from ``GenerationMixin``) continues prompts greedily or by sampling, with a KV cache.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | StaticCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> CausalLMOutputWithPast:
        """Next-token logits, and the loss when ``labels`` are given.

        Args:
            labels: (B, T) target ids, aligned with ``input_ids`` (shifted by one inside); -100 is ignored.
            logits_to_keep: 0 computes logits for every position; n > 0 only for the last n (generation
                needs 1); a 1-D tensor keeps those positions.
            num_items_in_batch: when given, the loss is summed and divided by it (gradient accumulation
                over micro-batches of unequal token counts); otherwise it is the mean over labelled tokens.
            Other arguments: see ``LlamaModel.forward``.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` (B, T', V) and ``loss`` (a scalar) when labels are given.
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            cache_position=cache_position,
        )
        hidden = outputs.last_hidden_state  # (B, T, C)
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = linear(self.lm_head, hidden)  # (B, T', V)

        loss = None
        if labels is not None:
            if logits.shape[1] != labels.shape[1]:
                raise ValueError(
                    f"labels cover {labels.shape[1]} positions but logits {logits.shape[1]}; use logits_to_keep=0"
                )
            loss = causal_lm_loss(logits, labels, num_items_in_batch)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class LlamaForSequenceClassification(LlamaPreTrainedModel):
    """Decoder + linear ``score`` head read at each sequence's last non-padding token."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> SequenceClassifierOutputWithPast:
        """Classify (or regress) each sequence.

        The pooled position is the rightmost token that is not ``config.pad_token_id``, which handles
        left and right padding alike; without a pad token only batches of one are accepted, and with
        ``inputs_embeds`` the last position is used (both as in transformers).

        Args:
            labels: (B,) class ids (single-label), (B, num_labels) floats (multi-label), or (B,) /
                (B, num_labels) floats (regression); ``config.problem_type`` picks the loss, and when it
                is None it is inferred like transformers does (num_labels == 1 -> regression, integer
                labels -> single-label, else multi-label).
            Other arguments: see ``LlamaModel.forward``.

        Returns:
            ``SequenceClassifierOutputWithPast`` with ``logits`` (B, num_labels).
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.score(outputs.last_hidden_state)  # (B, T, num_labels)
        batch_size = logits.shape[0]
        pad_token_id = self.config.pad_token_id
        if pad_token_id is None and batch_size != 1:
            raise ValueError("cannot pool a batch of more than one sequence without config.pad_token_id")
        if pad_token_id is None or input_ids is None:
            last = torch.full((batch_size,), logits.shape[1] - 1, device=logits.device)
        else:
            non_pad = (input_ids != pad_token_id).to(logits.device, torch.int32)  # (B, T)
            positions = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
            last = (positions * non_pad).argmax(-1)  # (B,) rightmost non-pad position
        pooled = logits[torch.arange(batch_size, device=logits.device), last]  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = sequence_classification_loss(pooled, labels, self.config.num_labels, self.config.problem_type)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class LlamaForQuestionAnswering(LlamaPreTrainedModel):
    """Decoder + linear ``qa_outputs`` head giving each token a start and an end logit (extractive QA).

    The decoder sits under ``transformer``, as in Hugging Face's checkpoints of this head.
    """

    base_model_prefix = "transformer"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.transformer = LlamaModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> QuestionAnsweringModelOutput:
        """Score every token as the start and the end of the answer span.

        Args:
            start_positions: (B,) index of each answer's first token; with ``end_positions`` gives the loss.
            end_positions: (B,) index of each answer's last token.
            Other arguments: see ``LlamaModel.forward``.

        Returns:
            ``QuestionAnsweringModelOutput`` with ``start_logits`` and ``end_logits`` (B, T), and ``loss``.
        """
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
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
