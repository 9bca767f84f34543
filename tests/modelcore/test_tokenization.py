"""Tokenizer: parity with Hugging Face transformers on the real MiniLM-L6 tokenizer, plus tiny trained ones."""

from __future__ import annotations

import json
import shutil

import jinja2
import pytest
import torch

from modelcore.auto.tokenization_auto import TOKENIZER_REGISTRY, AutoTokenizer
from modelcore.tokenization import BatchEncoding, Tokenizer

transformers = pytest.importorskip("transformers")

TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A lazy dog sleeps in the warm sun all day.",
    "Quick thinking saves the day, said the brown fox.",
    "Dogs and foxes are not the best of friends.",
    "The sun sets over the quiet hills and the fox runs home.",
] * 20


@pytest.fixture(scope="module")
def sentences(rotten_tomatoes):
    """1,000 real review snippets, fresh and rotten alike (every 12th row of the corpus)."""
    texts = [row["text"] for row in rotten_tomatoes[::12]][:1000]
    assert len(texts) == 1000
    return texts


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def hf_tok(minilm_dir):
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture
def tiny_bpe():
    return Tokenizer.train(TINY_CORPUS, model="bpe", vocab_size=300)


def _same_ids(ours: BatchEncoding, theirs) -> None:
    """Every key HF returns is ours too, with equal values (lists or tensors)."""
    assert list(ours) == list(theirs)
    for key in theirs:
        if isinstance(theirs[key], torch.Tensor):
            assert torch.equal(ours[key], theirs[key]), key
        else:
            assert ours[key] == theirs[key], key


# ---------------------------------------------------------------------- parity with transformers (real MiniLM)


def test_per_sentence_ids_match_transformers(tok, hf_tok, sentences):
    for text in sentences:
        _same_ids(tok(text), hf_tok(text))
    assert list(tok(sentences[0])) == ["input_ids", "token_type_ids", "attention_mask"]
    assert tok.encode(sentences[1]) == hf_tok.encode(sentences[1])
    assert tok.tokenize(sentences[2]) == hf_tok.tokenize(sentences[2])


