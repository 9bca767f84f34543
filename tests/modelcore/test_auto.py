"""Auto classes and the package's public surface."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import ClassVar

import pytest
import torch

import modelcore
from modelcore import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
)
from modelcore.configuration_utils import ConfigError

TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


@pytest.mark.parametrize(
    ("auto", "config", "expected"),
    [
        (AutoModel, BertConfig(**TINY_BERT), "BertModel"),
        (AutoModelForSequenceClassification, BertConfig(**TINY_BERT), "BertForSequenceClassification"),
        (AutoModelForMaskedLM, BertConfig(**TINY_BERT), "BertForMaskedLM"),
        (AutoModelForTokenClassification, BertConfig(**TINY_BERT), "BertForTokenClassification"),
        (AutoModel, LlamaConfig(**TINY_LLAMA), "LlamaModel"),
        (AutoModelForCausalLM, LlamaConfig(**TINY_LLAMA), "LlamaForCausalLM"),
        (AutoModelForSequenceClassification, LlamaConfig(**TINY_LLAMA), "LlamaForSequenceClassification"),
    ],
)
def test_auto_picks_class_from_model_type_and_round_trips(tmp_path, auto, config, expected):
    model = auto.from_config(config)
    assert type(model).__name__ == expected
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is type(config)
    loaded = auto.from_pretrained(tmp_path)
    assert type(loaded).__name__ == expected
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_task_without_a_model_for_the_family_is_a_clear_error(tmp_path):
    LlamaConfig(**TINY_LLAMA).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"AutoModelForMaskedLM has no model for model_type 'llama'.*bert"):
        AutoModelForMaskedLM.from_config(LlamaConfig(**TINY_LLAMA))


def test_config_without_model_type_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"config\.json.*model_type"):
        AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"config\.json.*model_type"):
        AutoModel.from_pretrained(tmp_path)


def test_auto_classes_are_not_instantiable():
    with pytest.raises(TypeError):
        AutoModel()
    with pytest.raises(TypeError):
        AutoConfig()


def test_register_a_new_family():
    @dataclasses.dataclass(kw_only=True, eq=False)
    class TinyConfig(PretrainedConfig):
        model_type: ClassVar[str] = "tiny-test-family"
        width: int = 4

    class TinyModel(PreTrainedModel):
        config_class = TinyConfig

        def __init__(self, config):
            super().__init__(config)
            self.proj = torch.nn.Linear(config.width, config.width)
            self.post_init()

    AutoConfig.register("tiny-test-family", TinyConfig)
    AutoModel.register(TinyConfig, TinyModel)
    assert isinstance(AutoConfig.for_model("tiny-test-family", width=3), TinyConfig)
    assert isinstance(AutoModel.from_config(TinyConfig()), TinyModel)
    with pytest.raises(ValueError, match="already registered"):
        AutoConfig.register("tiny-test-family", TinyConfig)
    with pytest.raises(ValueError, match="already has a model"):
        AutoModel.register(TinyConfig, TinyModel)
    AutoModel.register(TinyConfig, TinyModel, exist_ok=True)
    with pytest.raises(ValueError, match="model_type"):
        AutoConfig.register("other-name", TinyConfig)


def test_auto_tokenizer_loads_the_real_asset(minilm_dir):
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    assert tokenizer("hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_asset_name_is_a_source(minilm_dir):
    model = AutoModel.from_pretrained("minilm-l6")
    assert type(model).__name__ == "BertModel" and model.num_parameters() == 22_713_216


def test_every_public_name_resolves():
    for name in modelcore.__all__:
        assert getattr(modelcore, name) is not None, name
    with pytest.raises(AttributeError, match="NoSuchThing"):
        modelcore.NoSuchThing  # noqa: B018


def test_import_modelcore_is_lazy():
    code = "import sys, modelcore; print('torch' in sys.modules, 'modelcore.modeling_utils' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["False", "False"]
    code = "import sys; from modelcore import LlamaConfig; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
        == "False"
    )
