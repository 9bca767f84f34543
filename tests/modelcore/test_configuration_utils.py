"""PretrainedConfig behaviour, exercised through the real families' configs."""

from __future__ import annotations

import json

import pytest

from modelcore import AutoConfig, BertConfig, LlamaConfig
from modelcore.configuration_utils import ConfigError


def test_unknown_keyword_in_code_is_an_error():
    with pytest.raises(TypeError, match="hidden_sise"):
        LlamaConfig(hidden_sise=64)


def test_unknown_keys_from_config_json_are_kept_and_round_trip(tmp_path):
    data = BertConfig(hidden_size=32, num_attention_heads=4).to_dict()
    data.update({"_name_or_path": "some/where", "gradient_checkpointing": False, "custom_thing": [1, 2]})
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = BertConfig.from_pretrained(tmp_path)
    assert config.custom_thing == [1, 2]
    config.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["custom_thing"] == [1, 2] and saved["_name_or_path"] == "some/where"
    assert BertConfig.from_pretrained(tmp_path / "out") == config


def test_override_that_is_not_a_field_is_an_error(tmp_path):
    BertConfig().save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="hiden_size"):
        BertConfig.from_pretrained(tmp_path, hiden_size=3)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: BertConfig(hidden_size=100, num_attention_heads=3), "hidden_size"),
        (lambda: LlamaConfig(hidden_size=100, num_attention_heads=3), "hidden_size"),
        (lambda: LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads"),
        (lambda: LlamaConfig(hidden_size="64"), "hidden_size"),
        (lambda: BertConfig(num_hidden_layers=0), "num_hidden_layers"),
        (lambda: BertConfig(tie_word_embeddings="yes"), "tie_word_embeddings"),
        (lambda: BertConfig(attn_implementation="flash"), "attn_implementation"),
    ],
)
def test_validation_names_the_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_config_json_with_indivisible_heads_names_the_field_and_file(tmp_path):
    data = BertConfig().to_dict() | {"hidden_size": 770}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="hidden_size"):
        AutoConfig.from_pretrained(tmp_path)


def test_labels_follow_num_labels_and_id2label():
    config = BertConfig(num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    config.num_labels = 5
    assert len(config.id2label) == 5 and len(config.label2id) == 5
    named = BertConfig.from_dict({"id2label": {"0": "rotten", "1": "fresh"}})
    assert named.id2label == {0: "rotten", 1: "fresh"} and named.num_labels == 2
    assert named.label2id == {"rotten": 0, "fresh": 1}
    with pytest.raises(ConfigError, match="num_labels"):
        BertConfig(num_labels=3, id2label={0: "a", 1: "b"})


def test_num_labels_override_replaces_stored_labels(tmp_path):
    BertConfig(id2label={0: "neg", 1: "pos"}).save_pretrained(tmp_path)
    config = BertConfig.from_pretrained(tmp_path, num_labels=4)
    assert config.num_labels == 4 and config.id2label[3] == "LABEL_3"


def test_legacy_torch_dtype_key_is_read_as_dtype():
    assert BertConfig.from_dict({"torch_dtype": "bfloat16"}).dtype == "bfloat16"


def test_not_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        BertConfig.from_pretrained(tmp_path)


def test_wrong_family_is_refused(tmp_path):
    LlamaConfig(hidden_size=64, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="llama"):
        BertConfig.from_pretrained(tmp_path)


def test_to_json_file_is_atomic_and_readable(tmp_path):
    path = tmp_path / "c.json"
    LlamaConfig(hidden_size=64, num_attention_heads=4).to_json_file(path)
    assert json.loads(path.read_text())["model_type"] == "llama"
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temp file left behind


# ---------------------------------------------------------------- non-finite floats and absurd sizes
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda v: BertConfig(layer_norm_eps=v), "layer_norm_eps"),
        (lambda v: BertConfig(hidden_dropout_prob=v), "hidden_dropout_prob"),
        (lambda v: BertConfig(attention_probs_dropout_prob=v), "attention_probs_dropout_prob"),
        (lambda v: BertConfig(classifier_dropout=v), "classifier_dropout"),
        (lambda v: BertConfig(initializer_range=v), "initializer_range"),
        (lambda v: LlamaConfig(rms_norm_eps=v), "rms_norm_eps"),
        (lambda v: LlamaConfig(rope_theta=v), "rope_theta"),
        (lambda v: LlamaConfig(attention_dropout=v), "attention_dropout"),
        (lambda v: LlamaConfig(rope_scaling={"rope_type": "linear", "factor": v}), "factor"),
        (
            lambda v: LlamaConfig(
                rope_scaling={
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": v,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                }
            ),
            "low_freq_factor",
        ),
    ],
)
def test_non_finite_floats_are_refused_naming_the_field(make, field, bad):
    # NaN passed the "> 0" and "in [0, 1)" checks before (every comparison with NaN is False), and inf
    # passed "> 0": layer_norm_eps=NaN gave NaN outputs.
    with pytest.raises(ConfigError, match=f"{field}.*finite"):
        make(bad)


