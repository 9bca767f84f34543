"""Swin: configuration, bare encoder and image classification head, Hugging Face checkpoint names (imported on first use)."""

from modelcore._lazy import lazy_exports

_EXPORTS = {
    "SwinConfig": "configuration_swin",
    "SwinModel": "modeling_swin",
    "SwinForImageClassification": "modeling_swin",
    "SwinPreTrainedModel": "modeling_swin",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
