"""Llama: configuration, rotary embeddings and the model, checked against Hugging Face transformers.

Every parity test builds the same tiny configuration in both libraries, gives both models the same
(random, non-trivial) weights, and compares outputs in fp32.
"""

from __future__ import annotations

import json

import pytest
import torch

from modelcore.configuration_utils import ConfigError
from modelcore.models.llama import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel
from modelcore.nn.cache import DynamicCache
from modelcore.nn.rotary import RotaryEmbedding, apply_rotary_pos_emb

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
ROPE_SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": LLAMA3,
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
}
ATOL = 1e-5


# --------------------------------------------------------------------------- helpers
def tiny_kwargs(**overrides) -> dict:
    return {**TINY, **overrides}


def hf_config(kwargs: dict, attn_implementation: str = "sdpa"):
    """The transformers (v5) config equivalent to ``LlamaConfig(**kwargs)``."""
    kwargs = dict(kwargs)
    scaling = kwargs.pop("rope_scaling", None) or {"rope_type": "default"}
    rope_parameters = {**scaling, "rope_theta": kwargs.pop("rope_theta", 10000.0)}
    config = transformers.LlamaConfig(**kwargs, rope_parameters=rope_parameters)
    config._attn_implementation = attn_implementation
    return config


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights large enough that a wrong wire shows: N(0, 0.1), norm scales around 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * 0.1
            param.copy_(1.0 + noise if name.endswith("layernorm.weight") or name.endswith("norm.weight") else noise)


def make_pair(kwargs: dict, attn_implementation: str = "sdpa", head: str = "LlamaForCausalLM"):
    """(ours, hf) with identical weights, in eval mode."""
    ours_cls = {"LlamaForCausalLM": LlamaForCausalLM, "LlamaForSequenceClassification": LlamaForSequenceClassification}
    torch.manual_seed(0)
    hf = getattr(transformers, head)(hf_config(kwargs, attn_implementation)).eval()
    randomize_(hf)
    ours = ours_cls[head](LlamaConfig(**kwargs, attn_implementation=attn_implementation)).eval()
    ours.load_state_dict(hf.state_dict())
    return ours, hf


def batch(seed: int = 1, b: int = 3, t: int = 12, vocab: int = 128) -> torch.Tensor:
    return torch.randint(3, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def padding(t: int, lengths: list[int], side: str) -> torch.Tensor:
    """(B, T) 0/1 mask with each row's real tokens on the right (left padding) or the left."""
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for row, n in enumerate(lengths):
        if side == "left":
            mask[row, t - n :] = 1
        else:
            mask[row, :n] = 1
    return mask


def left_pad_positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


# --------------------------------------------------------------------------- configuration
def test_config_defaults_are_hf_defaults():
    ours, hf = LlamaConfig(), transformers.LlamaConfig()
    for name in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "initializer_range",
        "rms_norm_eps",
        "use_cache",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "tie_word_embeddings",
        "attention_bias",
        "attention_dropout",
        "mlp_bias",
        "pretraining_tp",
    ):
        assert getattr(ours, name) == getattr(hf, name), name
    assert ours.rope_parameters == hf.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert LlamaConfig.model_type == "llama"