def test_padded_truncated_batch_matches_transformers(tok, hf_tok, sentences):
    long_texts = [" ".join(sentences[i : i + 6]) for i in range(0, 60, 6)]  # > 64 tokens: truncation bites
    batch = sentences + long_texts
    ours = tok(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
    theirs = hf_tok(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
    _same_ids(ours, theirs)
    assert ours.input_ids.shape == (len(batch), 64)
    assert ours.input_ids.dtype == torch.long
    assert (ours.attention_mask.sum(1) == 64).sum() >= len(long_texts)  # the long ones filled the window
    assert ours.input_ids[0, -1].item() == tok.pad_token_id == 0  # short ones padded on the right

    as_lists = tok(batch[:50], padding="max_length", max_length=48, truncation=True)
    _same_ids(as_lists, hf_tok(batch[:50], padding="max_length", max_length=48, truncation=True))
    multiple = tok(batch[:50], padding=True, pad_to_multiple_of=8)
    _same_ids(multiple, hf_tok(batch[:50], padding=True, pad_to_multiple_of=8))
    assert len(multiple.input_ids[0]) % 8 == 0


def test_text_pairs_match_transformers(tok, hf_tok, sentences):
    first, second = sentences[:200], sentences[200:400]
    kwargs = {"padding": True, "truncation": True, "max_length": 40}
    _same_ids(tok(first, second, **kwargs), hf_tok(first, second, **kwargs))
    question = ["is it any good?"] * len(first)  # short: the other side has room to give up tokens
    kwargs = {"padding": True, "truncation": "only_second", "max_length": 24}
    _same_ids(tok(question, second, **kwargs), hf_tok(question, second, **kwargs))
    kwargs["truncation"] = "only_first"
    _same_ids(tok(first, question, **kwargs), hf_tok(first, question, **kwargs))
    assert max(map(sum, tok(first, question, **kwargs).attention_mask)) == 24
    single = tok(first[0], second[0])
    _same_ids(single, hf_tok(first[0], second[0]))
    assert set(single.token_type_ids) == {0, 1}
    extras = {"return_special_tokens_mask": True, "return_offsets_mapping": True}
    _same_ids(tok(first[:20], second[:20], **extras), hf_tok(first[:20], second[:20], **extras))


def test_vocab_txt_only_matches_transformers(tok, minilm_dir, sentences, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    from_vocab = Tokenizer.from_pretrained(tmp_path)
    hf_from_vocab = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert len(from_vocab) == len(tok) == 30522
    for text in sentences:
        _same_ids(from_vocab(text), hf_from_vocab(text))
    batch = sentences + [" ".join(sentences[i : i + 6]) for i in range(0, 60, 6)]
    kwargs = {"padding": True, "truncation": True, "max_length": 64, "return_tensors": "pt"}
    _same_ids(from_vocab(batch, **kwargs), hf_from_vocab(batch, **kwargs))
    _same_ids(from_vocab(batch, **kwargs), tok(batch, **kwargs))  # and the same as from tokenizer.json
    pairs = {"padding": True, "truncation": True, "max_length": 40}
    _same_ids(from_vocab(batch[:200], batch[200:400], **pairs), hf_from_vocab(batch[:200], batch[200:400], **pairs))
    assert from_vocab.tokenize("[CLS] hello [MASK]") == ["[CLS]", "hello", "[MASK]"]  # specials stay whole
    assert from_vocab.decode(from_vocab.encode("Hello, World!"), skip_special_tokens=True) == "hello, world!"


def test_decode_matches_transformers(tok, hf_tok, sentences):
    batch = tok(sentences[:100], padding=True, return_tensors="pt").input_ids
    for skip in (False, True):
        assert tok.batch_decode(batch, skip_special_tokens=skip) == hf_tok.batch_decode(batch, skip_special_tokens=skip)
        assert tok.decode(batch[3], skip_special_tokens=skip) == hf_tok.decode(batch[3], skip_special_tokens=skip)
    assert tok.decode(batch[0].tolist()).startswith("[CLS] ")
    ids = tok.encode("don't stop , please")
    for clean in (False, True):
        expected = hf_tok.decode(ids, clean_up_tokenization_spaces=clean)
        assert tok.decode(ids, clean_up_tokenization_spaces=clean) == expected
    assert tok.decode(ids, clean_up_tokenization_spaces=True) != tok.decode(ids)


def test_left_padding_and_truncation_matches_transformers(minilm_dir, hf_tok, sentences):
    left = Tokenizer.from_pretrained(minilm_dir, padding_side="left")
    hf_tok_left = transformers.AutoTokenizer.from_pretrained(minilm_dir, padding_side="left", truncation_side="left")
    left.truncation_side = "left"
    batch = sentences[:64]
    ours = left(batch, padding=True, truncation=True, max_length=24, return_tensors="pt")
    _same_ids(ours, hf_tok_left(batch, padding=True, truncation=True, max_length=24, return_tensors="pt"))
    lengths = ours.attention_mask.sum(1)
    short = int(lengths.argmin())
    assert ours.input_ids[short, 0].item() == left.pad_token_id and ours.attention_mask[short, 0].item() == 0
    assert ours.input_ids[short, -1].item() == left.sep_token_id
    with pytest.raises(ValueError, match="padding_side"):
        left.padding_side = "middle"


def test_save_pretrained_round_trip(tok, sentences, tmp_path):
    written = tok.save_pretrained(tmp_path / "saved")
    assert sorted(path.name for path in written) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(p.name for p in written)  # no temp files
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["model_max_length"] == 512
    assert config["do_lower_case"] is True and config["cls_token"] == "[CLS]"
    saved_json = json.loads((tmp_path / "saved" / "tokenizer.json").read_text())
    assert saved_json["padding"] is None and saved_json["truncation"] is None  # no per-call state leaks

    ours = Tokenizer.from_pretrained(tmp_path / "saved")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    kwargs = {"padding": True, "truncation": True, "max_length": 64}
    reference = tok(sentences[:200], **kwargs)
    _same_ids(ours(sentences[:200], **kwargs), reference)
    _same_ids(hf(sentences[:200], **kwargs), reference)
    assert ours.all_special_tokens == tok.all_special_tokens


def test_added_tokens_match_transformers(minilm_dir, sentences):
    ours = Tokenizer.from_pretrained(minilm_dir)
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    assert ours.add_tokens(["flibbertigibbet", "hello"]) == hf.add_tokens(["flibbertigibbet", "hello"]) == 2
    assert ours.add_special_tokens({"additional_special_tokens": ["<ent>"]}) == 1
    hf.add_special_tokens({"additional_special_tokens": ["<ent>"]})
    text = "a flibbertigibbet <ent> of a film, othello"
    _same_ids(ours(text), hf(text))
    assert ours.tokenize("othello") == hf.tokenize("othello") == ["ot", "hello"]  # added tokens match inside words
    assert len(ours) == len(hf) == 30524 and ours.vocab_size == 30522
    assert ours.tokenize(text)[:6] == ["a", "flibbertigibbet", "<ent>", "of", "a", "film"]
    assert "<ent>" in ours.all_special_tokens and ours.convert_tokens_to_ids("<ent>") in ours.all_special_ids
    assert ours.decode(ours.encode(text), skip_special_tokens=True) == "a flibbertigibbet of a film, ot hello"


def test_vocabulary_and_special_token_accessors(tok):
    assert tok.vocab_size == len(tok) == len(tok.get_vocab()) == 30522
    assert (tok.cls_token, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id) == ("[CLS]", 101, 102, 0)
    assert (tok.unk_token_id, tok.mask_token_id, tok.bos_token, tok.eos_token_id) == (100, 103, None, None)
    assert tok.all_special_ids == [100, 102, 0, 101, 103]
    assert tok.convert_tokens_to_ids(["hello", "qqqxqqq"]) == [7592, 100]
    assert tok.convert_ids_to_tokens([101, 7592, 102], skip_special_tokens=True) == ["hello"]
    assert tok.convert_ids_to_tokens(7592) == "hello"


def test_batch_encoding_access_and_tensors(tok):
    enc = tok(["a good film", "bad"], padding=True, return_tensors="pt")
    assert enc.input_ids is enc["input_ids"] and enc.to("cpu") is enc
    assert enc.input_ids.device.type == "cpu" and enc.word_ids(0)[:3] == [None, 0, 1]
    with pytest.raises(AttributeError):
        _ = enc.labels
    as_np = tok(["a good film"], return_tensors="np")
    assert as_np["input_ids"].dtype.name == "int64" and as_np["input_ids"].shape == (1, 5)
    single = tok("a good film", return_tensors="pt")
    assert single.input_ids.shape == (1, 5)  # a lone string still gives a batch of one, as in HF
    assert "token_type_ids" not in tok("x", return_token_type_ids=False)


# ---------------------------------------------------------------------- training


def test_train_new_from_iterator_keeps_the_template(tok, sentences, tmp_path):
    new = tok.train_new_from_iterator(sentences, vocab_size=1500)
    assert new.vocab_size == 1500
    assert new.all_special_tokens == tok.all_special_tokens
    assert [new.pad_token_id, new.unk_token_id, new.cls_token_id, new.sep_token_id, new.mask_token_id] == [
        0,
        1,
        2,
        3,
        4,
    ]
    enc = new(sentences[0], sentences[1])
    assert enc.input_ids[0] == new.cls_token_id and enc.input_ids[-1] == new.sep_token_id
    assert enc.input_ids.count(new.sep_token_id) == 2 and set(enc.token_type_ids) == {0, 1}
    assert new.decode(new.encode("a great movie"), skip_special_tokens=True) == "a great movie"
    # the retrained tokenizer also loads in transformers with identical ids
    new.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    _same_ids(new(sentences[:100], padding=True), hf(sentences[:100], padding=True))


def test_byte_level_bpe_round_trips_text(tiny_bpe, tmp_path):
    assert tiny_bpe.vocab_size == 300
    for text in ["The quick brown fox.", "naïve café — 🙂 unseen words: zyxwv", "  two  spaces\nand a newline"]:
        ids = tiny_bpe.encode(text)
        assert tiny_bpe.decode(ids) == text
    assert list(tiny_bpe("the fox")) == ["input_ids", "attention_mask"]  # no segment ids for BPE
    batch = tiny_bpe(["the fox", "a lazy dog sleeps"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, -1].item() == tiny_bpe.pad_token_id
    tiny_bpe.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    _same_ids(tiny_bpe(TINY_CORPUS[:5], padding=True), hf(TINY_CORPUS[:5], padding=True))
    assert Tokenizer.from_pretrained(tmp_path).encode("the fox") == tiny_bpe.encode("the fox")


def test_train_wordpiece_from_scratch():
    wp = Tokenizer.train(TINY_CORPUS, model="wordpiece", vocab_size=120)
    assert wp.vocab_size <= 120 and wp.cls_token_id == 2 and wp.sep_token_id == 3
    enc = wp("The lazy fox")
    assert enc.input_ids[0] == wp.cls_token_id and enc.input_ids[-1] == wp.sep_token_id
    assert wp.decode(enc.input_ids, skip_special_tokens=True) == "the lazy fox"
    assert wp.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]


# ---------------------------------------------------------------------- chat template


def test_chat_template_renders_known_string(tiny_bpe, tmp_path):
    template = (
        "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
        "{{ raise_exception('bad role ' + m.role) }}{% endif %}"
        "<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tiny_bpe.chat_template = template
    messages = [{"role": "user", "content": "Hi fox"}, {"role": "assistant", "content": "Hello dog"}]
    rendered = tiny_bpe.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|user|>Hi fox</s>\n<|assistant|>Hello dog</s>\n<|assistant|>"
    ids = tiny_bpe.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids == tiny_bpe.encode(rendered, add_special_tokens=False) and ids.count(tiny_bpe.eos_token_id) == 2
    as_tensors = tiny_bpe.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    assert as_tensors.input_ids.shape == (1, len(ids))
    tiny_bpe.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)  # the template travels through tokenizer_config.json
    assert hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == rendered
    assert Tokenizer.from_pretrained(tmp_path).chat_template == template
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0].content }}")  # transformers v5's own file wins
    assert Tokenizer.from_pretrained(tmp_path).apply_chat_template(messages, tokenize=False) == "Hi fox"
    with pytest.raises(jinja2.TemplateError, match="bad role system"):
        tiny_bpe.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)
    with pytest.raises(jinja2.exceptions.SecurityError):  # the sandbox is immutable: no mutation, no escape
        tiny_bpe.apply_chat_template(messages, chat_template="{% set x = [] %}{{ x.append(1) }}", tokenize=False)


