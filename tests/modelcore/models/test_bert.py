"""BERT: parity with transformers (names, outputs, losses), config validation, training plumbing, real MiniLM-L6.

transformers is the reference implementation here and only here; modelcore never imports it.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from modelcore.configuration_utils import ConfigError  # noqa: E402
from modelcore.models import bert  # noqa: E402
from modelcore.models.bert import (  # noqa: E402
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
TRANSFORM = ["dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias"]
CLASSES = ["BertModel", "BertForSequenceClassification", "BertForMaskedLM", "BertForTokenClassification"]
IMPLEMENTATIONS = ["eager", "sdpa"]
ATOL = 1e-5


# ---------------------------------------------------------------------------------------------- helpers
def tiny_config(**overrides) -> BertConfig:
    return BertConfig(**{**TINY, **overrides})


def hf_model(name: str, seed: int = 0, **overrides):
    """A transformers model with every parameter randomized (LayerNorms and biases too), in eval mode."""
    torch.manual_seed(seed)
    model = getattr(transformers, name)(transformers.BertConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for param in model.parameters():  # shared (tied) tensors are visited once
            param.normal_(0.0, 0.3)
    return model.eval()


def ours_from_hf(name: str, hf, tmp_path):
    """Our model read from the checkpoint that transformers writes; nothing may be missing or left over."""
    hf.save_pretrained(tmp_path / "hf")
    model, info = getattr(bert, name).from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    for key, value in hf.state_dict().items():  # tied and shared tensors included
        assert torch.equal(model.state_dict()[key], value), key
    return model


def batch(seed: int = 0, size: int = 3, length: int = 10) -> dict[str, torch.Tensor]:
    """Ids, segment ids and a padding mask with a right-padded and a heavily padded row."""
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(size, length, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    return {
        "input_ids": torch.randint(1, TINY["vocab_size"], (size, length), generator=g),
        "attention_mask": attention_mask,
        "token_type_ids": torch.randint(0, TINY["type_vocab_size"], (size, length), generator=g),
    }


def set_impl(hf, ours, impl: str) -> None:
    hf.set_attn_implementation(impl)
    ours.config.attn_implementation = impl


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------------------------- config
def test_config_defaults_match_transformers():
    ours, ref = BertConfig(), transformers.BertConfig()
    for field in dataclasses.fields(BertConfig):
        if hasattr(ref, field.name) and field.name not in ("architectures", "dtype", "attn_implementation"):
            assert getattr(ours, field.name) == getattr(ref, field.name), field.name
    assert BertConfig.model_type == "bert"
    assert ours.position_embedding_type == "absolute" and ours.classifier_dropout is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"vocab_size": -1}, "vocab_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"num_attention_heads": 0}, "num_attention_heads"),
        ({"intermediate_size": 0}, "intermediate_size"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
        ({"type_vocab_size": 0}, "type_vocab_size"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
        ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
        ({"attention_probs_dropout_prob": -0.1}, "attention_probs_dropout_prob"),
        ({"classifier_dropout": 1.5}, "classifier_dropout"),
        ({"initializer_range": -0.02}, "initializer_range"),
        ({"hidden_act": "gelu_typo"}, "hidden_act"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"is_decoder": True}, "is_decoder"),
        ({"pad_token_id": 99}, "pad_token_id"),
        ({"problem_type": "ranking"}, "problem_type"),
        ({"hidden_size": "32"}, "hidden_size"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        tiny_config(**overrides)


def test_config_typo_is_an_error_but_unknown_checkpoint_keys_are_kept():
    with pytest.raises(TypeError):
        BertConfig(hidden_sise=32)
    stored = {**transformers.BertConfig(**TINY).to_dict(), "gradient_checkpointing": False}
    config = BertConfig.from_dict(stored)
    assert config.hidden_size == 32 and config.gradient_checkpointing is False
    assert BertConfig.from_dict(json.loads(config.to_json_string())) == config


# --------------------------------------------------------------------------------------- weight names
@pytest.mark.parametrize("name", CLASSES)
def test_state_dict_names_and_shapes_match_transformers(name):
    ref = getattr(transformers, name)(transformers.BertConfig(**TINY)).state_dict()
    ours = getattr(bert, name)(tiny_config()).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


def test_real_checkpoint_names():
    names = set(BertModel(tiny_config()).state_dict())
    for key in (
        "embeddings.word_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.attention.output.LayerNorm.weight",
        "encoder.layer.1.output.dense.bias",
        "pooler.dense.weight",
    ):
        assert key in names
    assert "embeddings.position_ids" not in names  # a non-persistent buffer, as in transformers
    head = set(BertForSequenceClassification(tiny_config()).state_dict())
    assert "bert.pooler.dense.weight" in head and "classifier.weight" in head
    assert not any(k.startswith("bert.pooler") for k in BertForMaskedLM(tiny_config()).state_dict())
    assert not any(k.startswith("bert.pooler") for k in BertForTokenClassification(tiny_config()).state_dict())


def test_masked_lm_ties_what_transformers_ties():
    assert BertForMaskedLM._tied_weights_keys == transformers.BertForMaskedLM._tied_weights_keys
    model = BertForMaskedLM(tiny_config())
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    assert model.get_output_embeddings() is model.cls.predictions.decoder
    assert model.get_input_embeddings() is model.bert.embeddings.word_embeddings
    untied = BertForMaskedLM(tiny_config(tie_word_embeddings=False))
    assert untied.cls.predictions.decoder.weight is not untied.bert.embeddings.word_embeddings.weight


def test_legacy_checkpoint_keys_load(tmp_path):
    """Old checkpoints: a saved position_ids buffer (ignored) and LayerNorm gamma/beta names (renamed)."""
    from safetensors.torch import save_file

    source = BertModel(tiny_config())
    state = {}
    for key, value in source.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[key] = value.clone()
    state["embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    save_file(state, tmp_path / "model.safetensors")
    source.config.save_pretrained(tmp_path)
    model, info = BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_heads_load_a_bare_checkpoint_and_back(tmp_path):
    """A BertModel checkpoint (no ``bert.`` prefix) feeds every head; a head's checkpoint feeds BertModel."""
    base = BertModel(tiny_config())
    base.save_pretrained(tmp_path / "base")
    new_head = {
        "BertForSequenceClassification": ["classifier.weight", "classifier.bias"],
        "BertForTokenClassification": ["classifier.weight", "classifier.bias"],
        "BertForMaskedLM": ["cls.predictions.bias", *[f"cls.predictions.transform.{m}" for m in TRANSFORM]],
    }
    for name, missing in new_head.items():
        head, info = getattr(bert, name).from_pretrained(tmp_path / "base", output_loading_info=True)
        assert sorted(info["missing_keys"]) == sorted(missing), name
        assert info["unexpected_keys"] == [], name  # the pooler is ignored by the heads without one
        assert torch.equal(head.bert.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)
    head = BertForSequenceClassification(tiny_config(num_labels=3))
    head.save_pretrained(tmp_path / "head")
    bare, info = BertModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert info["missing_keys"] == [] and sorted(info["unexpected_keys"]) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(bare.pooler.dense.weight, head.bert.pooler.dense.weight)


