"""Whisper: configuration, encoder-decoder model and generation, feature extractor, tokenizer and processor,
with Hugging Face checkpoint names (imported on first use)."""

from modelcore._lazy import lazy_exports

_EXPORTS = {
    "WhisperConfig": "configuration_whisper",
    "WhisperModel": "modeling_whisper",
    "WhisperForConditionalGeneration": "modeling_whisper",
    "WhisperPreTrainedModel": "modeling_whisper",
    "WhisperFeatureExtractor": "feature_extraction_whisper",
    "WhisperTokenizer": "tokenization_whisper",
    "WhisperProcessor": "processing_whisper",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
