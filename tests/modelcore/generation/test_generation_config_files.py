"""generation_config.json travels with the model: saved in the same transaction, read back on load."""

from __future__ import annotations

import json

import torch

from modelcore import LlamaForCausalLM
from modelcore.generation.configuration import GENERATION_CONFIG_NAME, GenerationConfig
from tests.tiny_models import tiny_llama


def test_a_models_generation_config_is_saved_and_decodes_after_loading(tmp_path):
    model = tiny_llama(0)
    model.generation_config = GenerationConfig(max_new_tokens=3, eos_token_id=[5, 7], repetition_penalty=1.3)
    model.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / GENERATION_CONFIG_NAME).read_text())
    assert stored == {"eos_token_id": [5, 7], "max_new_tokens": 3, "repetition_penalty": 1.3}

    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.generation_config.to_diff_dict() == model.generation_config.to_diff_dict()
    prompt = torch.tensor([[1, 2, 3, 4]])
    out = loaded.generate(prompt)  # the stored settings apply without being passed again
    assert out.shape[1] <= 4 + 3
    assert torch.equal(out, model.generate(prompt, max_new_tokens=3, eos_token_id=[5, 7], repetition_penalty=1.3))

    import transformers

    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert (theirs.max_new_tokens, theirs.eos_token_id, theirs.repetition_penalty) == (3, [5, 7], 1.3)


def test_a_model_without_one_writes_none_and_loads_none(tmp_path):
    model = tiny_llama(0)
    model.save_pretrained(tmp_path)
    assert not (tmp_path / GENERATION_CONFIG_NAME).exists()
    assert getattr(LlamaForCausalLM.from_pretrained(tmp_path), "generation_config", None) is None


def test_another_librarys_cache_kind_in_a_file_loads_with_the_dynamic_cache(tmp_path, caplog):
    import pytest

    from modelcore.errors import ConfigError

    (tmp_path / GENERATION_CONFIG_NAME).write_text('{"cache_implementation": "hybrid", "max_new_tokens": 4}')
    with caplog.at_level("WARNING"):
        config = GenerationConfig.from_pretrained(tmp_path)
    assert (config.cache_implementation, config.max_new_tokens) == (None, 4)
    assert "'hybrid' is not one of ours" in caplog.text
    with pytest.raises(ConfigError, match="cache_implementation"):  # in code, a typo stays an error
        GenerationConfig(cache_implementation="statik")
