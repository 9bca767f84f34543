"""Which class serves which ``model_type``: each family registers itself once, in ``FAMILIES``.

Entries are "module:Class" strings resolved on first use, so looking up a config does not import
every model file. Users add their own families at run time with the Auto classes' ``register``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """One model family: its config class and the class behind each Auto model class."""

    config: str
    models: dict[str, str] = field(default_factory=dict)  # Auto class name -> "module:Class"


FAMILIES: dict[str, Family] = {
    "llama": Family(
        config="modelcore.models.llama.configuration_llama:LlamaConfig",
        models={
            "AutoModel": "modelcore.models.llama.modeling_llama:LlamaModel",
            "AutoModelForCausalLM": "modelcore.models.llama.modeling_llama:LlamaForCausalLM",
            "AutoModelForSequenceClassification": "modelcore.models.llama.modeling_llama:LlamaForSequenceClassification",
            "AutoModelForQuestionAnswering": "modelcore.models.llama.modeling_llama:LlamaForQuestionAnswering",
        },
    ),
    "bert": Family(
        config="modelcore.models.bert.configuration_bert:BertConfig",
        models={
            "AutoModel": "modelcore.models.bert.modeling_bert:BertModel",
            "AutoModelForSequenceClassification": "modelcore.models.bert.modeling_bert:BertForSequenceClassification",
            "AutoModelForMaskedLM": "modelcore.models.bert.modeling_bert:BertForMaskedLM",
            "AutoModelForTokenClassification": "modelcore.models.bert.modeling_bert:BertForTokenClassification",
            "AutoModelForQuestionAnswering": "modelcore.models.bert.modeling_bert:BertForQuestionAnswering",
        },
    ),
    "vit": Family(
        config="modelcore.models.vit.configuration_vit:ViTConfig",
        models={
            "AutoModel": "modelcore.models.vit.modeling_vit:ViTModel",
            "AutoModelForImageClassification": "modelcore.models.vit.modeling_vit:ViTForImageClassification",
        },
    ),
    "swin": Family(
        config="modelcore.models.swin.configuration_swin:SwinConfig",
        models={
            "AutoModel": "modelcore.models.swin.modeling_swin:SwinModel",
            "AutoModelForImageClassification": "modelcore.models.swin.modeling_swin:SwinForImageClassification",
        },
    ),
    "whisper": Family(
        config="modelcore.models.whisper.configuration_whisper:WhisperConfig",
        models={
            "AutoModel": "modelcore.models.whisper.modeling_whisper:WhisperModel",
            "AutoModelForSpeechSeq2Seq": "modelcore.models.whisper.modeling_whisper:WhisperForConditionalGeneration",
        },
    ),
}


def resolve(ref: str | type) -> type:
    """Import a "module:Class" reference (classes registered at run time pass through)."""
    if isinstance(ref, type):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
