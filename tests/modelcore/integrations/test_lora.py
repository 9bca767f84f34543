"""LoRA through peft on a modelcore Llama: adapters train alone, save in peft's layout, merge into plain weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelcore import LlamaForCausalLM
from modelcore.errors import ConfigError
from modelcore.integrations.lora import add_lora, load_adapter, merge_lora, save_adapter
from tests.tiny_models import tiny_llama

TARGETS = ["q_proj", "v_proj", "down_proj"]
IDS = torch.tensor([[5, 9, 2, 33, 17, 8], [1, 4, 4, 60, 2, 7]])


def trained_adapter(model: LlamaForCausalLM, steps: int = 5) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_only_adapters_train_and_the_base_is_untouched():
    model = tiny_llama()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(input_ids=IDS).logits.detach()
    add_lora(model, TARGETS, r=4, alpha=8, dropout=0.0)
    torch.testing.assert_close(model(input_ids=IDS).logits, before)  # B starts at zero: same function
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    trained_adapter(model)
    after = model.state_dict()
    for name, value in base.items():
        stored = name.replace(".weight", ".base_layer.weight") if any(f"{t}.weight" in name for t in TARGETS) else name
        torch.testing.assert_close(after[stored], value, rtol=0, atol=0)
    assert not torch.allclose(model(input_ids=IDS).logits, before)


def test_saved_adapter_loads_in_peft_on_the_transformers_base(tmp_path):
    import transformers
    from peft import PeftModel

    model = tiny_llama()
    model.save_pretrained(tmp_path / "base")
    config = add_lora(model, TARGETS, r=4, alpha=8, dropout=0.0)
    trained_adapter(model)
    save_adapter(model, config, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    reference = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    reference = PeftModel.from_pretrained(reference, tmp_path / "adapter").eval()
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=IDS).logits, reference(input_ids=IDS).logits, rtol=1e-5, atol=1e-5)


def test_merged_model_is_plain_and_gives_the_adapted_outputs(tmp_path):
    model = tiny_llama()
    add_lora(model, TARGETS, r=4, alpha=8, dropout=0.0)
    trained_adapter(model)
    model.eval()
    with torch.inference_mode():
        adapted = model(input_ids=IDS).logits
    merge_lora(model)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith(tuple(TARGETS)))
    model.save_pretrained(tmp_path / "merged")
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name or "base_layer" in name for name in reloaded.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(input_ids=IDS).logits, adapted, rtol=1e-5, atol=1e-5)


def test_targets_that_match_nothing_are_refused_naming_the_linears():
    with pytest.raises(ConfigError, match=r"\['query', 'value'\] match no linear layer.*q_proj"):
        add_lora(tiny_llama(), ["query", "value"])


def test_saved_adapters_load_back_onto_a_fresh_base_and_a_mismatch_is_named(tmp_path):
    model = tiny_llama()
    config = add_lora(model, TARGETS, r=4, alpha=8, dropout=0.0)
    trained_adapter(model)
    save_adapter(model, config, tmp_path / "adapter")
    fresh = tiny_llama()
    add_lora(fresh, TARGETS, r=4, alpha=8, dropout=0.0)
    load_adapter(fresh, tmp_path / "adapter")
    model.eval()
    fresh.eval()
    with torch.inference_mode():
        torch.testing.assert_close(fresh(input_ids=IDS).logits, model(input_ids=IDS).logits, rtol=0, atol=0)
    other = tiny_llama()
    add_lora(other, ["q_proj"], r=4, alpha=8, dropout=0.0)
    with pytest.raises(ConfigError, match="adapters do not fit the model"):
        load_adapter(other, tmp_path / "adapter")
