"""ViT against transformers on tiny random configs: outputs, losses, interpolated positions, checkpoints both ways."""

from __future__ import annotations

import json

import pytest
import torch

from modelcore import AutoModelForImageClassification, ViTConfig, ViTForImageClassification, ViTModel
from modelcore.errors import ConfigError

transformers = pytest.importorskip("transformers")

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8
)


def _tiny(model_class, seed: int = 0, **overrides):
    """A seeded tiny model with non-trivial values everywhere (norms, biases, CLS and positions too)."""
    torch.manual_seed(seed)
    model = model_class(ViTConfig(**(TINY | {"num_labels": 3} | overrides)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _theirs(model, directory, attn_implementation: str = "eager"):
    model.save_pretrained(directory)
    hf_class = getattr(transformers, type(model).__name__)
    return hf_class.from_pretrained(directory, attn_implementation=attn_implementation).eval()


def _images(*size: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_classifier_matches_transformers_with_hidden_states_attentions_and_loss(tmp_path, attn_implementation):
    ours = _tiny(ViTForImageClassification)
    ours.config.attn_implementation = attn_implementation
    theirs = _theirs(ours, tmp_path, attn_implementation)
    pixels, labels = _images(32, 32, batch=3), torch.tensor([2, 0, 1])
    with torch.no_grad():
        a = ours(pixels, labels=labels, output_hidden_states=True, output_attentions=True)
        b = theirs(pixels, labels=labels, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=1e-5)
    assert len(a.hidden_states) == len(b.hidden_states) == TINY["num_hidden_layers"] + 1
    for mine, reference in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-5)
    if attn_implementation == "eager":  # transformers' sdpa returns no weights
        for mine, reference in zip(a.attentions, b.attentions, strict=True):
            torch.testing.assert_close(mine, reference, rtol=0, atol=1e-5)


def test_bare_model_and_pooler_match_transformers(tmp_path):
    ours = _tiny(ViTModel, pooler_output_size=24, pooler_act="gelu")
    theirs = _theirs(ours, tmp_path)
    with torch.no_grad():
        a, b = ours(_images(32, 32)), theirs(_images(32, 32))
    assert a.pooler_output.shape == (2, 24)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(48, 40), (24, 24), (32, 32), (64, 64)])
def test_interpolated_position_embeddings_match_transformers(tmp_path, size):
    ours = _tiny(ViTForImageClassification)
    theirs = _theirs(ours, tmp_path)
    pixels = _images(*size)
    with torch.no_grad():
        a = ours(pixels, interpolate_pos_encoding=True).logits
        b = theirs(pixels, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    if size != (32, 32):  # another size is refused without interpolation, with the way out in the message
        with pytest.raises(ValueError, match=r"interpolate_pos_encoding=True"):
            ours(pixels)


def test_checkpoint_saved_by_transformers_loads_and_matches(tmp_path):
    torch.manual_seed(3)
    config = transformers.ViTConfig(**TINY, num_labels=4, qkv_bias=False, layer_norm_eps=1e-6)
    theirs = transformers.ViTForImageClassification(config).eval()
    theirs.save_pretrained(tmp_path)
    ours, info = ViTForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert ours.vit.encoder.layer[0].attention.attention.query.bias is None
    with torch.no_grad():
        torch.testing.assert_close(ours(_images(32, 32)).logits, theirs(_images(32, 32)).logits, rtol=0, atol=1e-5)
    # the Auto class picks the family from config.json
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path)) is ViTForImageClassification


def test_bare_checkpoint_loads_into_the_classifier_dropping_the_pooler(tmp_path):
    """An ImageNet-21k style checkpoint (ViTModel with pooler) fine-tunes into a classifier: only the head is new."""
    torch.manual_seed(4)
    transformers.ViTModel(transformers.ViTConfig(**TINY)).save_pretrained(tmp_path)
    model, info = ViTForImageClassification.from_pretrained(tmp_path, num_labels=5, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert info["unexpected_keys"] == []
    assert model(_images(32, 32)).logits.shape == (2, 5)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = _tiny(ViTForImageClassification).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(_images(32, 32), labels=torch.tensor([0, 1])).loss.backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=1e-6, msg=name)


def test_wrong_channel_count_names_the_shape():
    model = _tiny(ViTModel)
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\).*\(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))


def test_config_round_trips_with_transformers(tmp_path):
    ours = ViTConfig(**(TINY | {"image_size": [32, 48], "num_channels": 1}), id2label={0: "cat", 1: "dog"})
    ours.save_pretrained(tmp_path)
    theirs = transformers.ViTConfig.from_pretrained(tmp_path)
    assert (theirs.image_size, theirs.num_channels, theirs.pooler_output_size) == ([32, 48], 1, 32)
    assert theirs.id2label == {0: "cat", 1: "dog"}
    theirs.save_pretrained(tmp_path / "back")
    back = ViTConfig.from_pretrained(tmp_path / "back")
    assert (back.image_size, back.num_patches, back.num_labels) == ([32, 48], 4 * 6, 2)
    assert "transformers_version" in json.loads((tmp_path / "back" / "config.json").read_text())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden_size": 30}, "divisible by num_attention_heads"),
        ({"patch_size": 64}, "smaller than patch_size"),
        ({"image_size": [32, 0]}, "image_size must be a positive int"),
        ({"pooler_act": "swishy"}, "pooler_act"),
    ],
)
def test_config_refuses_bad_sizes_naming_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        ViTConfig(**(TINY | fields))