def test_chat_template_matches_transformers(tok, hf_tok):
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content | tojson }}\n{% endfor %}"
    messages = [{"role": "user", "content": 'Say "héllo"'}]
    ours = tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    assert ours == hf_tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    with pytest.raises(ValueError, match="no chat_template"):
        tok.apply_chat_template(messages)


# ---------------------------------------------------------------------- errors


def test_tokenizer_json_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer\.json: not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": 1}')
    with pytest.raises(ValueError, match=r"tokenizer\.json: the tokenizers library cannot read it"):
        Tokenizer.from_pretrained(tmp_path)


def test_directory_without_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        Tokenizer.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value) and "tokenizer.json" in str(info.value) and "vocab.txt" in str(info.value)


def test_bad_arguments(tok, tiny_bpe):
    with pytest.raises(ValueError, match="padding"):
        tok("x", padding="bogus")
    with pytest.raises(ValueError, match="truncation"):
        tok("x", truncation="middle_out")
    with pytest.raises(ValueError, match="return_tensors"):
        tok("x", return_tensors="tf")
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a short one", "a much longer sentence than the first"], return_tensors="pt")
    with pytest.raises(TypeError, match="text"):
        tok(42)
    with pytest.raises(ValueError, match="batch size"):
        tok(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="unexpected overrides"):
        Tokenizer.from_pretrained("/nonexistent", padding_sied="left")  # typo caught before any I/O
    no_pad = Tokenizer.train(TINY_CORPUS, model="bpe", vocab_size=280, special_tokens={"eos_token": "</s>"})
    with pytest.raises(ValueError, match="pad token"):
        no_pad(["the fox", "a dog"], padding=True)
    no_pad.pad_token = no_pad.eos_token  # the usual fix
    assert no_pad(["the fox", "a lazy dog"], padding=True).input_ids[0][-1] == no_pad.eos_token_id