def test_init_follows_bert():
    config = tiny_config(initializer_range=0.05)
    model = BertForMaskedLM(config)
    embeddings = model.bert.embeddings
    assert torch.all(embeddings.word_embeddings.weight[config.pad_token_id] == 0)
    assert torch.all(embeddings.LayerNorm.weight == 1) and torch.all(embeddings.LayerNorm.bias == 0)
    assert torch.all(model.cls.predictions.bias == 0)
    query = model.bert.encoder.layer[0].attention.self.query
    assert torch.all(query.bias == 0) and abs(query.weight.std().item() - 0.05) < 0.01
    assert torch.equal(embeddings.position_ids, torch.arange(config.max_position_embeddings)[None])


# ------------------------------------------------------------------------------------ forward parity
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bert_model_matches_transformers(impl, tmp_path):
    hf = hf_model("BertModel")
    ours = ours_from_hf("BertModel", hf, tmp_path)
    set_impl(hf, ours, impl)
    inputs = batch()
    with torch.no_grad():
        ref = hf(**inputs, output_hidden_states=True)
        out = ours(**inputs, output_hidden_states=True)
    assert max_diff(out.last_hidden_state, ref.last_hidden_state) <= ATOL
    assert max_diff(out.pooler_output, ref.pooler_output) <= ATOL
    assert len(out.hidden_states) == len(ref.hidden_states) == TINY["num_hidden_layers"] + 1
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert max_diff(mine, theirs) <= ATOL


