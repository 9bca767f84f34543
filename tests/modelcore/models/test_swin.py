"""Swin against transformers on tiny random configs: shifted windows, padding, positions, checkpoints both ways."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from modelcore import SwinConfig, SwinForImageClassification, SwinModel
from modelcore.errors import ConfigError
from modelcore.models.swin.modeling_swin import relative_position_index

transformers = pytest.importorskip("transformers")

TINY = dict(embed_dim=16, depths=[2, 2], num_heads=[2, 4], image_size=32, patch_size=4, window_size=4)


def _tiny(model_class, seed: int = 0, **overrides):
    """A seeded tiny model with non-trivial values everywhere (bias tables and norms too)."""
    torch.manual_seed(seed)
    model = model_class(SwinConfig(**(TINY | {"num_labels": 3} | overrides)))
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


# (32, 32): exact windows, shifted in every second block; (36, 44): a 9 x 11 grid padded to the windows, merged
# with padding to 5 x 6; (30, 30): pixels padded to the patch size
@pytest.mark.parametrize("size", [(32, 32), (36, 44), (30, 30)])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_classifier_matches_transformers_with_hidden_states_and_loss(tmp_path, size, attn_implementation):
    ours = _tiny(SwinForImageClassification)
    ours.config.attn_implementation = attn_implementation
    theirs = _theirs(ours, tmp_path, attn_implementation)
    pixels, labels = _images(*size), torch.tensor([2, 0])
    with torch.no_grad():
        a = ours(pixels, labels=labels, output_hidden_states=True)
        b = theirs(pixels, labels=labels, output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=1e-5)
    assert len(a.hidden_states) == len(b.hidden_states) == 3  # embeddings + one per stage
    for mine, reference in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-5)


def test_bare_model_matches_transformers_on_a_padded_size(tmp_path):
    ours = _tiny(SwinModel, depths=[2, 2, 2], num_heads=[2, 2, 4])
    theirs = _theirs(ours, tmp_path)
    pixels = _images(68, 76)
    with torch.no_grad():
        a, b = ours(pixels), theirs(pixels)
    assert a.last_hidden_state.shape == (2, 5 * 5, 64)  # 17 x 19 -> 9 x 10 -> 5 x 5 tokens of 4 * embed_dim
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_absolute_positions_interpolated_like_transformers(tmp_path, size):
    ours = _tiny(SwinForImageClassification, use_absolute_embeddings=True)
    theirs = _theirs(ours, tmp_path)
    pixels = _images(*size)
    with torch.no_grad():
        a = ours(pixels, interpolate_pos_encoding=True).logits
        b = theirs(pixels, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    if size != (32, 32):
        with pytest.raises(ValueError, match=r"interpolate_pos_encoding=True"):
            ours(pixels)


def test_grid_smaller_than_the_window_uses_the_bias_rows_of_its_offsets():
    """A 4 x 4 grid with window 7 is one 4 x 4 window (transformers raises here): it equals a window-4 model whose
    bias table holds the 7-table's rows for offsets -3..3."""
    config = dict(embed_dim=16, depths=[2], num_heads=[2], image_size=16, patch_size=4)
    wide = _tiny(SwinModel, **config, window_size=7)
    narrow = SwinModel(SwinConfig(**config, window_size=4)).eval()
    state = wide.state_dict()
    for name, tensor in list(state.items()):
        if name.endswith("relative_position_bias_table"):  # (2 * 7 - 1)^2 rows -> (2 * 4 - 1)^2 rows
            table = torch.empty(7 * 7, tensor.shape[1])
            table[relative_position_index(4).flatten()] = tensor[relative_position_index(4, table_window=7).flatten()]
            state[name] = table
    narrow.load_state_dict(state)
    pixels = _images(16, 16)
    with torch.no_grad():
        torch.testing.assert_close(wide(pixels).last_hidden_state, narrow(pixels).last_hidden_state, rtol=0, atol=1e-6)


def test_published_checkpoint_layout_loads(tmp_path):
    """transformers 4 saved each block's relative_position_index; it is rebuilt here, so it is dropped on load."""
    torch.manual_seed(5)
    theirs = transformers.SwinForImageClassification(transformers.SwinConfig(**TINY, num_labels=4)).eval()
    theirs.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    state = load_file(tmp_path / "model.safetensors")
    for name in [n for n in state if n.endswith("attention.self.relative_position_bias_table")]:
        state[name.replace("relative_position_bias_table", "relative_position_index")] = relative_position_index(4)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours, info = SwinForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    with torch.no_grad():
        torch.testing.assert_close(ours(_images(32, 32)).logits, theirs(_images(32, 32)).logits, rtol=0, atol=1e-5)


def test_stochastic_depth_only_in_training():
    model = _tiny(SwinForImageClassification, drop_path_rate=0.5)
    pixels = _images(32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, model(pixels).logits)
        model.train()
        torch.manual_seed(0)
        first = model(pixels).logits
        torch.manual_seed(1)
        assert not torch.equal(first, model(pixels).logits)


def test_config_derives_hidden_size_and_round_trips_with_transformers(tmp_path):
    ours = SwinConfig(**(TINY | {"depths": [1, 1, 2], "num_heads": [1, 2, 4]}))
    assert (ours.hidden_size, ours.num_layers) == (64, 3)
    ours.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert (stored["hidden_size"], stored["num_layers"]) == (64, 3)
    theirs = transformers.SwinConfig.from_pretrained(tmp_path)
    assert (theirs.hidden_size, theirs.depths, theirs.window_size) == (64, [1, 1, 2], 4)
    theirs.save_pretrained(tmp_path / "back")
    back = SwinConfig.from_pretrained(tmp_path / "back", embed_dim=8)  # derived sizes follow, never the file's
    assert back.hidden_size == 32 and json.loads(back.to_json_string())["hidden_size"] == 32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_heads": [2]}, "one per stage"),
        ({"num_heads": [3, 4]}, r"num_heads\[0\]=3"),
        ({"depths": []}, "depths must be a non-empty"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_config_refuses_bad_sizes_naming_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        SwinConfig(**(TINY | fields))