# ---------------------------------------------------------------------- AutoTokenizer


class _MyTokenizer(Tokenizer):
    pass


def test_auto_tokenizer_registry(minilm_dir, tiny_bpe, tmp_path):
    assert type(AutoTokenizer.from_pretrained(minilm_dir)) is Tokenizer
    AutoTokenizer.register("bert", _MyTokenizer)
    try:
        loaded = AutoTokenizer.from_pretrained(minilm_dir, padding_side="left")
        assert type(loaded) is _MyTokenizer and loaded.padding_side == "left"
        with pytest.raises(ValueError, match="already registered"):
            AutoTokenizer.register("bert", Tokenizer)
        AutoTokenizer.register("bert", _MyTokenizer, exist_ok=True)
        AutoTokenizer.register("PreTrainedTokenizerFast", _MyTokenizer)  # keyed by tokenizer_class too
        tiny_bpe.save_pretrained(tmp_path)
        assert type(AutoTokenizer.from_pretrained(tmp_path)) is _MyTokenizer
    finally:
        TOKENIZER_REGISTRY.pop("bert", None)
        TOKENIZER_REGISTRY.pop("PreTrainedTokenizerFast", None)
    with pytest.raises(TypeError):
        AutoTokenizer.register("x", dict)


# ---------------------------------------------------------------------- threads, shared state, Rust errors

