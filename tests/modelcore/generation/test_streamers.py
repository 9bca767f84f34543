"""Streamers: the same text chunks as transformers' streamers for the same tokens, and text before the end."""

from __future__ import annotations

import queue
import threading
import time

import pytest
import torch

from modelcore import AutoTokenizer, TextIteratorStreamer, TextStreamer
from modelcore.generation.stopping_criteria import StoppingCriteria
from tests.tiny_models import tiny_llama

transformers = pytest.importorskip("transformers")

# words, punctuation, accents, CJK (one ideograph per token or several bytes per token), Hangul, an emoji
# split over byte tokens, digits, and line breaks: every branch of the emit rules
TEXT = "Hello, world! Café au lait costs 3.50€.\n日本語の文章です。 한국어 문장\nEmoji 🤗 ok: x=(1+2)*3;\n\nEnd"


@pytest.fixture(scope="module")
def minilm_pair(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir), transformers.AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def smollm_pair():
    """The SmolLM2 byte-level BPE tokenizer (49,152 tokens) read from the GGUF asset by both libraries."""
    from modelcore import assets

    path = assets.fetch("smollm2-135m-gguf")
    gguf_file = path if path.is_file() else next(path.glob("*.gguf"))
    ours = AutoTokenizer.from_pretrained(gguf_file)
    theirs = transformers.AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    return ours, theirs


def stream_chunks(streamer_cls, tokenizer, prompt: list[int], new_tokens: list[int], **kwargs) -> list[str]:
    """Drive a streamer with generate's protocol: the prompt, each new token alone, then end()."""
    streamer = streamer_cls(tokenizer, **kwargs)
    streamer.put(torch.tensor([prompt]))
    for token in new_tokens:
        streamer.put(torch.tensor([token]))
    streamer.end()
    return list(streamer)


@pytest.mark.parametrize("pair_name", ["minilm_pair", "smollm_pair"])
@pytest.mark.parametrize("decode_kwargs", [{}, {"skip_prompt": True, "skip_special_tokens": True}])
def test_iterator_streamer_chunks_match_transformers(request, pair_name, decode_kwargs):
    ours, theirs = request.getfixturevalue(pair_name)
    ids = ours(TEXT).input_ids
    assert ids == theirs(TEXT).input_ids
    prompt, new_tokens = ids[:3], ids[3:]
    got = stream_chunks(TextIteratorStreamer, ours, prompt, new_tokens, **decode_kwargs)
    expected = stream_chunks(transformers.TextIteratorStreamer, theirs, prompt, new_tokens, **decode_kwargs)
    assert got == expected
    assert len([chunk for chunk in got if chunk]) > 10  # it streamed, not one lump at the end
    full = ours.decode(ids if not decode_kwargs else new_tokens, skip_special_tokens=bool(decode_kwargs))
    assert "".join(got) == full  # line breaks re-decode from one token of context; the pieces still add up


def test_text_streamer_prints_what_transformers_prints(minilm_pair, smollm_pair, capsys):
    for ours, theirs in (minilm_pair, smollm_pair):
        ids = torch.tensor([ours(TEXT).input_ids])
        printed = []
        for tokenizer, streamer_cls in ((ours, TextStreamer), (theirs, transformers.TextStreamer)):
            streamer = streamer_cls(tokenizer, skip_special_tokens=True)
            streamer.put(ids[:, :2])
            for token in ids[0, 2:]:
                streamer.put(token[None])
            streamer.end()
            printed.append(capsys.readouterr().out)
        assert printed[0] == printed[1]
        assert printed[0].endswith("\n") and "日" in printed[0] and "lait" in printed[0]


def test_cjk_ideographs_are_emitted_one_by_one(smollm_pair):
    ours, _ = smollm_pair
    ids = ours("天气很好").input_ids
    chunks = stream_chunks(TextIteratorStreamer, ours, ids[:0], ids)
    assert [chunk for chunk in chunks if chunk] == ["天", "气", "很", "好"]


def test_batch_of_two_is_refused(minilm_pair):
    with pytest.raises(ValueError, match=r"batch size 1 only.*\(2, 3\)"):
        TextStreamer(minilm_pair[0]).put(torch.zeros(2, 3, dtype=torch.long))


def test_text_arrives_before_generation_ends(minilm_pair):
    """A producer puts one token every 20 ms; the consumer sees text long before the producer's end()."""
    tokenizer, _ = minilm_pair
    ids = tokenizer("the quick brown fox jumps over the lazy dog again and again", add_special_tokens=False).input_ids
    streamer = TextIteratorStreamer(tokenizer, timeout=10)
    finished_at: list[float] = []

    def produce() -> None:
        streamer.put(torch.tensor([ids[:1]]))
        for token in ids[1:]:
            time.sleep(0.02)
            streamer.put(torch.tensor([token]))
        finished_at.append(time.monotonic())
        streamer.end()

    producer = threading.Thread(target=produce)
    start = time.monotonic()
    producer.start()
    arrivals = [(time.monotonic(), text) for text in streamer if text]
    producer.join(timeout=10)
    assert "".join(text for _, text in arrivals) == tokenizer.decode(ids)
    assert arrivals[0][0] < finished_at[0] - 0.1  # the first word came at least 5 tokens before the end
    assert sum(arrived < finished_at[0] for arrived, _ in arrivals) >= len(arrivals) - 1
    assert finished_at[0] - start >= 0.02 * (len(ids) - 1)


def test_timeout_raises_queue_empty(minilm_pair):
    streamer = TextIteratorStreamer(minilm_pair[0], timeout=0.05)
    streamer.put(torch.tensor([minilm_pair[0]("hello", add_special_tokens=False).input_ids]))
    assert next(streamer) == "hello"  # a prompt, then nothing: generate died
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        next(streamer)
    assert time.monotonic() - started < 2


class SlowStep(StoppingCriteria):
    """Never stops generation; sleeps 20 ms per step so that a stream has time to be seen mid-way."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs) -> torch.BoolTensor:
        time.sleep(0.02)
        return torch.zeros(len(input_ids), dtype=torch.bool)


def test_generate_streams_text_before_it_returns(minilm_pair):
    """model.generate(streamer=...) in a thread: the text is generate's, and most of it arrives before it returns."""
    tokenizer, _ = minilm_pair
    model = tiny_llama(seed=1, vocab_size=tokenizer.vocab_size).eval()
    prompt = tokenizer("streaming works", return_tensors="pt").input_ids
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=30)
    outputs, returned_at = [], []

    def produce() -> None:
        outputs.append(model.generate(prompt, max_new_tokens=16, streamer=streamer, stopping_criteria=[SlowStep()]))
        returned_at.append(time.monotonic())

    producer = threading.Thread(target=produce)
    producer.start()
    arrivals = [(time.monotonic(), text) for text in streamer if text]
    producer.join(timeout=30)
    new_tokens = outputs[0][0, prompt.shape[1] :]
    assert len(new_tokens) == 16
    assert "".join(text for _, text in arrivals) == tokenizer.decode(new_tokens)
    assert arrivals[0][0] < returned_at[0] - 0.1  # the first word came while >= 5 steps were still to run
    assert len(arrivals) >= 8  # word by word, not one lump