def test_nan_literal_in_config_json_names_file_and_field(tmp_path):
    text = json.dumps(BertConfig(hidden_size=32, num_attention_heads=4).to_dict()).replace(
        '"layer_norm_eps": 1e-12', '"layer_norm_eps": NaN'
    )
    assert "NaN" in text
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError) as info:
        AutoConfig.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value) and "layer_norm_eps" in str(info.value)


@pytest.mark.parametrize(
    ("make", "fields"),
    [
        (lambda: BertConfig(vocab_size=10**12), ["vocab_size"]),
        (lambda: LlamaConfig(num_hidden_layers=10**6), ["num_hidden_layers"]),
        (lambda: LlamaConfig(hidden_size=10**9, num_attention_heads=10**3), ["hidden_size"]),
        (lambda: LlamaConfig(intermediate_size=10**8), ["intermediate_size"]),
        (lambda: BertConfig(max_position_embeddings=10**9), ["max_position_embeddings"]),
        (lambda: BertConfig(num_labels=10**9), ["num_labels"]),
        # every field within its cap, the product not: the estimate names the terms
        (
            lambda: LlamaConfig(vocab_size=2**31 - 1, hidden_size=2**20, num_attention_heads=2**10),
            ["parameters", "vocab_size x hidden_size"],
        ),
        (
            lambda: LlamaConfig(num_hidden_layers=10_000, hidden_size=2**16, intermediate_size=2**20),
            ["parameters", "num_hidden_layers"],
        ),
    ],
)
def test_absurd_sizes_are_refused_before_anything_is_built(make, fields):
    with pytest.raises(ConfigError) as info:
        make()
    for field in fields:
        assert field in str(info.value)


def test_size_estimate_counts_real_models_and_the_cap_admits_them():
    from modelcore import BertModel
    from modelcore.configuration_utils import MAX_PARAMETERS

    config = BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=96, num_hidden_layers=2)
    built = BertModel(config).num_parameters()
    assert abs(sum(config.parameter_estimate().values()) - built) / built < 0.05
    llama_405b = LlamaConfig(  # Llama 3.1 405B's published sizes
        vocab_size=128256,
        hidden_size=16384,
        intermediate_size=53248,
        num_hidden_layers=126,
        num_attention_heads=128,
        num_key_value_heads=8,
    )
    assert 4.0e11 < sum(llama_405b.parameter_estimate().values()) < 4.1e11 < MAX_PARAMETERS


def test_a_config_changed_after_validation_is_refused_when_a_model_is_built():
    from modelcore import LlamaModel

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
    )
    config.vocab_size = 10**13
    with pytest.raises(ConfigError, match="vocab_size"):
        LlamaModel(config)


# ---------------------------------------------------------------- hostile config.json content
def test_invalid_utf8_in_config_json_names_the_file_and_byte(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model_type": "bert", "note": "caf\xe9"}')
    with pytest.raises(ConfigError) as info:
        AutoConfig.from_pretrained(tmp_path)
    assert str(path) in str(info.value) and "UTF-8" in str(info.value) and "byte 35" in str(info.value)


def test_json_syntax_error_gives_line_and_column(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "bert",\n  "hidden_size": 32,,\n}')
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON at line 3, column 21"):
        BertConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("id2label", {"zero": "a"}, "id2label"),
        ("id2label", ["a", "b"], "id2label"),
        ("label2id", {"a": "x", "b": "y"}, "label2id['a']"),
        ("id2label", {"0": {"nested": 1}}, "id2label['0']"),
        ("num_labels", "3", "num_labels"),
        ("model_type", ["bert"], "model_type"),
        ("rope_scaling", {"rope_type": "linear", "factor": "8"}, "factor"),
        ("rope_scaling", {"rope_type": "yarn", "factor": 2.0, "beta_fast": -1}, "beta_fast"),
        ("rope_scaling", {"rope_type": "linear", "factor": 10**400}, "factor"),
        ("rms_norm_eps", 10**400, "rms_norm_eps"),
        ("head_dim", 7, "head_dim"),
        ("pad_token_id", 10**6, "pad_token_id"),
    ],
)
def test_wrong_typed_keys_name_file_and_key(tmp_path, key, value, named):
    data = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "vocab_size": 100, key: value}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        AutoConfig.from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "config.json")) and named in message


def test_huge_int_for_a_float_field_becomes_a_float():
    # JSON may write 1e30 as an int; torch would overflow on it as an int64 (rms_norm_eps is added to a tensor)
    config = LlamaConfig.from_dict({"rms_norm_eps": 10**30, "rope_theta": 500000})
    assert config.rms_norm_eps == 1e30 and isinstance(config.rms_norm_eps, float)
    assert isinstance(config.rope_theta, float)


def test_keys_named_like_methods_are_kept_without_shadowing_them(tmp_path):
    data = BertConfig(hidden_size=32, num_attention_heads=4).to_dict()
    data |= {"to_dict": 1, "validate": "x", "__class__": 3, "_extra": 4, "custom": 5}
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is BertConfig and config.custom == 5
    saved = config.to_dict()  # the method still works, and the keys round-trip
    assert saved["to_dict"] == 1 and saved["__class__"] == 3 and saved["_extra"] == 4
