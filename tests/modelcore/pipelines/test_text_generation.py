"""text-generation: a tiny random Llama behind the real MiniLM tokenizer (with a chat template), compared with
transformers' pipeline on the same saved weights: prompts, chats, return_full_text, max_length, beams."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from modelcore.pipelines import pipeline

PROMPTS = ["The weather today is", "Once upon a time, in a small village,", "Paris is the capital of"]
CHAT = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the tallest mountain?"},
]
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def lm_dir(minilm_dir, tmp_path_factory):
    """A seeded tiny LlamaForCausalLM (MiniLM's vocabulary) saved with the MiniLM tokenizer and a chat template."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # a sharp head: greedy picks are far apart, so padding noise cannot flip them
        model.lm_head.weight.normal_(0, 1.0)
    out = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(out)
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, out / name)
    tokenizer_config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "chat_template": TEMPLATE}))
    return out


@pytest.fixture(scope="module")
def hf_generate(lm_dir):
    import transformers

    return transformers.pipeline("text-generation", model=str(lm_dir), device="cpu")


@pytest.mark.parametrize("return_full_text", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_prompts_equal_transformers(lm_dir, hf_generate, return_full_text, batch_size):
    ours = pipeline("text-generation", model=lm_dir, batch_size=batch_size)
    options = dict(max_new_tokens=8, do_sample=False, return_full_text=return_full_text)
    got = ours(PROMPTS, **options)
    want = hf_generate(PROMPTS, **options)
    assert got == want
    assert all(len(r[0]["generated_text"]) > len(p) * return_full_text for r, p in zip(got, PROMPTS, strict=True))


def test_a_lone_prompt_max_length_and_beams_equal_transformers(lm_dir, hf_generate):
    ours = pipeline("text-generation", model=lm_dir)
    assert ours(PROMPTS[0], max_length=20, do_sample=False) == hf_generate(PROMPTS[0], max_length=20, do_sample=False)
    beams = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False)
    got = ours(PROMPTS[1], **beams)
    assert len(got) == 2 and got == hf_generate(PROMPTS[1], **beams)


@pytest.mark.parametrize("return_full_text", [True, False])
def test_chat_equals_transformers(lm_dir, hf_generate, return_full_text):
    ours = pipeline("text-generation", model=lm_dir)
    options = dict(max_new_tokens=8, do_sample=False, return_full_text=return_full_text)
    got = ours(CHAT, **options)
    assert got == hf_generate(CHAT, **options)
    if return_full_text:
        assert got[0]["generated_text"][:2] == CHAT and got[0]["generated_text"][2]["role"] == "assistant"
    two = ours([CHAT, CHAT[1:]], **options)  # a list of chats: one list of results per chat
    assert len(two) == 2 and two[0] == got


def test_bad_inputs_are_refused(lm_dir):
    ours = pipeline("text-generation", model=lm_dir)
    with pytest.raises(ValueError, match="ends with the assistant's message"):
        ours([*CHAT, {"role": "assistant", "content": "Mount"}], max_new_tokens=2)
    with pytest.raises(TypeError, match="input 1 must be a str or a chat"):
        ours(["fine", 3], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ours("fine", max_new_tokens=0)


def test_default_model_is_smollm2_and_equals_transformers_on_the_same_gguf(caplog):
    """pipeline("text-generation") with no model: the real SmolLM2-135M-Instruct (Q4_1 GGUF), logged; greedy prompts
    and a chat give transformers' text for the same file."""
    import logging
    from pathlib import Path

    import transformers

    from modelcore import assets

    with caplog.at_level(logging.INFO, logger="modelcore.pipelines.base"):
        ours = pipeline("text-generation", batch_size=2)
    assert "using the catalog asset 'smollm2-135m-gguf'" in caplog.text
    gguf = Path(assets.fetch("smollm2-135m-gguf"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    prompts = ["The capital of France is", "A good way to learn a language is"]
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    options = dict(max_new_tokens=12, do_sample=False)
    got = ours(prompts, **options)
    assert got == hf(prompts, **options)
    assert "Paris" in got[0][0]["generated_text"]
    assert ours(chat, **options) == hf(chat, **options)