def test_config_derived_defaults():
    config = LlamaConfig(hidden_size=96, num_attention_heads=6)
    assert config.head_dim == 16 and config.num_key_value_heads == 6
    assert LlamaConfig(hidden_size=100, num_attention_heads=4, head_dim=32).head_dim == 32


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(hidden_size=100, num_attention_heads=3), "hidden_size"),
        (dict(num_attention_heads=32, num_key_value_heads=5), "num_key_value_heads"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(hidden_size=-64), "hidden_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(num_attention_heads=0), "num_attention_heads"),
        (dict(head_dim=0), "head_dim"),
        (dict(hidden_act="swiglu"), "hidden_act"),
        (dict(rms_norm_eps=0.0), "rms_norm_eps"),
        (dict(attention_dropout=1.5), "attention_dropout"),
        (dict(rope_scaling={"rope_type": "ntk", "factor": 2.0}), "rope_scaling"),
        (dict(rope_scaling={"rope_type": "linear"}), "factor"),
        (dict(rope_scaling={"type": "dynamic"}), "factor"),
        (dict(rope_scaling={"rope_type": "linear", "factor": "2"}), "factor"),
        (dict(rope_scaling={k: v for k, v in LLAMA3.items() if k != "low_freq_factor"}), "low_freq_factor"),
        (dict(rope_scaling={k: v for k, v in LLAMA3.items() if k != "high_freq_factor"}), "high_freq_factor"),
        (
            dict(rope_scaling={k: v for k, v in LLAMA3.items() if k != "original_max_position_embeddings"}),
            "original_max_position_embeddings",
        ),
        (dict(hidden_size="64"), "hidden_size"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        LlamaConfig(**kwargs)


def test_config_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="hidden_sise"):
        LlamaConfig(hidden_sise=64)


def test_config_reads_v4_rope_layout_with_legacy_type_key():
    config = LlamaConfig.from_dict(
        {"model_type": "llama", "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 4.0}}
    )
    assert config.rope_theta == 500000.0
    assert config.rope_type == "linear" and config.rope_scaling["factor"] == 4.0
    assert (
        config.rope_parameters
        == transformers.LlamaConfig(rope_theta=500000.0, rope_scaling={"type": "linear", "factor": 4.0}).rope_parameters
    )


def test_config_reads_v5_rope_layout():
    config = LlamaConfig.from_dict({"model_type": "llama", "rope_parameters": {**LLAMA3, "rope_theta": 500000.0}})
    assert config.rope_theta == 500000.0 and config.rope_scaling == LLAMA3
    default = LlamaConfig.from_dict({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert default.rope_theta == 1e6 and default.rope_scaling is None
    assert "rope_parameters" not in default._extra  # translated, not kept as an unknown key


@pytest.mark.parametrize("scaling", list(ROPE_SCALINGS))
def test_saved_config_reads_the_same_in_hf_v5_and_v4_layouts(tmp_path, scaling):
    ours = LlamaConfig(**tiny_kwargs(rope_theta=500000.0, rope_scaling=ROPE_SCALINGS[scaling]))
    ours.save_pretrained(tmp_path)

    hf = transformers.LlamaConfig.from_pretrained(tmp_path)  # a v5 reader
    assert hf.rope_parameters == ours.rope_parameters
    assert hf.num_key_value_heads == ours.num_key_value_heads and hf.head_dim == ours.head_dim

    stored = json.loads((tmp_path / "config.json").read_text())  # what a v4 reader looks at
    v4_view = {"rope_type": "default", **(stored["rope_scaling"] or {}), "rope_theta": stored["rope_theta"]}
    if scaling == "yarn":  # both readers default it to max_position_embeddings
        v4_view.setdefault("original_max_position_embeddings", stored["max_position_embeddings"])
    assert v4_view == stored["rope_parameters"] == ours.rope_parameters

    again = LlamaConfig.from_pretrained(tmp_path)
    assert again == ours


@pytest.mark.parametrize("scaling", ["default", "linear", "llama3"])
def test_hf_saved_config_loads_identically(tmp_path, scaling):
    kwargs = tiny_kwargs(rope_theta=500000.0, rope_scaling=ROPE_SCALINGS[scaling])
    hf_config(kwargs).save_pretrained(tmp_path)
    ours = LlamaConfig.from_pretrained(tmp_path)
    assert ours.rope_theta == 500000.0
    assert ours.rope_parameters == transformers.LlamaConfig.from_pretrained(tmp_path).rope_parameters
    assert ours.num_key_value_heads == 2 and ours.head_dim == 16


def test_published_llama32_config_reads_like_hf(tmp_path):
    """The v4-layout config.json of Llama-3.2-1B, as published."""
    published = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "head_dim": 64,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_hidden_layers": 16,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0.dev0",
        "use_cache": True,
        "vocab_size": 128256,
    }
    (tmp_path / "config.json").write_text(json.dumps(published))
    ours = LlamaConfig.from_pretrained(tmp_path)
    hf = transformers.LlamaConfig.from_pretrained(tmp_path)
    assert ours.rope_parameters == hf.rope_parameters
    assert ours.dtype == "bfloat16" and ours.transformers_version == "4.45.0.dev0"  # unknown keys are kept
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    torch.testing.assert_close(RotaryEmbedding(ours).inv_freq, LlamaRotaryEmbedding(hf).inv_freq, atol=0, rtol=0)


# --------------------------------------------------------------------------- rotary
@pytest.mark.parametrize("scaling", list(ROPE_SCALINGS))
@pytest.mark.parametrize("seq_len", [10, 100])  # 100 > max_position_embeddings: dynamic rescales
def test_rotary_matches_hf(scaling, seq_len):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as hf_apply

    kwargs = tiny_kwargs(rope_scaling=ROPE_SCALINGS[scaling])
    ours, hf = RotaryEmbedding(LlamaConfig(**kwargs)), LlamaRotaryEmbedding(hf_config(kwargs))
    assert ours.inv_freq.dtype == torch.float32
    assert "inv_freq" not in ours.state_dict()
    x = torch.randn(2, seq_len, 16)
    positions = torch.arange(seq_len)[None].expand(2, -1)
    cos, sin = ours(x, positions)
    hf_cos, hf_sin = hf(x, positions)
    torch.testing.assert_close(cos, hf_cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, hf_sin, atol=1e-6, rtol=0)

    q, k = torch.randn(2, 4, seq_len, 16), torch.randn(2, 2, seq_len, 16)
    for got, want in zip(apply_rotary_pos_emb(q, k, cos, sin), hf_apply(q, k, hf_cos, hf_sin), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_rotary_casts_to_input_dtype():
    rotary = RotaryEmbedding(LlamaConfig(**TINY))
    cos, sin = rotary(torch.zeros(1, 3, 16, dtype=torch.bfloat16), torch.arange(3)[None])
    assert cos.dtype == sin.dtype == torch.bfloat16 and cos.shape == (1, 3, 16)


def test_half_precision_model_keeps_fp32_frequencies():
    ours, _ = make_pair(tiny_kwargs(rope_scaling=LLAMA3))
    ids = batch()
    with torch.no_grad():
        reference = ours(ids).logits
        inv_freq = ours.model.rotary_emb.inv_freq.clone()
        ours.to(torch.bfloat16)
        assert ours.model.rotary_emb.inv_freq.dtype == torch.float32
        torch.testing.assert_close(ours.model.rotary_emb.inv_freq, inv_freq, atol=0, rtol=0)
        for attn in ("eager", "sdpa"):
            ours.config.attn_implementation = attn
            logits = ours(ids).logits
            assert logits.dtype == torch.bfloat16
            torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.05)


def test_rotary_frequencies_are_real_when_parameters_are_on_meta():
    reference = LlamaForCausalLM(LlamaConfig(**tiny_kwargs(rope_scaling=LLAMA3)))
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**tiny_kwargs(rope_scaling=LLAMA3)))
    assert model.lm_head.weight.is_meta
    inv_freq = model.model.rotary_emb.inv_freq
    assert not inv_freq.is_meta
    torch.testing.assert_close(inv_freq, reference.model.rotary_emb.inv_freq, atol=0, rtol=0)


# --------------------------------------------------------------------------- model parity
@pytest.mark.parametrize("tie", [False, True])
def test_state_dict_names_match_hf(tie):
    kwargs = tiny_kwargs(tie_word_embeddings=tie)
    ours = LlamaForCausalLM(LlamaConfig(**kwargs))
    hf = transformers.LlamaForCausalLM(hf_config(kwargs))
    assert list(ours.state_dict()) == list(hf.state_dict())
    shapes = {k: v.shape for k, v in hf.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    seq_cls = LlamaForSequenceClassification(LlamaConfig(**kwargs, pad_token_id=0, num_labels=3))
    hf_cls = transformers.LlamaForSequenceClassification(hf_config({**kwargs, "pad_token_id": 0, "num_labels": 3}))
    assert list(seq_cls.state_dict()) == list(hf_cls.state_dict())


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_hf(attn, tie):
    ours, hf = make_pair(tiny_kwargs(tie_word_embeddings=tie), attn)
    ids = batch()
    with torch.no_grad():
        got, want = ours(ids), hf(ids)
    torch.testing.assert_close(got.logits, want.logits, atol=ATOL, rtol=0)
    assert got.logits.abs().max() > 0.1  # not a trivially small comparison


@pytest.mark.parametrize("scaling", ["linear", "dynamic", "llama3", "yarn"])
def test_logits_match_hf_with_rope_scaling(scaling):
    # max_position_embeddings=8 < 12 tokens, so dynamic NTK scaling is active
    ours, hf = make_pair(
        tiny_kwargs(rope_scaling=ROPE_SCALINGS[scaling], max_position_embeddings=8 if scaling == "dynamic" else 64)
    )
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_logits_match_hf(attn, side):
    ours, hf = make_pair(tiny_kwargs(), attn)
    ids = batch()
    mask = padding(ids.shape[1], [12, 7, 3], side)
    position_ids = left_pad_positions(mask) if side == "left" else None
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, position_ids=position_ids).logits
        want = hf(ids, attention_mask=mask, position_ids=position_ids).logits
    real = mask.bool()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)


