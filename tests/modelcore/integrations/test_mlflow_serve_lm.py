"""``mlflow models serve`` of a registered causal LM: prompts and chats in, generated text out, params honoured."""

from __future__ import annotations

import pytest
import torch

from tests.mlflow_serving import invoke, served

pytestmark = pytest.mark.slow

NAME = "served-lm"


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A tiny Llama with the real SmolLM2 tokenizer (and chat template), registered as ``models:/NAME@champion``."""
    from mlflow import MlflowClient

    from modelcore import AutoTokenizer, LlamaConfig, LlamaForCausalLM, assets
    from modelcore.integrations.mlflow_models import log_pyfunc, register_version

    root = tmp_path_factory.mktemp("serving-lm")
    path = assets.fetch("smollm2-135m-gguf")
    tokenizer = AutoTokenizer.from_pretrained(path if path.is_file() else next(path.glob("*.gguf")))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    checkpoint = root / "checkpoint"
    LlamaForCausalLM(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment("serving-lm", artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    log_pyfunc(run_id, checkpoint, tracking_uri=tracking_uri, task="causal-lm", input_example=["Hello"])
    client.set_terminated(run_id)
    version = register_version(NAME, run_id, tracking_uri=tracking_uri)
    client.set_registered_model_alias(NAME, "champion", version.version)
    return tracking_uri, checkpoint, root


def greedy(checkpoint, prompt, new_tokens: int, chat: bool = False) -> str:
    from modelcore import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    if chat:
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_served_lm_answers_prompts_and_chats_with_the_checkpoints_greedy_text(champion):
    tracking_uri, checkpoint, root = champion
    chat = [{"role": "user", "content": "Name a river."}]
    with served(f"models:/{NAME}@champion", tracking_uri, root) as (port, _):
        code, prompts = invoke(port, {"dataframe_split": {"columns": ["text"], "data": [["The river"], ["A city"]]},
                                      "params": {"max_new_tokens": 5}})  # fmt: skip
        assert code == 200, prompts
        texts = [row["generated_text"] for row in prompts["predictions"]]
        assert texts == [greedy(checkpoint, "The river", 5), greedy(checkpoint, "A city", 5)]

        code, chats = invoke(port, {"inputs": {"messages": [chat]}, "params": {"max_new_tokens": 4}})
        assert code == 200, chats
        assert [row["generated_text"] for row in chats["predictions"]] == [greedy(checkpoint, chat, 4, chat=True)]

        code, error = invoke(port, {"inputs": {"messages": [[{"role": "user"}]]}})
        assert code == 400 and "message 0 of row 0" in error["message"]
        code, error = invoke(port, {"dataframe_records": [{"text": 3}]})
        assert code == 400 and "'text' of row 0 must be a string" in error["message"]
