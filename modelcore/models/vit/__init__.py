"""ViT: configuration, bare encoder and image classification head, Hugging Face checkpoint names (imported on first use)."""

from modelcore._lazy import lazy_exports

_EXPORTS = {
    "ViTConfig": "configuration_vit",
    "ViTModel": "modeling_vit",
    "ViTForImageClassification": "modeling_vit",
    "ViTPreTrainedModel": "modeling_vit",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