def test_left_padding_gives_the_unpadded_logits():
    ours, _ = make_pair(tiny_kwargs())
    ids = batch(b=1, t=6)
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = padding(10, [6], "left")
    with torch.no_grad():
        alone = ours(ids).logits
        in_batch = ours(padded, attention_mask=mask, position_ids=left_pad_positions(mask)).logits[:, 4:]
    torch.testing.assert_close(in_batch, alone, atol=ATOL, rtol=0)


def test_hidden_states_and_attentions_match_hf():
    ours, hf = make_pair(tiny_kwargs(), "eager")
    ids = batch()
    with torch.no_grad():
        got = ours(ids, output_hidden_states=True, output_attentions=True)
        want = hf(ids, output_hidden_states=True, output_attentions=True)
    assert len(got.hidden_states) == len(want.hidden_states) == TINY["num_hidden_layers"] + 1
    for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert len(got.attentions) == TINY["num_hidden_layers"]
    for a, b in zip(got.attentions, want.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_inputs_embeds_equals_input_ids():
    ours, _ = make_pair(tiny_kwargs())
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(inputs_embeds=ours.model.embed_tokens(ids)).logits, ours(ids).logits)
    with pytest.raises(ValueError, match="exactly one"):
        ours()


def test_logits_to_keep():
    ours, _ = make_pair(tiny_kwargs())
    ids = batch()
    with torch.no_grad():
        full = ours(ids).logits
        last = ours(ids, logits_to_keep=1).logits
    assert last.shape == (3, 1, 128)
    # fp32 tolerance, not bitwise: a (3, C) @ (C, V) GEMM may round unlike the (3T, C) one (AVX2 kernels do)
    torch.testing.assert_close(last, full[:, -1:])


