"""BERT: configuration, bare encoder and task heads (Hugging Face checkpoint names)."""

from modelcore.models.bert.configuration_bert import SUPPORTED_ACTIVATIONS, BertConfig
from modelcore.models.bert.modeling_bert import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
)

__all__ = [
    "SUPPORTED_ACTIVATIONS",
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertPreTrainedModel",
]