@pytest.mark.parametrize("name", CLASSES)
def test_transformers_reads_our_checkpoints(name, tmp_path):
    ours = getattr(bert, name)(tiny_config(num_labels=3)).eval()
    with torch.no_grad():
        for param in ours.parameters():
            param.normal_(0.0, 0.3)
    ours.save_pretrained(tmp_path)
    hf, info = getattr(transformers, name).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert hf.config.num_labels == 3
    inputs = batch()
    with torch.no_grad():
        ref, out = hf.eval()(**inputs), ours(**inputs)
    key = "last_hidden_state" if name == "BertModel" else "logits"
    assert max_diff(out[key], ref[key]) <= ATOL


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_attention_weights_match_transformers(impl, tmp_path):
    hf = hf_model("BertModel")
    ours = ours_from_hf("BertModel", hf, tmp_path)
    set_impl(hf, ours, "eager")  # transformers' SDPA path returns no weights; ours falls back to eager for them
    ours.config.attn_implementation = impl
    inputs = batch()
    with torch.no_grad():
        ref = hf(**inputs, output_attentions=True)
        out = ours(**inputs, output_attentions=True)
    assert len(out.attentions) == TINY["num_hidden_layers"]
    for mine, theirs in zip(out.attentions, ref.attentions, strict=True):
        assert mine.shape == (3, TINY["num_attention_heads"], 10, 10)
        assert max_diff(mine, theirs) <= ATOL
    assert torch.all(out.attentions[0][2, :, :, 3:] == 0)  # padded keys get no weight


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("name", "overrides", "labels"),
    [
        ("BertForSequenceClassification", {"num_labels": 3}, torch.tensor([0, 2, 1])),
        ("BertForSequenceClassification", {"num_labels": 1}, torch.tensor([0.5, -1.0, 2.0])),
        ("BertForSequenceClassification", {"num_labels": 3}, torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]])),
        (
            "BertForSequenceClassification",
            {"num_labels": 2, "problem_type": "multi_label_classification"},
            torch.tensor([[1.0, 0], [0, 1], [1, 1]]),
        ),
        ("BertForMaskedLM", {}, "mlm"),
        ("BertForTokenClassification", {"num_labels": 5}, "tokens"),
    ],
    ids=["single-label", "regression", "multi-label-inferred", "multi-label-explicit", "mlm", "token"],
)
def test_heads_match_transformers(name, overrides, labels, impl, tmp_path):
    hf = hf_model(name, **overrides)
    ours = ours_from_hf(name, hf, tmp_path)
    set_impl(hf, ours, impl)
    inputs = batch()
    g = torch.Generator().manual_seed(1)
    if isinstance(labels, str):  # per-token targets, -100 on padding and (for MLM) on unmasked positions
        high = TINY["vocab_size"] if labels == "mlm" else overrides["num_labels"]
        labels = torch.randint(0, high, inputs["input_ids"].shape, generator=g)
        labels[inputs["attention_mask"] == 0] = -100
        if name == "BertForMaskedLM":
            labels[:, ::2] = -100
    with torch.no_grad():
        ref = hf(**inputs, labels=labels)
        out = ours(**inputs, labels=labels)
    assert out.logits.shape == ref.logits.shape
    assert max_diff(out.logits, ref.logits) <= ATOL
    assert abs(out.loss.item() - ref.loss.item()) <= ATOL
    assert out[0] is out.loss and out[1] is out.logits


def test_inputs_embeds_and_default_token_types():
    model = BertModel(tiny_config()).eval()
    inputs = batch()
    with torch.no_grad():
        by_ids = model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
        zeros = torch.zeros_like(inputs["input_ids"])
        explicit = model(inputs["input_ids"], attention_mask=inputs["attention_mask"], token_type_ids=zeros)
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        by_embeds = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(by_ids.last_hidden_state, explicit.last_hidden_state)
    torch.testing.assert_close(by_ids.last_hidden_state, by_embeds.last_hidden_state)


def test_forward_rejects_bad_calls():
    model = BertModel(tiny_config())
    ids = batch()["input_ids"]
    with pytest.raises(TypeError):
        model(ids, attention_msk=torch.ones_like(ids))  # a typo is not swallowed
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, TINY["max_position_embeddings"] + 1, dtype=torch.long))


