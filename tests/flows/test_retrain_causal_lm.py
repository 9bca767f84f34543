"""The retraining flow with ``task="causal-lm"``: raw text in, a registered champion that generates text out.

A tiny Llama with the real MiniLM tokenizer stands in for the base model (a run takes seconds); the documents are
400 real Rotten Tomatoes snippets, one per row of the ``review`` column.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

NAME = "lm-flow-test"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, minilm_dir):
    from modelcore import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_a_causal_lm_run_lowers_perplexity_registers_a_champion_that_generates(
    prefect_server, pipeline_home, tiny_lm, real_csv, monkeypatch
):
    import mlflow
    import pandas as pd

    from flows.params import RetrainParams
    from flows.retrain import retrain
    from modelcore import AutoModelForCausalLM, AutoTokenizer, pipeline

    params = RetrainParams.model_validate(
        {
            "task": "causal-lm",
            "base_model": str(tiny_lm),
            "dataset": str(real_csv),
            "text_column": "review",
            "max_length": 32,
            "registered_model_name": NAME,
            "training": {"max_steps": 30, "per_device_train_batch_size": 8, "learning_rate": 1e-2, "logging_steps": 10},
            "export_formats": ["safetensors", "onnx", "onnx_int8"],
            "quantization": ["int8_dynamic"],
        }
    )
    assert params.promotion_metric == "perplexity" and params.max_examples == 600  # the task's defaults
    assert params.lora.enabled and params.training.warmup_ratio == 0.1  # nested defaults merge with what is given
    summary = retrain(params)
    metrics = summary["metrics"]
    assert summary["task"] == "causal-lm"
    checks = summary["export_checks"]
    assert checks["onnx"]["passed"] is True  # the KV-cache decoder gives the eager model's greedy tokens
    for name in ("onnx_int8", "quantized_int8_dynamic"):  # each reported by its perplexity change, kept within +5%
        before, after = checks[name]["metric_before"], checks[name]["metric_after"]
        assert before > 1 and after > 1 and checks[name]["passed"] == (after / before - 1 <= 0.05)
    assert {"safetensors", "onnx"} <= summary["exports"].keys()
    assert metrics["perplexity"] < metrics["baseline_perplexity"]  # LoRA on random weights: below the base, if slowly
    assert str(summary["version"]) == "1" and "champion" in summary["aliases"]
    assert "below the base model" in summary["promotion"]
    adapter = Path(summary["checkpoint"]).parent / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    assert not any("lora" in k for k in AutoModelForCausalLM.from_pretrained(summary["checkpoint"]).state_dict())

    monkeypatch.setenv("MLFLOW_TRACKING_URI", summary["tracking_uri"])  # as a consumer of the registry sets it
    uri = f"models:/{NAME}@champion"
    served = mlflow.pyfunc.load_model(uri)
    prompts = ["the film is", "a story about"]
    frame = served.predict(pd.DataFrame({"text": prompts}), params={"max_new_tokens": 6})
    assert list(frame.columns) == ["generated_text"] and all(isinstance(t, str) and t for t in frame["generated_text"])

    tokenizer = AutoTokenizer.from_pretrained(summary["checkpoint"])
    direct = AutoModelForCausalLM.from_pretrained(summary["checkpoint"])
    ids = tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    expected = tokenizer.decode(
        direct.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :], skip_special_tokens=True
    )
    from_registry = pipeline("text-generation", model=uri)(prompts[0], max_new_tokens=6, return_full_text=False)
    assert from_registry[0]["generated_text"] == expected == frame["generated_text"][0]


def test_a_worse_model_is_not_champion(prefect_server, pipeline_home, tiny_lm, real_csv):
    from flows.params import RetrainParams
    from flows.retrain import retrain

    # a learning rate this high wrecks the weights: perplexity above the base model's, so no champion
    params = RetrainParams.model_validate(
        {
            "task": "causal-lm", "base_model": str(tiny_lm), "dataset": str(real_csv), "text_column": "review",
            "max_length": 32, "registered_model_name": NAME + "-bad",
            "training": {"max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1.0, "max_grad_norm": 0.0},
        }
    )  # fmt: skip
    summary = retrain(params)
    assert summary["metrics"]["perplexity"] > summary["metrics"]["baseline_perplexity"]
    assert "champion" not in summary["aliases"] and "not below the base model" in summary["promotion"]


def test_lora_targets_that_match_nothing_fail_before_training(prefect_server, pipeline_home, tiny_lm, real_csv):
    from flows.params import RetrainParams
    from flows.retrain import retrain
    from modelcore.errors import ConfigError

    params = RetrainParams.model_validate(
        {
            "task": "causal-lm", "base_model": str(tiny_lm), "dataset": str(real_csv), "text_column": "review",
            "max_length": 32, "registered_model_name": NAME + "-targets", "lora": {"target_modules": ["query", "value"]},
        }
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"\['query', 'value'\] match no linear layer of LlamaForCausalLM.*q_proj"):
        retrain(params)


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory):
    """A tiny Llama with the real SmolLM2 tokenizer and its chat template."""
    from modelcore import AutoTokenizer, LlamaConfig, LlamaForCausalLM, assets

    path = assets.fetch("smollm2-135m-gguf")
    tokenizer = AutoTokenizer.from_pretrained(path if path.is_file() else next(path.glob("*.gguf")))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("tiny-chat-llama")
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def review_chats(rotten_tomatoes, path, broken_row=None):
    """Real reviews as instructions: the user quotes one, the assistant answers fresh or rotten."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(rotten_tomatoes[:200]):
            messages = [
                {"role": "user", "content": f"Is this review fresh or rotten? {row['text']}"},
                {"role": "assistant", "content": ("rotten", "fresh")[row["label"]]},
            ]
            if i == broken_row:
                messages = [messages[0], {"role": "user", "content": "hello?"}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def test_a_chat_run_learns_the_assistant_turns(
    prefect_server, pipeline_home, chat_lm, rotten_tomatoes, tmp_path, monkeypatch
):
    from flows.params import RetrainParams
    from flows.retrain import retrain

    data = review_chats(rotten_tomatoes, tmp_path / "chats.jsonl")
    params = RetrainParams.model_validate(
        {
            "task": "causal-lm", "base_model": str(chat_lm), "dataset": str(data), "max_length": 96,
            "registered_model_name": NAME + "-chat", "lora": {"enabled": False},
            "training": {"max_steps": 25, "per_device_train_batch_size": 8, "learning_rate": 1e-2},
        }
    )  # fmt: skip
    summary = retrain(params)
    # the answers are one of two words: a model that learnt the format is far surer of them than the random base
    assert summary["metrics"]["perplexity"] < summary["metrics"]["baseline_perplexity"] / 10
    assert "champion" in summary["aliases"]

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", summary["tracking_uri"])
    served = mlflow.pyfunc.load_model(f"models:/{NAME}-chat@champion")
    chats = [
        [{"role": "user", "content": f"Is this review fresh or rotten? {r['text']}"}] for r in rotten_tomatoes[-3:]
    ]
    answers = served.predict({"messages": chats}, params={"max_new_tokens": 3})["generated_text"]
    assert len(answers) == 3 and {a.strip().split("<")[0] for a in answers} <= {"fresh", "rotten"}
    with pytest.raises(mlflow.exceptions.MlflowException, match="message 0 of row 1 must be"):
        served.predict({"messages": [chats[0], [{"role": "user"}]]})


def test_a_chat_row_that_does_not_alternate_fails_before_training(
    prefect_server, pipeline_home, chat_lm, rotten_tomatoes, tmp_path
):
    from flows.params import RetrainParams
    from flows.retrain import retrain
    from modelcore.errors import DataError

    data = review_chats(rotten_tomatoes, tmp_path / "broken.jsonl", broken_row=7)
    params = RetrainParams.model_validate(
        {
            "task": "causal-lm", "base_model": str(chat_lm), "dataset": str(data), "max_length": 96,
            "registered_model_name": NAME + "-broken",
        }
    )  # fmt: skip
    with pytest.raises(DataError, match=r"broken.jsonl': chat row 7: message 1 should be the assistant's"):
        retrain(params)
    assert not (Path(pipeline_home) / "runs").exists() or not list(
        (Path(pipeline_home) / "runs").glob("*/train/checkpoint-*")
    )


def test_qlora_trains_adapters_on_a_4bit_base_and_registers_a_full_precision_merge(
    prefect_server, pipeline_home, tiny_lm, real_csv
):
    from flows.params import RetrainParams
    from flows.retrain import retrain
    from modelcore import AutoModelForCausalLM
    from modelcore.integrations.lora import add_lora, load_adapter

    params = RetrainParams.model_validate(
        {
            "task": "causal-lm", "base_model": str(tiny_lm), "dataset": str(real_csv), "text_column": "review",
            "max_length": 32, "registered_model_name": NAME + "-qlora",
            "lora": {"base_quantization": "bnb_nf4", "target_modules": ["q_proj", "v_proj"]},
            "training": {"max_steps": 8, "per_device_train_batch_size": 8, "learning_rate": 1e-2,
                         "gradient_checkpointing": True},
        }
    )  # fmt: skip
    summary = retrain(params)
    merged = AutoModelForCausalLM.from_pretrained(summary["checkpoint"]).eval()
    assert all(p.dtype == torch.float32 for p in merged.parameters())  # no 4-bit weight in the registered model
    reference = AutoModelForCausalLM.from_pretrained(tiny_lm)  # the fp32 base with the trained adapters
    add_lora(reference, ["q_proj", "v_proj"], r=8, alpha=16, dropout=0.05)
    load_adapter(reference, Path(summary["checkpoint"]).parent / "adapter")
    reference.eval()  # after the adapters are added: their dropout is off too
    ids = torch.tensor([[101, 2023, 3185, 2003, 102]])
    with torch.inference_mode():
        torch.testing.assert_close(merged(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
        base = AutoModelForCausalLM.from_pretrained(tiny_lm)(input_ids=ids).logits
    assert not torch.allclose(merged(input_ids=ids).logits, base)  # the adapters trained


def test_unvalidated_bad_parameters_fail_at_once_naming_the_field(prefect_server, pipeline_home):
    import time

    from flows.retrain import retrain

    start = time.monotonic()
    state = retrain.with_options(validate_parameters=False)(
        params={"task": "causal-lm", "training": {"learning_rate": -1}}, return_state=True
    )
    assert state.is_failed() and time.monotonic() - start < 10
    assert "bad parameters: training.learning_rate: Input should be greater than 0" in state.message
    assert not (pipeline_home / "runs").exists()  # nothing ran: no run directory claimed