@pytest.mark.parametrize("tie", [False, True])
def test_loss_matches_hf(tie):
    ours, hf = make_pair(tiny_kwargs(tie_word_embeddings=tie))
    ids = batch()
    labels = ids.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        got, want = ours(ids, labels=labels).loss, hf(ids, labels=labels).loss
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    with torch.no_grad():
        got_sum = ours(ids, labels=labels, num_items_in_batch=50).loss
        want_sum = hf(ids, labels=labels, num_items_in_batch=50).loss
    torch.testing.assert_close(got_sum, want_sum, atol=ATOL, rtol=0)
    manual = torch.nn.functional.cross_entropy(ours(ids).logits[:, :-1].reshape(-1, 128), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(got, manual, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_incremental_decoding_equals_full_forward(attn):
    ours, _ = make_pair(tiny_kwargs(), attn)
    ids = batch()
    with torch.no_grad():
        full = ours(ids).logits
        out = ours(ids[:, :5], use_cache=True)
        assert isinstance(out.past_key_values, DynamicCache)
        steps = [out.logits]
        for t in range(5, ids.shape[1]):
            out = ours(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    assert out.past_key_values.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


def test_incremental_decoding_with_left_padding():
    ours, _ = make_pair(tiny_kwargs())
    ids = batch()
    mask = padding(ids.shape[1], [12, 8, 6], "left")
    positions = left_pad_positions(mask)
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, position_ids=positions).logits
        out = ours(ids[:, :7], attention_mask=mask[:, :7], position_ids=positions[:, :7], use_cache=True)
        steps = [out.logits]
        for t in range(7, ids.shape[1]):
            out = ours(
                ids[:, t : t + 1],
                attention_mask=mask[:, : t + 1],
                position_ids=positions[:, t : t + 1],
                past_key_values=out.past_key_values,
            )
            steps.append(out.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=ATOL, rtol=0)


def test_cached_decoding_matches_hf_generate_step():
    ours, hf = make_pair(tiny_kwargs())
    ids = batch()
    with torch.no_grad():
        ours_out = ours(ids[:, :8], use_cache=True)
        hf_out = hf(ids[:, :8], use_cache=True)
        got = ours(ids[:, 8:9], past_key_values=ours_out.past_key_values).logits
        want = hf(ids[:, 8:9], past_key_values=hf_out.past_key_values).logits
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- sequence classification
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(
    ("num_labels", "problem"),
    [(3, "single_label_classification"), (1, "regression"), (3, "multi_label_classification")],
)
def test_sequence_classification_matches_hf(side, num_labels, problem):
    pad = 0
    ours, hf = make_pair(tiny_kwargs(pad_token_id=pad, num_labels=num_labels), head="LlamaForSequenceClassification")
    ids = batch()
    mask = padding(ids.shape[1], [12, 7, 3], side)
    ids = ids.masked_fill(mask == 0, pad)
    position_ids = left_pad_positions(mask) if side == "left" else None
    gen = torch.Generator().manual_seed(3)
    if problem == "single_label_classification":
        labels = torch.randint(0, num_labels, (3,), generator=gen)
    elif problem == "regression":
        labels = torch.randn(3, generator=gen)
    else:
        labels = torch.randint(0, 2, (3, num_labels), generator=gen).float()
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, position_ids=position_ids, labels=labels)
        want = hf(ids, attention_mask=mask, position_ids=position_ids, labels=labels)
    assert got.logits.shape == (3, num_labels)
    torch.testing.assert_close(got.logits, want.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, want.loss, atol=ATOL, rtol=0)
    assert ours.config.problem_type is None  # inferred per call, the config is left alone


def test_sequence_classification_needs_a_pad_token_for_batches():
    model = LlamaForSequenceClassification(LlamaConfig(**TINY, num_labels=2))
    with pytest.raises(ValueError, match="pad_token_id"):
        model(batch(b=2))
    assert model(batch(b=1)).logits.shape == (1, 2)


# --------------------------------------------------------------------------- training
def test_backward_gives_finite_grads_on_every_parameter():
    ours, _ = make_pair(tiny_kwargs(tie_word_embeddings=True))
    ours.train()
    ids = batch()
    ours(ids, labels=ids).loss.backward()
    for name, param in ours.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_grads():
    ours, _ = make_pair(tiny_kwargs())
    ours.train()
    ids = batch()

    def grads() -> dict[str, torch.Tensor]:
        ours.zero_grad()
        ours(ids, labels=ids, use_cache=False).loss.backward()
        return {name: p.grad.clone() for name, p in ours.named_parameters()}

    plain = grads()
    ours.gradient_checkpointing_enable()
    assert ours.model.gradient_checkpointing
    checkpointed = grads()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=0, msg=name)
    ours.gradient_checkpointing_disable()
    assert not ours.model.gradient_checkpointing