# --------------------------------------------------------------------------------------------- training
def test_backward_reaches_every_parameter():
    model = BertForMaskedLM(tiny_config()).train()
    inputs = batch()
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs, labels=labels).loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # the tied matrix collects gradient from both the embedding lookup and the decoder
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["BertForSequenceClassification", "BertForTokenClassification"])
def test_gradient_checkpointing_gives_the_same_grads(name, monkeypatch):
    model = getattr(bert, name)(tiny_config(num_labels=2)).train()  # dropout on: RNG state must be replayed
    inputs = batch()
    labels = torch.tensor([0, 1, 1]) if name == "BertForSequenceClassification" else inputs["token_type_ids"]

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(123)
        model(**inputs, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    calls = []
    layer_forward = bert.modeling_bert.BertLayer.forward
    monkeypatch.setattr(bert.modeling_bert.BertLayer, "forward", lambda *args: calls.append(1) or layer_forward(*args))
    model.gradient_checkpointing_enable()
    assert model.bert.encoder.gradient_checkpointing
    checkpointed = grads()
    monkeypatch.undo()
    layers = TINY["num_hidden_layers"]
    assert len(calls) == 2 * layers  # each layer ran again during backward: its activations were recomputed
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value, rtol=0, atol=1e-6, msg=key)
    model.gradient_checkpointing_disable()
    assert not model.bert.encoder.gradient_checkpointing