# settings that differ in every way the backend stores: padding, its length and multiple, truncation, max_length
CONCURRENT_CALLS = [
    dict(padding=True, truncation=True, max_length=16),
    dict(),
    dict(padding="max_length", truncation=True, max_length=24),
    dict(padding=True, pad_to_multiple_of=8),
    dict(truncation=True, max_length=8),
    dict(padding=True, truncation="only_first", max_length=12, return_tensors="pt"),
]


@pytest.fixture
def fast_switching():
    """Switch threads every microsecond (default 5 ms), so racing calls interleave inside each other."""
    import sys

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def _run_threads(work, count: int = 8) -> None:
    import threading

    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as err:  # noqa: BLE001 (reported below, with its thread)
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors


def test_concurrent_calls_with_different_settings_get_single_threaded_results(minilm_dir, sentences, fast_switching):
    """8 threads x 300 calls on one Tokenizer, each with other padding/truncation than its neighbours.

    The old encoder switched padding and truncation on the shared backend per call: this test saw about 900 of
    2,400 results padded or truncated by another thread's settings.
    """
    tok = Tokenizer.from_pretrained(minilm_dir)

    def batch(i: int) -> list[str]:  # 1 to 5 texts of different lengths
        return sentences[i * 3 : i * 3 + 1 + i % 5]

    def ids(encoding: BatchEncoding) -> list:
        return {key: value.tolist() if hasattr(value, "tolist") else value for key, value in encoding.items()}

    expected = {
        (c, i): ids(tok(batch(i), **CONCURRENT_CALLS[c])) for c in range(len(CONCURRENT_CALLS)) for i in range(60)
    }
    wrong: list[tuple[int, int]] = []

    def work(thread: int) -> None:
        for n in range(300):
            c, i = (n + thread) % len(CONCURRENT_CALLS), (n * 7 + thread) % 60
            if ids(tok(batch(i), **CONCURRENT_CALLS[c])) != expected[(c, i)]:
                wrong.append((c, i))

    _run_threads(work)
    assert wrong == []
    assert tok.backend.padding is None and tok.backend.truncation is None  # the shared backend was never configured


