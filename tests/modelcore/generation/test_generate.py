"""generate: greedy decoding against transformers' generate (same weights), EOS handling, sampling and warpers."""

from __future__ import annotations

import pytest
import torch

from modelcore.generation import GenerationConfig
from tests.modelcore.models.test_llama import TINY, batch, make_pair, padding

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair():
    return make_pair(dict(TINY))


def left_padded_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    ids = batch(seed=3, b=3, t=7)
    mask = padding(7, [7, 5, 2], "left")
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
def test_greedy_matches_transformers(pair, padded):
    ours, hf = pair
    ids, mask = left_padded_prompts()
    if not padded:
        mask = torch.ones_like(mask)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=10)
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(got, expected)


def test_rows_stop_at_eos_and_are_padded_like_transformers(pair):
    ours, hf = pair
    ids, mask = left_padded_prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=6)
    eos = int(free[0, 7 + 2])  # the third token row 0 produces: that row stops there
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=1)
    expected = hf.generate(
        ids, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=1
    )
    assert torch.equal(got, expected)
    assert got[0, 7 + 2] == eos and (got[0, 7 + 3 :] == 1).all()


def test_generation_stops_when_every_row_has_finished(pair):
    ours, _ = pair
    ids, mask = left_padded_prompts()
    first = ours.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=1)
    out = ours.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=10, eos_token_id=int(first[0, -1]))
    assert out.shape == (1, 8)


def test_sampling_with_top_k_one_is_greedy_and_seeded_sampling_repeats(pair):
    ours, _ = pair
    ids, mask = left_padded_prompts()
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=5)
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True, top_k=1), greedy)
    torch.manual_seed(0)
    first = ours.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True, temperature=1.5)
    torch.manual_seed(0)
    again = ours.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True, temperature=1.5)
    assert torch.equal(first, again)


def test_generation_config_validates_and_rejects_unknown_options():
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=0)
    with pytest.raises(TypeError, match="max_new_token"):
        GenerationConfig().update(max_new_token=3)
    assert GenerationConfig.from_dict({"max_new_tokens": 4, "num_beams": 1}).max_new_tokens == 4


def test_generation_config_reads_generation_config_json(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2, 3], "do_sample": true, "top_p": 0.9}')
    config = GenerationConfig.from_pretrained(tmp_path)
    assert config.eos_token_ids == [2, 3] and config.do_sample and config.top_p == 0.9


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"temperature": NaN}', "temperature must be a finite number"),
        (b'{"top_p": Infinity}', "top_p must be a finite number"),
        (b'{"temperature": "hot"}', "temperature"),
        (b'{"max_new_tokens": 5, "top_k": -1}', "top_k must be >= 0"),
        (b'{"temperature": 0.7, "note": "caf\xe9"}', "UTF-8"),
        (b'{"temperature": 0.7', "JSON"),
        (b"[1, 2]", "object"),
    ],
)
def test_a_bad_generation_config_file_is_refused_naming_the_file(tmp_path, raw, expected):
    from modelcore.errors import ConfigError
    from modelcore.generation.configuration import GENERATION_CONFIG_NAME, GenerationConfig

    path = tmp_path / GENERATION_CONFIG_NAME
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as caught:
        GenerationConfig.from_pretrained(tmp_path)
    assert str(path) in str(caught.value) and expected in str(caught.value)
