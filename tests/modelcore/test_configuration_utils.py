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
