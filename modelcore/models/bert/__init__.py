"""BERT: configuration, bare encoder and task heads, Hugging Face checkpoint names (imported on first use)."""

from modelcore._lazy import lazy_exports

_EXPORTS = {
    "BertConfig": "configuration_bert",
    "BertModel": "modeling_bert",
    "BertForMaskedLM": "modeling_bert",
    "BertForSequenceClassification": "modeling_bert",
    "BertForTokenClassification": "modeling_bert",
    "BertPreTrainedModel": "modeling_bert",
    "BertForQuestionAnswering": "modeling_bert",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
