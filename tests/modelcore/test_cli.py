"""``python -m modelcore generate`` and ``python -m modelcore pipeline``: run as a user runs them, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelcore import AutoTokenizer, pipeline
from modelcore.cli import main
from tests.tiny_models import tiny_llama

REPO = Path(__file__).resolve().parents[2]
PROMPT = "the cat sat on the"


def run_modelcore(*args: str) -> subprocess.CompletedProcess:
    """``python -m modelcore ARGS`` from the repository root; killed after 120 s."""
    return subprocess.run(
        [sys.executable, "-m", "modelcore", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, minilm_dir):
    """A tiny random Llama over the real MiniLM WordPiece vocabulary, saved with that tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    directory = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(seed=0, vocab_size=tokenizer.vocab_size).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def continuation(directory: Path, seed: int | None = None, **options) -> str:
    """What the CLI should print: generate in this process, decode the new tokens."""
    from modelcore import AutoModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    if seed is not None:
        torch.manual_seed(seed)
    output = model.generate(ids, **options)
    return tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


def test_generate_prints_the_greedy_continuation(llama_dir):
    done = run_modelcore("generate", str(llama_dir), PROMPT, "--max-new-tokens", "8")
    assert done.returncode == 0, done.stderr
    expected = continuation(llama_dir, max_new_tokens=8)
    assert len(expected.split()) >= 4
    assert done.stdout == expected + "\n"


def test_generate_samples_reproducibly_from_a_seed(llama_dir):
    flags = ["--do-sample", "--temperature", "1.5", "--top-k", "200", "--top-p", "0.95", "--seed", "7"]
    done = run_modelcore("generate", str(llama_dir), PROMPT, "--max-new-tokens", "8", *flags)
    assert done.returncode == 0, done.stderr
    sampled = continuation(llama_dir, seed=7, max_new_tokens=8, do_sample=True, temperature=1.5, top_k=200, top_p=0.95)
    assert done.stdout == sampled + "\n"
    assert sampled != continuation(llama_dir, max_new_tokens=8)  # it did sample


def test_pipeline_prints_the_pipelines_output_as_json(minilm_dir):
    """MiniLM has no classification head: one is initialized from --seed, so the scores are reproducible."""
    texts = ["a gripping, beautifully acted film", "dull and far too long"]
    done = run_modelcore("pipeline", "sentiment-analysis", str(minilm_dir), *texts, "--top-k", "2", "--seed", "0")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    torch.manual_seed(0)
    expected = pipeline("text-classification", minilm_dir)(texts, top_k=2)
    assert [[row["label"] for row in rows] for rows in got] == [[row["label"] for row in rows] for rows in expected]
    for got_rows, expected_rows in zip(got, expected, strict=True):
        assert [row["score"] for row in got_rows] == pytest.approx([row["score"] for row in expected_rows], abs=1e-6)
        assert sum(row["score"] for row in got_rows) == pytest.approx(1.0)


def test_pipeline_passes_call_options_through(minilm_dir, capsys):
    torch.manual_seed(0)
    assert main(["pipeline", "text-classification", str(minilm_dir), "fine", "poor", "--option", "top_k=null"]) == 0
    rows_per_text = json.loads(capsys.readouterr().out)
    assert [{row["label"] for row in rows} for rows in rows_per_text] == [{"LABEL_0", "LABEL_1"}] * 2  # every label


# ------------------------------------------------------------------ bad input
def test_unknown_task_lists_the_known_ones(capsys):
    assert main(["pipeline", "no-such-task", "unused-model", "text"]) == 2
    err = capsys.readouterr().err
    assert (
        "unknown pipeline task 'no-such-task'" in err and "text-classification" in err and "sentiment-analysis" in err
    )


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_new_tokens_below_one_is_refused_naming_the_flag(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "unused-model", PROMPT, "--max-new-tokens", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-new-tokens: must be an integer >= 1, got" in err and value in err


def test_sampling_flags_without_do_sample_are_refused(llama_dir, capsys):
    assert main(["generate", str(llama_dir), PROMPT, "--temperature", "0.7", "--top-p", "0.9"]) == 2
    assert "--temperature, --top-p only apply when sampling: add --do-sample" in capsys.readouterr().err


def test_empty_prompt_is_refused(llama_dir, capsys):
    assert main(["generate", str(llama_dir), "  "]) == 2
    assert "PROMPT is empty" in capsys.readouterr().err


def test_bad_option_is_refused(minilm_dir, capsys):
    assert main(["pipeline", "text-classification", str(minilm_dir), "x", "--option", "top_k"]) == 2
    assert "--option 'top_k' is not KEY=VALUE" in capsys.readouterr().err
