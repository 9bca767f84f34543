"""generate against transformers' generate on the same tiny Llama: sampling, beam search, lengths, stopping, streaming."""

from __future__ import annotations

import pytest
import tokenizers
import torch

from modelcore.errors import ConfigError
from modelcore.generation import GenerationConfig
from modelcore.generation.stopping_criteria import StoppingCriteria
from modelcore.tokenization import Tokenizer
from tests.modelcore.models.test_llama import TINY, batch, make_pair, padding

transformers = pytest.importorskip("transformers")

T = 7


@pytest.fixture(scope="module")
def pair():
    return make_pair(dict(TINY))


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts (7, 5 and 2 real tokens)."""
    ids = batch(seed=3, b=3, t=T)
    mask = padding(T, [7, 5, 2], "left")
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize(
    "options",
    [
        dict(temperature=1.3, top_k=0),
        dict(top_k=10, top_p=0.9),
        dict(temperature=0.8, min_p=0.1, top_k=0),
        dict(typical_p=0.9, repetition_penalty=1.5),
        dict(num_return_sequences=2, no_repeat_ngram_size=2),
    ],
    ids=["temperature", "top_k+top_p", "min_p", "typical+repetition", "num_return_sequences"],
)
def test_sampled_tokens_equal_transformers_for_the_same_seed(pair, options):
    ours, hf = pair
    ids, mask = prompts()
    torch.manual_seed(11)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=True, pad_token_id=0, **options)
    torch.manual_seed(11)
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=True, pad_token_id=0, **options)
    assert got.shape == (3 * options.get("num_return_sequences", 1), T + 12)
    assert torch.equal(got, expected)
    torch.manual_seed(12)
    other = ours.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=True, pad_token_id=0, **options)
    assert not torch.equal(other, got)  # the seed matters: the draw is random, not argmax in disguise


@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=3),
        dict(num_beams=4, num_return_sequences=3),
        dict(num_beams=4, num_return_sequences=2, length_penalty=0.5, early_stopping=True),
        dict(num_beams=3, num_return_sequences=3, length_penalty=2.0, early_stopping="never"),
        dict(num_beams=3, repetition_penalty=1.4, no_repeat_ngram_size=2),
    ],
    ids=["beams", "return3", "early_stopping", "never", "processors"],
)
@pytest.mark.parametrize("eos", ["none", "hit"])
def test_beam_search_equals_transformers_on_left_padded_batches(pair, options, eos):
    ours, hf = pair
    ids, mask = prompts()
    eos_ids = None
    if eos == "hit":  # EOS ids the beams actually produce, so hypotheses finish at different lengths
        free = ours.generate(ids, attention_mask=mask, max_new_tokens=10, num_beams=2, eos_token_id=None)
        eos_ids = [int(free[0, T + 1]), int(free[2, T])]
    common = dict(max_new_tokens=10, eos_token_id=eos_ids, pad_token_id=5, **options)
    got = ours.generate(ids, attention_mask=mask, **common)
    expected = hf.generate(ids, attention_mask=mask, do_sample=False, **common)
    assert got.shape[0] == 3 * options.get("num_return_sequences", 1)
    assert torch.equal(got, expected)
    if eos == "hit" and options.get("length_penalty", 1.0) <= 1.0:  # a penalty of 2 favours the long ones
        assert (got[:, T:] == 5).any() or got.shape[1] < T + 10  # some hypothesis ended early


def test_beam_search_with_one_beam_returning_all_is_not_greedy_and_seeded_beam_sampling_matches(pair):
    ours, hf = pair
    ids, mask = prompts()
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=8)
    beams = ours.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=4)
    assert beams.shape == greedy.shape and not torch.equal(beams, greedy)  # beam search finds other sequences
    torch.manual_seed(3)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=3, do_sample=True, top_k=20)
    torch.manual_seed(3)
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=3, do_sample=True, top_k=20)
    assert torch.equal(got, expected)


def test_max_length_counts_the_prompt_as_transformers(pair):
    ours, hf = pair
    ids, mask = prompts()
    got = ours.generate(ids, attention_mask=mask, max_length=T + 5)
    assert got.shape == (3, T + 5)
    assert torch.equal(got, hf.generate(ids, attention_mask=mask, max_length=T + 5, do_sample=False, pad_token_id=0))
    with pytest.raises(ConfigError, match="max_length=7 counts the prompt"):
        ours.generate(ids, attention_mask=mask, max_length=T)


def test_several_eos_ids_and_min_new_tokens_equal_transformers(pair):
    ours, hf = pair
    ids, mask = prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None)
    eos = [int(free[0, T + 1]), int(free[2, T + 3])]
    for extra in (dict(), dict(min_new_tokens=4)):
        common = dict(max_new_tokens=10, eos_token_id=eos, pad_token_id=1, **extra)
        got = ours.generate(ids, attention_mask=mask, **common)
        assert torch.equal(got, hf.generate(ids, attention_mask=mask, do_sample=False, **common))
    assert got[0, T + 1] != eos[0]  # min_new_tokens kept row 0 from ending at its second token


def test_user_stopping_criteria_and_logits_processors_are_applied(pair):
    ours, _ = pair
    ids, mask = prompts()

    class StopAfterThree(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= T + 3)

    def only_token_9(input_ids, scores):
        return torch.full_like(scores, float("-inf")).index_fill(1, torch.tensor([9]), 0.0)

    out = ours.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=10,
        stopping_criteria=[StopAfterThree()],
        logits_processor=[only_token_9],
    )
    assert out.shape == (3, T + 3) and (out[:, T:] == 9).all()


def test_max_time_stops_after_the_first_token(pair):
    ours, _ = pair
    ids, mask = prompts()
    assert ours.generate(ids, attention_mask=mask, max_new_tokens=30, max_time=1e-9).shape == (3, T + 1)


def char_tokenizer() -> Tokenizer:
    """A real ``tokenizers`` tokenizer: one character per id (ids 0..127 <-> 'A'..), decoded by concatenation."""
    vocab = {chr(0x41 + i): i for i in range(TINY["vocab_size"])}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="A"))
    backend.decoder = tokenizers.decoders.Fuse()
    return Tokenizer(backend)


def test_stop_strings_stop_where_the_text_first_completes_one(pair):
    ours, _ = pair
    tok = char_tokenizer()
    ids = batch(seed=5, b=1, t=T)
    free = ours.generate(ids, max_new_tokens=12, eos_token_id=None)
    new_text = tok.decode(free[0, T:])
    stop = new_text[4:6]  # completed by the sixth new token at the latest
    end = new_text.index(stop) + len(stop)  # first completion, which may come earlier
    out = ours.generate(ids, max_new_tokens=12, eos_token_id=None, stop_strings=[stop, "\u2603\u2603"], tokenizer=tok)
    assert torch.equal(out, free[:, : T + end])
    with pytest.raises(ConfigError, match="tokenizer=tok"):
        ours.generate(ids, max_new_tokens=3, stop_strings="x")


class Recorder:
    """A streamer that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def put(self, value: torch.Tensor) -> None:
        self.calls.append(value.clone())

    def end(self) -> None:
        self.calls.append("end")


