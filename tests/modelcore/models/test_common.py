"""The shared tester: every class registered in the Auto registry goes through the same checks.

A new family enrolls by registering in ``modelcore.auto.registry.FAMILIES`` and adding a tiny
config below (a test fails until it does): save/load with sharding, forward on a padded batch,
backward, and parity with transformers' class of the same name through files, both ways.
"""

from __future__ import annotations

import pytest
import torch

from modelcore.auto.configuration_auto import config_class_for
from modelcore.auto.registry import FAMILIES, resolve

transformers = pytest.importorskip("transformers")

TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(
        vocab_size=120,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    ),
    "bert": dict(vocab_size=120, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6),
    "vit": dict(
        hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6, image_size=16, patch_size=4
    ),
    # 18 x 18 pixels: a 9 x 9 patch grid, padded to the 4 x 4 windows, then merged (with padding) to 5 x 5
    "swin": dict(embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, image_size=18, patch_size=2),
    "whisper": dict(
        vocab_size=120,
        num_mel_bins=8,
        d_model=48,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=80,
        decoder_ffn_dim=80,
        max_source_positions=16,
        max_target_positions=32,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        begin_suppress_tokens=[2],
    ),  # fmt: skip
}
VISION = {"vit", "swin"}  # families that take pixel_values instead of input_ids
SPEECH = {"whisper"}  # families that take log-mel input_features (B, mel bins, 2 * source positions)
CASES = [(model_type, task, ref) for model_type, family in FAMILIES.items() for task, ref in family.models.items()]


def test_every_registered_family_has_a_tiny_config():
    assert set(TINY_CONFIGS) == set(FAMILIES)


def _build(model_type: str, ref: str):
    torch.manual_seed(0)
    num_labels = 2 if ref.endswith("ForQuestionAnswering") else 3  # a QA head scores start and end
    config = config_class_for(model_type)(**TINY_CONFIGS[model_type], num_labels=num_labels)
    model = resolve(ref)(config)
    with torch.no_grad():  # non-trivial values everywhere (norms and biases too), so parity means something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _batch(task: str, model_type: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if model_type in VISION:
        size = TINY_CONFIGS[model_type]["image_size"]
        batch = {"pixel_values": torch.randn(3, 3, size, size, generator=g)}
        if task == "AutoModelForImageClassification":
            batch["labels"] = torch.tensor([0, 2, 1])
        return batch
    if model_type in SPEECH:
        config = TINY_CONFIGS[model_type]
        batch = {
            "input_features": torch.randn(3, config["num_mel_bins"], 2 * config["max_source_positions"], generator=g)
        }
        tokens = torch.randint(3, 120, (3, 7), generator=g)
        batch["labels" if task == "AutoModelForSpeechSeq2Seq" else "decoder_input_ids"] = tokens
        return batch
    ids = torch.randint(3, 120, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding
    mask[2, 5:] = 0
    ids[mask == 0] = 0  # the pad id, which sequence classification pools by
    batch = {"input_ids": ids, "attention_mask": mask}
    if task == "AutoModelForSequenceClassification":
        batch["labels"] = torch.tensor([0, 2, 1])
    elif task in ("AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForTokenClassification"):
        high = 3 if task == "AutoModelForTokenClassification" else 120
        batch["labels"] = torch.randint(0, high, ids.shape, generator=g).masked_fill(mask == 0, -100)
    elif task == "AutoModelForQuestionAnswering":
        batch["start_positions"], batch["end_positions"] = torch.tensor([1, 2, 0]), torch.tensor([3, 6, 4])
    return batch


def _outputs(model, batch) -> torch.Tensor:
    out = model(**batch)
    if getattr(out, "start_logits", None) is not None:
        return torch.stack([out.start_logits, out.end_logits], dim=-1)  # (B, T, 2)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


@pytest.mark.parametrize(("model_type", "task", "ref"), CASES, ids=[ref.split(":")[1] for _, _, ref in CASES])
def test_registered_model(tmp_path, model_type, task, ref):
    model = _build(model_type, ref).eval()
    batch = _batch(task, model_type)
    keep = batch["attention_mask"].bool() if "attention_mask" in batch else slice(None)  # images: every position

    # forward and backward
    model.train()
    out = model(**batch)
    if "labels" in batch or "start_positions" in batch:
        loss = out.loss
    else:  # a bare model: every output it returns (hidden states, pooler) must carry gradient
        loss = out.last_hidden_state[keep].pow(2).mean() + sum(
            t.pow(2).mean() for t in [getattr(out, "pooler_output", None)] if t is not None
        )
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:  # fixed tables (Whisper's sinusoidal encoder positions) are frozen, as in transformers
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    model.zero_grad()

    # save with several shards, load back bit-identical
    model.save_pretrained(tmp_path / "ours", max_shard_size="50KB")
    assert len(list((tmp_path / "ours").glob("model-*.safetensors"))) > 1
    loaded = type(model).from_pretrained(tmp_path / "ours")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    with torch.no_grad():
        expected = _outputs(model, batch)
        # transformers loads what we saved ...
        hf_class = getattr(transformers, type(model).__name__)
        hf = hf_class.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
        theirs = _outputs(hf, batch)
        rows = keep if expected.dim() == 3 else slice(None)
        torch.testing.assert_close(theirs[rows], expected[rows], rtol=0, atol=1e-5)
        # ... and we load what transformers saved.
        hf.save_pretrained(tmp_path / "theirs")
        ours_again = type(model).from_pretrained(tmp_path / "theirs")
        torch.testing.assert_close(_outputs(ours_again, batch)[rows], expected[rows], rtol=0, atol=1e-5)
