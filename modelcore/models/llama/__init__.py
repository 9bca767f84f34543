"""The Llama family: configuration, bare decoder and heads."""

from modelcore.models.llama.configuration_llama import LlamaConfig
from modelcore.models.llama.modeling_llama import (
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    LlamaPreTrainedModel,
)

__all__ = ["LlamaConfig", "LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaModel", "LlamaPreTrainedModel"]
