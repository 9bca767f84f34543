"""``modelcore quantize METHOD SRC DST``: the checkpoint, report.json, and one clear line for bad input."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("bitsandbytes")

from modelcore import cli  # noqa: E402
from modelcore.cli import main  # noqa: E402
from modelcore.models.bert import BertForSequenceClassification  # noqa: E402
from modelcore.quantization import quantize_checkpoint  # noqa: E402
from modelcore.reports import ConversionReport  # noqa: E402

FAST = ["--batch-size", "4", "--seq-len", "8", "--repeats", "2"]


@pytest.fixture(autouse=True)
def only_the_quantize_verb(monkeypatch):
    """These tests are about this verb: the others' modules (exporters) are not imported here."""
    monkeypatch.setattr(cli, "VERBS", {"quantize": cli.VERBS["quantize"]})


def test_quantize_writes_checkpoint_tokenizer_and_report(bert_dir, tmp_path, capsys):
    out = tmp_path / "nf4"
    heldout = bert_dir.parent / "heldout.jsonl"
    code = main(["quantize", "bnb_nf4", str(bert_dir), str(out), "--double-quant", "--eval-data", str(heldout), *FAST])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["metric_name"] == "accuracy"
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["bnb_4bit_quant_type"] == "nf4" and config["bnb_4bit_use_double_quant"] is True

    report = ConversionReport.read(out)
    assert (report.kind, report.method, report.metric_name) == ("quantize", "bnb_nf4", "accuracy")
    for side in (report.before, report.after):
        assert side.size_bytes > 0 and 0.0 <= side.metric <= 1.0
        assert side.latency_ms > 0 and side.throughput == pytest.approx(4 / side.latency_ms * 1000)
    assert report.after.size_bytes < report.before.size_bytes
    assert 0 < report.max_abs_logit_diff < 1
    assert report.settings["eval_examples"] == 17 and report.settings["batch_size"] == 4
    bytes_ = report.settings["linear_weight_bytes"]
    assert bytes_["after"] < 0.3 * bytes_["before"]
    raw = json.loads((out / "report.json").read_text())
    assert {"size_ratio", "speedup"} <= set(raw)


def test_no_report_and_method_options(bert_dir, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["quantize", "int8_dynamic", str(bert_dir), str(out), "--no-report", "--no-reduce-range"]) == 0
    assert not (out / "report.json").exists()
    model = BertForSequenceClassification.from_pretrained(out)
    assert model.bert.encoder.layer[0].output.dense.reduce_range is False


def test_report_for_a_causal_lm_uses_perplexity(llama_dir, tmp_path):
    from modelcore.quantization.evaluation import EvalData

    texts = EvalData(["the movie was good and the plot was fun"] * 20)
    report = quantize_checkpoint(
        llama_dir, tmp_path / "q", "bnb_nf4", eval_data=texts, batch_size=2, seq_len=16, repeats=1
    )
    assert report.metric_name == "perplexity"
    assert report.before.metric > 1 and report.after.metric > 1 and report.after.metric != report.before.metric
    assert report.max_abs_logit_diff > 0 and report.after.latency_ms > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quantize", "int3", "{src}", "{dst}"], "unknown quantization method 'int3'; known methods: bnb_8bit"),
        (["quantize", "bnb_nf4", "{missing}", "{dst}"], "is neither a local directory nor an asset name"),
        (["quantize", "bnb_8bit", "{src}", "{dst}", "--double-quant"], "does not apply to method bnb_8bit"),
        (["quantize", "bnb_nf4", "{src}", "{dst}", "--eval-data", "{missing}"], "evaluation data must be"),
        (["quantize", "bnb_nf4", "{src}", "{src}"], "is the source checkpoint"),
        (["quantize", "bnb_nf4", "{src}", "{dst}", "--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(argv, message, bert_dir, tmp_path, capsys):
    paths = {"src": str(bert_dir), "dst": str(tmp_path / "out"), "missing": str(tmp_path / "nope")}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelcore quantize: error: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # bad input fails before anything is written


def test_quantizing_a_quantized_checkpoint_is_refused(bert_dir, tmp_path, capsys):
    first = tmp_path / "8bit"
    assert main(["quantize", "bnb_8bit", str(bert_dir), str(first), "--no-report"]) == 0
    assert main(["quantize", "bnb_nf4", str(first), str(tmp_path / "twice")]) == 2
    assert "already quantized with bnb_8bit; quantize its full-precision original instead" in capsys.readouterr().err
    assert not (tmp_path / "twice").exists()