def test_streamer_gets_the_prompt_then_each_token_then_end_as_from_transformers(pair):
    ours, hf = pair
    ids = batch(seed=5, b=1, t=T)
    mine, theirs = Recorder(), Recorder()
    out = ours.generate(ids, max_new_tokens=5, streamer=mine)
    hf.generate(ids, max_new_tokens=5, do_sample=False, streamer=theirs, pad_token_id=0)
    assert len(mine.calls) == len(theirs.calls) == 1 + 5 + 1 and mine.calls[-1] == theirs.calls[-1] == "end"
    for a, b in zip(mine.calls[:-1], theirs.calls[:-1], strict=True):
        assert a.shape == b.shape and torch.equal(a, b)
    assert torch.equal(torch.cat([mine.calls[0][0], *mine.calls[1:-1]]), out[0])
    with pytest.raises(ValueError, match="batch size 1"):
        ours.generate(batch(seed=5, b=2, t=T), max_new_tokens=2, streamer=Recorder())


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (dict(max_new_tokens=0), "max_new_tokens must be > 0"),
        (dict(top_p=1.5), "top_p must be in \\(0, 1\\]"),
        (dict(top_p=0.0), "top_p"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences \\(3\\) must be <= num_beams \\(2\\)"),
        (dict(early_stopping="sometimes"), "early_stopping"),
        (dict(min_p=2.0), "min_p"),
        (dict(bad_words_ids=[[]]), "bad_words_ids"),
    ],
)
def test_bad_options_are_refused_naming_the_field(pair, options, field):
    ours, _ = pair
    with pytest.raises(ConfigError, match=field):
        ours.generate(batch(b=1, t=T), **options)


def test_unknown_options_are_all_listed_and_bad_prompts_refused(pair):
    ours, _ = pair
    with pytest.raises(TypeError, match="num_beam, top_kk"):
        ours.generate(batch(b=1, t=T), num_beam=2, top_kk=3)
    with pytest.raises(ValueError, match="length >= 1"):
        ours.generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours.generate(batch(b=1, t=TINY["max_position_embeddings"]))


def test_generation_config_json_round_trips_and_transformers_reads_it(tmp_path):
    config = GenerationConfig(
        max_length=40, do_sample=True, top_p=0.8, num_beams=3, eos_token_id=[2, 7], stop_strings=["\n\n"]
    )
    path = config.save_pretrained(tmp_path)
    assert GenerationConfig.from_pretrained(tmp_path) == config
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert (theirs.max_length, theirs.top_p, theirs.num_beams, theirs.eos_token_id) == (40, 0.8, 3, [2, 7])
    assert "max_new_tokens" not in path.read_text()  # only what differs from the defaults is written
