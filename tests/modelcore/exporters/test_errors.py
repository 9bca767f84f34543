"""Bad inputs fail with an error that names the file: missing or corrupt model.onnx, missing weights, wrong class."""

from __future__ import annotations

import shutil

import pytest

from modelcore.cli import main
from modelcore.exporters import OrtModelForCausalLM, OrtModelForSequenceClassification, quantize_onnx


@pytest.fixture
def export_copy(bert_export, tmp_path):
    return shutil.copytree(bert_export, tmp_path / "export")


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such export directory"):
        OrtModelForSequenceClassification.from_pretrained(tmp_path / "nowhere")


def test_missing_model_onnx_names_the_path(export_copy):
    (export_copy / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=f"{export_copy / 'model.onnx'}: no such ONNX model"):
        OrtModelForSequenceClassification.from_pretrained(export_copy)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty-graph"])
def test_corrupt_model_onnx_names_the_path(export_copy, damage):
    path = export_copy / "model.onnx"
    if damage == "garbage":
        path.write_bytes(b"\x08\x07not an onnx model at all\xff\xff\xff")
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{path}: (not a readable ONNX model|onnxruntime cannot load it)"):
        OrtModelForSequenceClassification.from_pretrained(export_copy)


def test_missing_weights_file_names_it(export_copy):
    (export_copy / "model.onnx.data").unlink()
    with pytest.raises(FileNotFoundError, match="model.onnx.data are missing"):
        OrtModelForSequenceClassification.from_pretrained(export_copy)


def test_missing_config(export_copy):
    (export_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        OrtModelForSequenceClassification.from_pretrained(export_copy)


def test_export_of_another_task_is_refused(export_copy):
    with pytest.raises(ValueError, match="holds a 'text-classification' export, not 'text-generation'"):
        OrtModelForCausalLM.from_pretrained(export_copy)


def test_quantizing_a_corrupt_export_fails_before_writing(export_copy, tmp_path):
    (export_copy / "model.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="model.onnx"):
        quantize_onnx(export_copy, tmp_path / "int8")
    assert not (tmp_path / "int8").exists()


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["export", "onnx", str(tmp_path / "missing-checkpoint"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelcore export: error:") and "missing-checkpoint" in err
    assert main(["export", "onnx", str(tmp_path), str(tmp_path / "out"), "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
