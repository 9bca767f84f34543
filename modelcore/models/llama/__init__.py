"""The Llama family: configuration, bare decoder and heads (imported on first use)."""

from modelcore._lazy import lazy_exports

_EXPORTS = {
    "LlamaConfig": "configuration_llama",
    "LlamaModel": "modeling_llama",
    "LlamaForCausalLM": "modeling_llama",
    "LlamaForSequenceClassification": "modeling_llama",
    "LlamaPreTrainedModel": "modeling_llama",
    "LlamaForQuestionAnswering": "modeling_llama",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