def test_configured_backends_are_bounded_and_follow_changes_to_the_tokenizer(minilm_dir):
    from modelcore.tokenization_encoding import MAX_CONFIGURED_BACKENDS

    tok = Tokenizer.from_pretrained(minilm_dir)
    for max_length in range(4, 40):  # more settings than copies kept: memory stays bounded
        assert len(tok("a rather long sentence about nothing much", max_length=max_length).input_ids) <= max_length
    assert len(tok._configured) == MAX_CONFIGURED_BACKENDS

    padded = tok(["a film", "a long and boring film"], padding=True).input_ids
    assert padded[0][-1] == tok.pad_token_id == 0
    tok.add_tokens(["supercalifragilistic"])  # the vocabulary changed: copies built before must not be used
    new_id = tok.convert_tokens_to_ids("supercalifragilistic")
    assert tok("supercalifragilistic", padding=True).input_ids == [101, new_id, 102]
    tok.pad_token = "[MASK]"  # a setter changes the pad token of the next padded call
    assert tok(["a film", "a long and boring film"], padding=True).input_ids[0][-1] == tok.mask_token_id
    tok.padding_side = "left"
    assert tok(["a film", "a long and boring film"], padding=True).input_ids[0][0] == tok.mask_token_id

    from tokenizers import normalizers

    tok.backend.normalizer = normalizers.Replace("film", "movie")  # an edit through the backend applies too
    assert tok.tokenize("a film") == ["a", "movie"]
    assert tok("a film").input_ids == [101, 1037, 3185, 102]


def test_padding_and_truncation_stored_in_tokenizer_json_do_not_apply(minilm_dir, tmp_path):
    """As in Hugging Face, the call's arguments decide; tokenizer.json's padding/truncation are not applied."""
    spec = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["padding"] = {"strategy": {"Fixed": 40}, "direction": "Left", "pad_to_multiple_of": None, "pad_id": 0}
    spec["padding"] |= {"pad_type_id": 0, "pad_token": "[PAD]"}
    spec["truncation"] = {"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    shutil.copy(minilm_dir / "tokenizer_config.json", tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    reference = Tokenizer.from_pretrained(minilm_dir)
    texts = ["a film", "a long and boring film that never ends"]
    assert tok(texts).input_ids == reference(texts).input_ids
    assert [len(row) for row in tok(texts).input_ids] == [4, 10]
    assert tok.padding_side == "left"  # the stored direction is a default, as in Hugging Face; its length is not
    reference.padding_side = "left"
    assert tok(texts, padding=True).input_ids == reference(texts, padding=True).input_ids
    assert [len(row) for row in tok(texts, padding=True).input_ids] == [10, 10]
    assert tok.tokenize(texts[1]) == reference.tokenize(texts[1])


def test_a_rust_panic_becomes_a_tokenizer_error_and_the_tokenizer_keeps_working(minilm_dir):
    """A normalizer regex that backtracks past Oniguruma's limit panics in Rust (PanicException, no Exception)."""
    from tokenizers import Regex, normalizers

    from modelcore.errors import TokenizerError

    tok = Tokenizer.from_pretrained(minilm_dir)
    tok.backend.normalizer = normalizers.Replace(Regex("(a|aa)+$"), "a")
    hostile = "a" * 3000 + "b"
    for call in (lambda: tok(hostile), lambda: tok([hostile, "fine"], padding=True), lambda: tok.tokenize(hostile)):
        with pytest.raises(TokenizerError, match="tokenization failed in the tokenizers library") as info:
            call()
        assert isinstance(info.value, ValueError)
        assert type(info.value.__cause__).__name__ == "PanicException"
    assert tok(["fine", "still fine"], padding=True).input_ids == [[101, 2986, 102, 0], [101, 2145, 2986, 102]]


def test_argument_errors_are_tokenizer_errors(tok):
    from modelcore.errors import TokenizerError

    with pytest.raises(TokenizerError, match="padding"):
        tok("x", padding="bogus")
    with pytest.raises(TokenizerError, match="padding=True"):
        tok(["a short one", "a much longer sentence than the first"], return_tensors="pt")
    with pytest.raises(TypeError, match=r"text\[1\] must be a str, got NoneType"):
        tok(["fine", None])
    with pytest.raises(TokenizerError, match="padding_side"):
        tok.padding_side = "middle"


def test_a_tokenizer_pickles_and_deep_copies(tok):
    import copy
    import pickle

    tok(["warm", "the copies up"], padding=True)
    for clone in (copy.deepcopy(tok), pickle.loads(pickle.dumps(tok))):  # noqa: S301 (our own object)
        assert (
            clone(["a film", "a long film"], padding=True).input_ids
            == tok(["a film", "a long film"], padding=True).input_ids
        )
