"""modelcore: transformer model definitions with the Hugging Face checkpoint layout.

Every public name is importable from the package itself (``from modelcore import AutoModel``);
the submodules are imported on first use so that ``import modelcore`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcore._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "PretrainedConfig": "configuration_utils",
    "PreTrainedModel": "modeling_utils",
    "LlamaConfig": "models.llama.configuration_llama",
    "LlamaModel": "models.llama.modeling_llama",
    "LlamaForCausalLM": "models.llama.modeling_llama",
    "LlamaForSequenceClassification": "models.llama.modeling_llama",
    "LlamaForQuestionAnswering": "models.llama.modeling_llama",
    "BertConfig": "models.bert.configuration_bert",
    "BertModel": "models.bert.modeling_bert",
    "BertForSequenceClassification": "models.bert.modeling_bert",
    "BertForMaskedLM": "models.bert.modeling_bert",
    "BertForTokenClassification": "models.bert.modeling_bert",
    "BertForQuestionAnswering": "models.bert.modeling_bert",
    "ViTConfig": "models.vit.configuration_vit",
    "ViTModel": "models.vit.modeling_vit",
    "ViTForImageClassification": "models.vit.modeling_vit",
    "SwinConfig": "models.swin.configuration_swin",
    "SwinModel": "models.swin.modeling_swin",
    "SwinForImageClassification": "models.swin.modeling_swin",
    "WhisperConfig": "models.whisper.configuration_whisper",
    "WhisperModel": "models.whisper.modeling_whisper",
    "WhisperForConditionalGeneration": "models.whisper.modeling_whisper",
    "WhisperFeatureExtractor": "models.whisper.feature_extraction_whisper",
    "WhisperTokenizer": "models.whisper.tokenization_whisper",
    "WhisperProcessor": "models.whisper.processing_whisper",
    "FeatureExtractor": "feature_extraction",
    "Processor": "processing",
    "AutoConfig": "auto",
    "AutoImageProcessor": "auto",
    "AutoModelForImageClassification": "auto",
    "AutoModel": "auto",
    "AutoModelForCausalLM": "auto",
    "AutoModelForSequenceClassification": "auto",
    "AutoModelForMaskedLM": "auto",
    "AutoModelForTokenClassification": "auto",
    "AutoModelForQuestionAnswering": "auto",
    "AutoModelForSpeechSeq2Seq": "auto",
    "AutoTokenizer": "auto",
    "Tokenizer": "tokenization",
    "BaseImageProcessor": "image_processing",
    "ViTImageProcessor": "image_processing",
    "BatchFeature": "feature_extraction",
    "create_model": "factory",
    "create_image_processor": "factory",
    "list_models": "factory",
    "BatchEncoding": "tokenization",
    "DynamicCache": "nn.cache",
    "StaticCache": "nn.cache",
    "TextStreamer": "generation.streamers",
    "TextIteratorStreamer": "generation.streamers",
    "TrainingArguments": "trainer.arguments",
    "Trainer": "trainer.trainer",
    "DistillationTrainer": "trainer.distillation",
    "TrainerCallback": "trainer.callbacks",
    "EarlyStoppingCallback": "trainer.callbacks",
    "EvalPrediction": "trainer.trainer",
    "DataCollatorWithPadding": "data.collators",
    "DataCollatorForLanguageModeling": "data.collators",
    "default_data_collator": "data.collators",
    "assets": "assets",
    "pipeline": "pipelines",
    "ModelcoreError": "errors",
    "ConfigError": "errors",
    "CheckpointError": "errors",
    "SafetensorsError": "errors",
    "TokenizerError": "errors",
    "DataError": "errors",
    "DiskFullError": "errors",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


if TYPE_CHECKING:  # static analysers see the real names
    from modelcore import assets
    from modelcore.auto import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForMaskedLM,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForSpeechSeq2Seq,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )
    from modelcore.configuration_utils import PretrainedConfig
    from modelcore.data.collators import DataCollatorForLanguageModeling, DataCollatorWithPadding, default_data_collator
    from modelcore.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        DiskFullError,
        ModelcoreError,
        SafetensorsError,
        TokenizerError,
    )
    from modelcore.factory import create_image_processor, create_model, list_models
    from modelcore.feature_extraction import BatchFeature, FeatureExtractor
    from modelcore.generation.streamers import TextIteratorStreamer, TextStreamer
    from modelcore.image_processing import BaseImageProcessor, ViTImageProcessor
    from modelcore.modeling_utils import PreTrainedModel
    from modelcore.models.bert.configuration_bert import BertConfig
    from modelcore.models.bert.modeling_bert import (
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )
    from modelcore.models.llama.configuration_llama import LlamaConfig
    from modelcore.models.llama.modeling_llama import (
        LlamaForCausalLM,
        LlamaForQuestionAnswering,
        LlamaForSequenceClassification,
        LlamaModel,
    )
    from modelcore.models.swin.configuration_swin import SwinConfig
    from modelcore.models.swin.modeling_swin import SwinForImageClassification, SwinModel
    from modelcore.models.vit.configuration_vit import ViTConfig
    from modelcore.models.vit.modeling_vit import ViTForImageClassification, ViTModel
    from modelcore.models.whisper.configuration_whisper import WhisperConfig
    from modelcore.models.whisper.feature_extraction_whisper import WhisperFeatureExtractor
    from modelcore.models.whisper.modeling_whisper import WhisperForConditionalGeneration, WhisperModel
    from modelcore.models.whisper.processing_whisper import WhisperProcessor
    from modelcore.models.whisper.tokenization_whisper import WhisperTokenizer
    from modelcore.nn.cache import DynamicCache, StaticCache
    from modelcore.pipelines import pipeline
    from modelcore.processing import Processor
    from modelcore.tokenization import BatchEncoding, Tokenizer
    from modelcore.trainer.arguments import TrainingArguments
    from modelcore.trainer.callbacks import EarlyStoppingCallback, TrainerCallback
    from modelcore.trainer.distillation import DistillationTrainer
    from modelcore.trainer.trainer import EvalPrediction, Trainer