# ------------------------------------------------------------------------------- padding-free training
@pytest.mark.parametrize("name", ["BertModel", "BertForSequenceClassification", "BertForMaskedLM"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_padding_free_training_gives_the_padded_results_and_grads(name, impl):
    """In training, per-token layers run on the real tokens only; every real output and every gradient is unchanged."""
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2, attn_implementation=impl)
    torch.manual_seed(0)
    model = getattr(bert, name)(tiny_config(**no_dropout)).train()
    base = model if name == "BertModel" else model.bert
    inputs = batch(size=4)
    if name != "BertForSequenceClassification":  # a left-padded row too (its [CLS] slot is padding: not pooled)
        inputs["attention_mask"][3, :4] = 0
    real = inputs["attention_mask"].bool()
    labels = {
        "BertModel": None,
        "BertForSequenceClassification": torch.tensor([0, 1, 1, 0]),
        "BertForMaskedLM": inputs["input_ids"].masked_fill(~real, -100),
    }[name]

    def run(padding_free: bool):
        base.padding_free_training = padding_free
        calls = []
        from_groups = bert.modeling_bert.Unpadded.from_groups
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                bert.modeling_bert.Unpadded, "from_groups", lambda self, x: calls.append(len(x)) or from_groups(self, x)
            )
            model.zero_grad()
            out = model(**inputs, **({"labels": labels} if labels is not None else {}))
        first = out.last_hidden_state if name == "BertModel" else out.logits
        (out.loss if labels is not None else first[real].square().sum()).backward()  # a loss on real tokens
        return out, first, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, calls

    padded, padded_first, padded_grads, padded_calls = run(False)
    free, free_first, free_grads, free_calls = run(True)
    # grouped attention in each layer: 4 rows in groups of one, each padded to its own length
    assert not padded_calls and free_calls == [4] * TINY["num_hidden_layers"]
    if name == "BertModel":
        torch.testing.assert_close(free_first[real], padded_first[real], rtol=1e-5, atol=1e-5)
        assert torch.equal(free_first[~real], torch.zeros_like(free_first[~real]))  # padding is not computed
        torch.testing.assert_close(free.pooler_output[:3], padded.pooler_output[:3], rtol=1e-5, atol=1e-5)
    elif name == "BertForMaskedLM":
        torch.testing.assert_close(free_first[real], padded_first[real], rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(free_first, padded_first, rtol=1e-5, atol=1e-5)
    if labels is not None:
        torch.testing.assert_close(free.loss, padded.loss, rtol=1e-6, atol=1e-6)
    assert free_grads.keys() == padded_grads.keys()
    for key, value in padded_grads.items():
        torch.testing.assert_close(free_grads[key], value, rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


def test_padding_free_is_for_training_only():
    """Eval mode, per-layer outputs and unpadded batches take the ordinary path: outputs match transformers there."""
    model = BertModel(tiny_config()).eval()
    inputs = batch()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bert.modeling_bert, "Unpadded", None)  # any use would fail
        out = model(**inputs)
        assert out.last_hidden_state[~inputs["attention_mask"].bool()].abs().sum() > 0  # padded rows are computed
        model.train()
        model(**inputs, output_hidden_states=True)
        model(**inputs, output_attentions=True)
        model(input_ids=inputs["input_ids"])  # no padding at all
        almost_full = torch.ones(3, 20, dtype=torch.long)
        almost_full[0, -1] = 0  # 1 of 60 positions: moving tokens around would cost more than it saves
        model(input_ids=torch.randint(1, TINY["vocab_size"], (3, 20)), attention_mask=almost_full)
        model.padding_free_training = False
        model(**inputs)


# ----------------------------------------------------------------------------------- real checkpoint
@pytest.mark.slow  # about 5-10 s on two shared CPU cores: four MiniLM forwards on 32 x 60 tokens
def test_minilm_l6_matches_transformers_on_real_sentences(minilm_dir, rotten_tomatoes):
    """all-MiniLM-L6-v2 on 32 real review snippets, padded, tokenized with transformers' tokenizer."""
    texts = [example["text"] for example in rotten_tomatoes[::397][:32]]
    assert len(texts) == 32
    inputs = transformers.AutoTokenizer.from_pretrained(minilm_dir)(texts, padding=True, return_tensors="pt")
    real = inputs["attention_mask"].bool()
    assert not real.all()  # the batch is padded

    hf = transformers.BertModel.from_pretrained(minilm_dir).eval()
    ours, info = BertModel.from_pretrained(minilm_dir, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}  # position_ids: ignored
    assert ours.config.hidden_size == 384 and ours.config.num_hidden_layers == 6

    for impl in IMPLEMENTATIONS:
        set_impl(hf, ours, impl)
        with torch.no_grad():
            ref = hf(**inputs).last_hidden_state
            out = ours(**inputs).last_hidden_state
        assert max_diff(out[real], ref[real]) <= 1e-4, impl


def test_padding_free_dropout_draws_fast_masks_with_the_padded_distribution():
    """Padding-free training drops out with fast_dropout's masks (no bernoulli_), and every real output keeps
    its distribution: over many draws, the mean of each output element matches padded training's."""
    torch.manual_seed(0)
    model = BertModel(tiny_config(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)).train()
    with torch.no_grad():
        for param in model.parameters():  # large weights: outputs depend strongly on which units are dropped
            param.normal_(0.0, 0.3)
    inputs = batch(size=4)
    real = inputs["attention_mask"].bool()

    def operators(padding_free: bool) -> set[str]:
        model.padding_free_training = padding_free
        with torch.profiler.profile() as prof:
            model(**inputs).last_hidden_state[real].sum().backward()
        return {event.key for event in prof.key_averages()}

    assert "aten::bernoulli_" in operators(False)
    assert "aten::bernoulli_" not in operators(True)

    def draws(padding_free: bool, n: int = 400) -> torch.Tensor:
        model.padding_free_training = padding_free
        with torch.no_grad():
            return torch.stack([model(**inputs).last_hidden_state[real] for _ in range(n)]).flatten(1)  # (n, D)

    padded, free = draws(False), draws(True)
    assert padded.std(0).mean() > 0.1  # dropout moves the outputs a lot
    z = (free.mean(0) - padded.mean(0)) / (free.var(0) / len(free) + padded.var(0) / len(padded)).sqrt()
    assert z.abs().max() < 5, f"largest z-score {z.abs().max():.1f} over {z.numel()} outputs"
    torch.testing.assert_close(free.std(0), padded.std(0), rtol=0.25, atol=0.01)


# ----------------------------------------------------------------------------------- question answering
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_question_answering_head_matches_transformers(impl, tmp_path):
    """Start/end logits and the loss (an out-of-range span ignored, as transformers does) from HF's checkpoint."""
    from modelcore import AutoModelForQuestionAnswering
    from modelcore.models.bert.modeling_bert import BertForQuestionAnswering

    hf = hf_model("BertForQuestionAnswering")
    hf.save_pretrained(tmp_path / "hf")
    ours, info = BertForQuestionAnswering.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert {"qa_outputs.weight", "qa_outputs.bias"} <= set(ours.state_dict())
    set_impl(hf, ours, impl)
    inputs = batch()
    start, end = torch.tensor([1, 4, 99]), torch.tensor([3, 5, 99])  # row 2's span lies outside the input
    with torch.no_grad():
        ref = hf(**inputs, start_positions=start, end_positions=end)
        out = ours(**inputs, start_positions=start, end_positions=end)
    assert out.start_logits.shape == out.end_logits.shape == (3, 10)
    assert max_diff(out.start_logits, ref.start_logits) <= ATOL
    assert max_diff(out.end_logits, ref.end_logits) <= ATOL
    assert abs(out.loss.item() - ref.loss.item()) <= ATOL
    assert type(AutoModelForQuestionAnswering.from_pretrained(tmp_path / "hf")) is BertForQuestionAnswering
    ours.save_pretrained(tmp_path / "ours")  # and transformers reads ours back
    back = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert max_diff(back(**inputs).start_logits, ref.start_logits) <= ATOL
