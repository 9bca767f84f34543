"""Auto classes: pick a family's class from ``model_type``."""

from modelcore.auto.configuration_auto import AutoConfig
from modelcore.auto.image_processing_auto import AutoImageProcessor
from modelcore.auto.modeling_auto import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForSpeechSeq2Seq,
    AutoModelForTokenClassification,
)
from modelcore.auto.tokenization_auto import AutoTokenizer

__all__ = [
    "AutoConfig",
    "AutoImageProcessor",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForImageClassification",
    "AutoModelForMaskedLM",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForSpeechSeq2Seq",
    "AutoModelForTokenClassification",
    "AutoTokenizer",
]
