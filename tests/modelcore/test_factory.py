"""create_model over every registered size: the sizes build what transformers builds, tiny overrides run, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelcore import AutoModel, create_image_processor, create_model, list_models
from modelcore.errors import ConfigError, ModelcoreError
from modelcore.factory import MODEL_REGISTRY, model_spec

transformers = pytest.importorskip("transformers")

NAMES = list_models()
HF_CONFIGS = {"vit": transformers.ViTConfig, "swin": transformers.SwinConfig}


def _tiny_overrides(name: str) -> dict:
    """Fewer blocks and a small image: the named widths and heads are kept, so the forward stays fast."""
    spec = model_spec(name)
    if spec.model_type == "vit":
        return {"num_hidden_layers": 1, "image_size": 2 * spec.sizes["patch_size"]}
    return {"depths": [1, 1], "num_heads": spec.sizes["num_heads"][:2], "image_size": 40}


def test_registry_lists_the_named_sizes():
    assert sorted(MODEL_REGISTRY) == NAMES
    assert {
        "vit_tiny_patch16_224",
        "vit_base_patch16_224",
        "swin_tiny_patch4_window7_224",
        "vit_mnist_patch4_28",
    } <= set(NAMES)
    assert list_models("swin_*") == [n for n in NAMES if n.startswith("swin_")]


@pytest.mark.parametrize("name", NAMES)
def test_named_size_builds_what_transformers_builds(name):
    """On the meta device (no memory): the same parameter count as transformers' class with the same sizes."""
    spec = model_spec(name)
    with torch.device("meta"):
        ours = create_model(name)
        theirs = getattr(transformers, type(ours).__name__)(
            HF_CONFIGS[spec.model_type](**spec.sizes, num_labels=spec.num_classes)
        )
    assert type(ours).__name__ == f"{'ViT' if spec.model_type == 'vit' else 'Swin'}ForImageClassification"
    assert ours.config.num_labels == spec.num_classes
    for field, value in spec.sizes.items():
        assert getattr(ours.config, field) == value, field
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_named_size_with_tiny_overrides_classifies_a_processed_image(name):
    overrides = _tiny_overrides(name)
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, **overrides).eval()
    processor = create_image_processor(name, size=overrides["image_size"])
    digit = np.tile(np.arange(28, dtype=np.uint8)[:, None] * 9, (1, 28))  # a gray ramp, converted to RGB
    pixels = processor(digit, return_tensors="pt").pixel_values
    with torch.no_grad():
        logits = model(pixels).logits
    assert logits.shape == (1, 4) and torch.isfinite(logits).all()


def test_mnist_size_trains_on_28_pixel_digits():
    model = create_model("vit_mnist_patch4_28")
    processor = create_image_processor("vit_mnist_patch4_28")
    assert (model.config.num_labels, processor.size) == (10, {"height": 28, "width": 28})
    pixels = processor(np.zeros((4, 28, 28, 1), dtype=np.uint8), return_tensors="pt").pixel_values
    out = model(pixels, labels=torch.tensor([0, 3, 5, 9]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_num_classes_zero_gives_the_bare_model():
    model = create_model("vit_tiny_patch16_224", num_classes=0, **_tiny_overrides("vit_tiny_patch16_224"))
    assert type(model).__name__ == "ViTModel"
    assert model(torch.zeros(1, 3, 32, 32)).pooler_output.shape == (1, 192)


def test_pretrained_true_says_the_hub_is_unreachable():
    with pytest.raises(ModelcoreError, match=r"hub weights are unreachable here.*pretrained=<folder>.*from_pretrained"):
        create_model("vit_base_patch16_224", pretrained=True)


def test_pretrained_folder_loads_and_a_new_width_gets_a_new_head(tmp_path):
    overrides = _tiny_overrides("swin_tiny_patch4_window7_224")
    saved = create_model("swin_tiny_patch4_window7_224", num_classes=3, **overrides)
    saved.save_pretrained(tmp_path)
    same = create_model("swin_tiny_patch4_window7_224", pretrained=tmp_path, num_classes=3)
    for (name, a), b in zip(saved.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    wider = create_model("swin_tiny_patch4_window7_224", pretrained=tmp_path, num_classes=7)
    assert wider.classifier.out_features == 7
    assert torch.equal(wider.swin.layernorm.weight, saved.swin.layernorm.weight)
    assert type(create_model("swin_tiny_patch4_window7_224", pretrained=tmp_path, num_classes=0)) is type(
        AutoModel.from_pretrained(tmp_path)
    )
    with pytest.raises(ConfigError, match=r"config.json: model_type 'swin' is not 'vit'"):
        create_model("vit_tiny_patch16_224", pretrained=tmp_path)


def test_unknown_names_and_fields_are_errors():
    with pytest.raises(
        ConfigError, match=r"unknown model name 'vit_tiny_patch16_244'; did you mean vit_tiny_patch16_224"
    ):
        create_model("vit_tiny_patch16_244")
    with pytest.raises(TypeError, match="num_hiden_layers"):
        create_model("vit_tiny_patch16_224", num_hiden_layers=2)
