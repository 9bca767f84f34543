"""question-answering: a tiny BertForQuestionAnswering behind the real MiniLM tokenizer.

transformers 5 removed its question-answering pipeline, so the reference here is a brute-force search written
out in the test on transformers' own model and tokenizer: every window of the context (transformers' tokenizer
with ``stride``), every span of context tokens no longer than ``max_answer_len``, scored ``p(start) * p(end)``
with the softmax over the context tokens and [CLS], widened to whole words, best first.
"""

from __future__ import annotations

import pytest
import torch

from modelcore.pipelines import pipeline
from tests.modelcore.pipelines.helpers import save_with_minilm_tokenizer, tiny_bert_config

CONTEXT = (
    "The Amazon rainforest covers much of the Amazon basin of South America. This basin encompasses seven million "
    "square kilometres, of which five and a half million square kilometres are covered by the rainforest. The "
    "region includes territory belonging to nine nations. The majority of the forest is contained within Brazil, "
    "with sixty percent of the rainforest, followed by Peru with thirteen percent, Colombia with ten percent, and "
    "with minor amounts in Venezuela, Ecuador, Bolivia, Guyana, Suriname and French Guiana. The rainforest likely "
    "formed during the Eocene era, following the Cretaceous-Paleogene extinction event."
)
QUESTIONS = ["Which country holds most of the forest?", "When did the rainforest form?", "How large is the basin?"]


@pytest.fixture(scope="module")
def qa_dir(minilm_dir, tmp_path_factory):
    """A seeded tiny BERT QA model saved with the real MiniLM tokenizer files; sharp start/end logits."""
    import transformers

    torch.manual_seed(0)
    config = tiny_bert_config()
    model = transformers.BertForQuestionAnswering(config).eval()
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("tiny-qa")
    return save_with_minilm_tokenizer(model, minilm_dir, out)


@pytest.fixture(scope="module")
def reference(qa_dir):
    import transformers

    model = transformers.BertForQuestionAnswering.from_pretrained(qa_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(qa_dir)

    def answer(question, context, top_k, max_seq_len, doc_stride, max_answer_len):
        enc = tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=max_seq_len,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        spans = []
        for w in range(len(enc["input_ids"])):
            inputs = {k: torch.tensor([enc[k][w]]) for k in ("input_ids", "token_type_ids", "attention_mask")}
            with torch.no_grad():
                out = model(**inputs)
            context_tokens = [i for i, sid in enumerate(enc.sequence_ids(w)) if sid == 1]
            allowed = torch.tensor([0, *context_tokens])  # [CLS] takes part in the softmax
            p_start = torch.zeros(len(enc["input_ids"][w]), dtype=torch.float64)
            p_end = p_start.clone()
            p_start[allowed] = out.start_logits[0, allowed].double().softmax(-1)
            p_end[allowed] = out.end_logits[0, allowed].double().softmax(-1)
            for s in context_tokens:
                for e in context_tokens:
                    if s <= e < s + max_answer_len:
                        first = enc.word_to_chars(w, enc.token_to_word(w, s), sequence_index=1)[0]
                        last = enc.word_to_chars(w, enc.token_to_word(w, e), sequence_index=1)[1]
                        spans.append((float(p_start[s] * p_end[e]), first, last))
        spans.sort(key=lambda span: -span[0])
        return [{"score": p, "start": a, "end": b, "answer": context[a:b]} for p, a, b in spans[:top_k]]

    return answer


@pytest.mark.parametrize(("max_seq_len", "doc_stride"), [(384, 128), (48, 16), (40, 24)])
@pytest.mark.parametrize("top_k", [1, 3])
def test_answers_equal_the_reference_search_over_strided_windows(qa_dir, reference, max_seq_len, doc_stride, top_k):
    qa = pipeline("question-answering", model=qa_dir)
    for question in QUESTIONS:
        got = qa(question=question, context=CONTEXT, top_k=top_k, max_seq_len=max_seq_len, doc_stride=doc_stride)
        want = reference(question, CONTEXT, top_k, max_seq_len, doc_stride, max_answer_len=15)
        got = [got] if top_k == 1 else got
        assert [(a["start"], a["end"], a["answer"]) for a in got] == [(a["start"], a["end"], a["answer"]) for a in want]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(got, want, strict=True)) < 1e-5


def test_long_context_is_split_into_windows(qa_dir):
    qa = pipeline("question-answering", model=qa_dir)
    windows = qa._windows(QUESTIONS[0], CONTEXT, 48, 16)
    assert len(windows) == 5 and all(len(w.ids) <= 48 for w in windows)
    # consecutive windows share doc_stride context tokens
    first = [t for t, sid in zip(windows[0].ids, windows[0].sequence_ids, strict=True) if sid == 1]
    second = [t for t, sid in zip(windows[1].ids, windows[1].sequence_ids, strict=True) if sid == 1]
    assert first[-16:] == second[:16]


def test_input_forms_and_batches_agree(qa_dir):
    qa = pipeline("question-answering", model=qa_dir)
    one = qa(QUESTIONS[0], CONTEXT, max_seq_len=48, doc_stride=16)
    assert set(one) == {"score", "start", "end", "answer"}
    assert qa({"question": QUESTIONS[0], "context": CONTEXT}, max_seq_len=48, doc_stride=16) == one
    items = ({"question": q, "context": CONTEXT} for q in QUESTIONS)
    many = qa(items, max_seq_len=48, doc_stride=16, batch_size=3)
    assert len(many) == 3 and many[0]["answer"] == one["answer"]
    assert abs(many[0]["score"] - one["score"]) < 1e-6


def test_impossible_answer_is_offered_when_asked(qa_dir):
    qa = pipeline("question-answering", model=qa_dir)
    every = qa(QUESTIONS[1], CONTEXT, top_k=5000, handle_impossible_answer=True)  # every span, ranked
    empty = [a for a in every if a["answer"] == "" and a["start"] == a["end"] == 0]
    assert len(empty) == 1 and 0 < empty[0]["score"] < 1
    without = qa(QUESTIONS[1], CONTEXT, top_k=5000)
    assert len(every) == len(without) + 1 and not any(a["answer"] == "" for a in without)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((QUESTIONS[0],), {}, "input 0 has no context"),
        ((), {"question": QUESTIONS[0], "context": "   "}, "input 0 has no context"),
        (([{"question": QUESTIONS[0], "context": CONTEXT}, {"question": "Where?"}],), {}, "input 1 has no context"),
        ((), {}, "needs a question and a context"),
        ((QUESTIONS[0], CONTEXT), {"max_seq_len": 8}, "leaves no room for the context"),
    ],
)
def test_bad_calls_say_what_is_missing(qa_dir, args, kwargs, message):
    qa = pipeline("question-answering", model=qa_dir)
    with pytest.raises(ValueError, match=message):
        qa(*args, **kwargs)