def test_bare_model_returns_hidden_states():
    model = LlamaModel(LlamaConfig(**TINY)).eval()
    out = model(batch(), use_cache=False)
    assert out.last_hidden_state.shape == (3, 12, 64) and out.past_key_values is None


# --------------------------------------------------------------------------- checkpoints through files
@pytest.mark.parametrize("tie", [False, True])
def test_hf_checkpoint_loads_into_ours(tmp_path, tie):
    kwargs = tiny_kwargs(tie_word_embeddings=tie, rope_scaling=LLAMA3, rope_theta=500000.0)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config(kwargs)).eval()
    randomize_(hf)
    hf.save_pretrained(tmp_path)
    ours = LlamaForCausalLM.from_pretrained(tmp_path)
    assert ours.config.tie_word_embeddings == tie and ours.config.rope_scaling == LLAMA3
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("tie", [False, True])
def test_our_checkpoint_loads_into_hf(tmp_path, tie):
    kwargs = tiny_kwargs(tie_word_embeddings=tie, rope_scaling=LLAMA3, rope_theta=500000.0)
    ours, _ = make_pair(kwargs)
    ours.save_pretrained(tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.config.rope_parameters == ours.config.rope_parameters
    assert hf.config.tie_word_embeddings == tie
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- question answering
@pytest.mark.parametrize("side", ["left", "right"])
def test_question_answering_head_matches_hf(side, tmp_path):
    """Start/end logits (padded batch) and the loss from HF's checkpoint (decoder under ``transformer``)."""
    from modelcore import AutoModelForQuestionAnswering
    from modelcore.models.llama.modeling_llama import LlamaForQuestionAnswering

    torch.manual_seed(0)
    hf = transformers.LlamaForQuestionAnswering(hf_config(tiny_kwargs())).eval()
    randomize_(hf)
    hf.save_pretrained(tmp_path / "hf")
    ours, info = LlamaForQuestionAnswering.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert set(ours.state_dict()) == set(hf.state_dict())
    ours.eval()
    ids, mask = batch(), padding(12, [12, 7, 4], side)
    start, end = torch.tensor([2, 5, 40]), torch.tensor([4, 6, 40])  # row 2's span lies outside the input
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        out = ours(input_ids=ids, attention_mask=mask)
        # the loss softmaxes over every position, padding included (whose logits differ): compare it unpadded
        ref_loss = hf(input_ids=ids, start_positions=start, end_positions=end).loss
        out_loss = ours(input_ids=ids, start_positions=start, end_positions=end).loss
    real = mask.bool()  # padded positions are not compared (their values are arbitrary in both)
    assert (out.start_logits[real] - ref.start_logits[real]).abs().max() <= ATOL
    assert (out.end_logits[real] - ref.end_logits[real]).abs().max() <= ATOL
    assert abs(out_loss.item() - ref_loss.item()) <= ATOL
    assert type(AutoModelForQuestionAnswering.from_pretrained(tmp_path / "hf")) is LlamaForQuestionAnswering
