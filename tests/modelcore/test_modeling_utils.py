"""from_pretrained / save_pretrained: layout, sharding, dtypes, device maps and bad checkpoints."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch

from modelcore import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
)
from modelcore.configuration_utils import ConfigError
from modelcore.serialization.checkpoint import CheckpointError
from modelcore.serialization.safetensors_io import SafetensorsError


def tiny_llama(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    kwargs = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(LlamaConfig(**(kwargs | overrides)))


def tiny_bert(cls=BertForSequenceClassification, **overrides):
    torch.manual_seed(0)
    kwargs = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    return cls(BertConfig(**(kwargs | overrides)))


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


IDS = torch.tensor([[5, 17, 3, 99, 250, 7], [1, 2, 3, 4, 5, 6]])


# ------------------------------------------------------------------ layout
def test_save_writes_hf_layout_and_loads_bit_identical(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "float32"
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert_same_state(model, loaded)
    assert not loaded.training
    torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, rtol=0, atol=0)


def test_sharded_save_loads_bit_identical_and_resave_removes_stale_shards(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path, max_shard_size="1MB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 3
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert set(index["weight_map"]) == set(model.state_dict())
    assert_same_state(model, LlamaForCausalLM.from_pretrained(tmp_path))

    model.save_pretrained(tmp_path, max_shard_size="2MB")  # fewer, larger shards
    fewer = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert 1 < len(fewer) < len(shards)
    assert (
        sorted(set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values())) == fewer
    )
    model.save_pretrained(tmp_path)  # back to one file: no shard, no index left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_state(model, LlamaForCausalLM.from_pretrained(tmp_path))


def test_hf_transformers_loads_our_shards(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_llama()
    model.save_pretrained(tmp_path, max_shard_size="1MB")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(hf(IDS).logits, model(IDS).logits, rtol=0, atol=1e-5)


def test_tied_weights_stored_once_and_retied_on_load(tmp_path):
    model = tiny_llama(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    from modelcore.serialization.safetensors_io import SafetensorsFile

    with SafetensorsFile(tmp_path / "model.safetensors") as f:
        assert "lm_head.weight" not in f and "model.embed_tokens.weight" in f
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert loaded.num_parameters() == model.num_parameters() == sum(p.numel() for p in model.parameters())


def test_crashed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    from modelcore.serialization import checkpoint

    old = tiny_llama()
    old.save_pretrained(tmp_path)
    new = tiny_llama(rms_norm_eps=1e-5)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    calls = []
    real_write = checkpoint.write_safetensors

    def crash_on_second_shard(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(tensors, path, metadata)

    monkeypatch.setattr(checkpoint, "write_safetensors", crash_on_second_shard)
    with pytest.raises(OSError, match="disk full"):
        new.save_pretrained(tmp_path, max_shard_size="1MB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_state(old, LlamaForCausalLM.from_pretrained(tmp_path))


# ------------------------------------------------------------------ heads and prefixes
def test_base_checkpoint_into_head_initializes_new_head_with_warning(tmp_path, caplog):
    base = tiny_bert(BertModel)
    base.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        head, info = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert info["missing_keys"] == ["classifier.weight", "classifier.bias"]
    assert "classifier.weight" in caplog.text and "newly initialized" in caplog.text
    assert head.classifier.weight.shape == (3, 32)
    assert head.classifier.weight.std() > 0 and torch.count_nonzero(head.classifier.bias) == 0
    assert torch.equal(head.bert.encoder.layer[1].output.dense.weight, base.encoder.layer[1].output.dense.weight)


def test_head_checkpoint_into_base_drops_head(tmp_path):
    head = tiny_bert(BertForSequenceClassification)
    head.save_pretrained(tmp_path)
    base, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(base, BertModel)
    assert info["missing_keys"] == [] and set(info["unexpected_keys"]) == {"classifier.weight", "classifier.bias"}
    assert torch.equal(base.pooler.dense.weight, head.bert.pooler.dense.weight)


def test_new_head_is_seeded_by_the_global_rng(tmp_path):
    tiny_bert(BertModel).save_pretrained(tmp_path)
    torch.manual_seed(123)
    a = BertForSequenceClassification.from_pretrained(tmp_path)
    torch.manual_seed(123)
    b = BertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(a.classifier.weight, b.classifier.weight)


def test_legacy_layernorm_gamma_beta_names_load(tmp_path):
    from modelcore.serialization.safetensors_io import save_file

    model = tiny_bert(BertModel)
    model.save_pretrained(tmp_path)
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in model.state_dict().items()
    }
    save_file(state, tmp_path / "model.safetensors")
    loaded, info = BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert_same_state(model, loaded)


# ------------------------------------------------------------------ dtypes
def test_dtype_auto_keeps_stored_dtype_and_explicit_dtype_converts(tmp_path):
    model = tiny_llama().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    auto = LlamaForCausalLM.from_pretrained(tmp_path)
    assert auto.dtype == torch.bfloat16
    assert_same_state(model, auto)
    fp32 = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in fp32.parameters())
    assert fp32.model.rotary_emb.inv_freq.dtype == torch.float32  # buffers keep their own dtype
    assert LlamaForCausalLM.from_pretrained(tmp_path, dtype="float16").dtype == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        LlamaForCausalLM.from_pretrained(tmp_path, dtype="float17")


def test_config_overrides_and_unknown_kwarg(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text()) | {"attn_implementation": "flash_attention_2"}
    (tmp_path / "config.json").write_text(json.dumps(stored))  # how it was run is not applied on load
    assert LlamaForCausalLM.from_pretrained(tmp_path).config.attn_implementation == "sdpa"
    model = LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager", rms_norm_eps=1e-5)
    assert model.config.attn_implementation == "eager" and model.config.rms_norm_eps == 1e-5
    with pytest.raises(TypeError, match="device_mapp"):
        LlamaForCausalLM.from_pretrained(tmp_path, device_mapp="cpu")


# ------------------------------------------------------------------ devices
def test_device_map_cpu_and_disk_offload_give_same_logits(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path / "ckpt")
    expected = model(IDS).logits
    on_cpu = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt", device_map="cpu")
    torch.testing.assert_close(on_cpu(IDS).logits, expected, rtol=0, atol=0)
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "disk",
    }
    device_map |= {"model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    offloaded = LlamaForCausalLM.from_pretrained(
        tmp_path / "ckpt", device_map=device_map, offload_folder=tmp_path / "off"
    )
    assert offloaded.model.layers[2].mlp.up_proj.weight.device.type == "meta"  # lives on disk until used
    assert any((tmp_path / "off").iterdir())
    torch.testing.assert_close(offloaded(IDS).logits, expected, rtol=0, atol=1e-6)


def test_device_map_auto_respects_max_memory(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path)
    auto = LlamaForCausalLM.from_pretrained(tmp_path, device_map="auto", max_memory={"cpu": "1MB"})
    assert "disk" in auto.hf_device_map.values()
    torch.testing.assert_close(auto(IDS).logits, model(IDS).logits, rtol=0, atol=1e-6)


def test_device_map_missing_entry_names_parameter(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="lm_head"):
        LlamaForCausalLM.from_pretrained(tmp_path, device_map={"model": "cpu"})


# ------------------------------------------------------------------ bad checkpoints
def test_truncated_weights_name_the_file(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(SafetensorsError, match=r"model\.safetensors.*truncated"):
        LlamaForCausalLM.from_pretrained(tmp_path)


def test_missing_shard_names_the_shard(tmp_path):
    tiny_llama().save_pretrained(tmp_path, max_shard_size="1MB")
    second = sorted(tmp_path.glob("model-*.safetensors"))[1]
    second.unlink()
    with pytest.raises(FileNotFoundError, match=second.name):
        LlamaForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("target", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_index_entry_outside_directory_is_refused(tmp_path, target):
    ckpt = tmp_path / "ckpt"
    tiny_llama().save_pretrained(ckpt, max_shard_size="1MB")
    (tmp_path / "outside.safetensors").write_bytes(sorted(ckpt.glob("model-*.safetensors"))[0].read_bytes())
    index_path = ckpt / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.embed_tokens.weight"] = target
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"outside the checkpoint directory") as err:
        LlamaForCausalLM.from_pretrained(ckpt)
    assert "model.embed_tokens.weight" in str(err.value) and "index.json" in str(err.value)


def test_symlinked_shards_inside_a_hub_style_cache_load(tmp_path):
    """A hub cache snapshot holds symlinks to ../../blobs: the index names stay inside, so they load."""
    model = tiny_llama()
    model.save_pretrained(tmp_path / "saved", max_shard_size="1MB")
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc123"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted((tmp_path / "saved").iterdir())):
        (blobs / f"blob{i}").write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(f"../../blobs/blob{i}")
    assert_same_state(model, LlamaForCausalLM.from_pretrained(snapshot))


def test_wrong_tensor_shape_names_the_key_unless_ignored(tmp_path):
    tiny_bert(BertForSequenceClassification, num_labels=2).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"classifier\.weight.*\(2, 32\).*\(5, 32\)"):
        BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    model, info = BertForSequenceClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.classifier.weight.shape == (5, 32) and len(info["mismatched_keys"]) == 2


def test_unknown_model_type_names_file_and_type(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text()) | {"model_type": "gpt17"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"config\.json.*gpt17.*known model types: bert, llama"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_pickle_checkpoint_refused_unless_opted_in(tmp_path):
    model = tiny_bert(BertModel)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*allow_pickle=True"):
        BertModel.from_pretrained(tmp_path)
    assert_same_state(model, BertModel.from_pretrained(tmp_path, allow_pickle=True))


def test_malicious_pickle_not_executed_even_when_opted_in(tmp_path):
    BertConfig(hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Exploit()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        BertModel.from_pretrained(tmp_path, allow_pickle=True)
    assert not marker.exists()


def test_missing_weights_and_missing_directory(tmp_path):
    BertConfig().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no weights found"):
        BertModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        BertModel.from_pretrained(tmp_path / "nope")


def test_mlm_head_tied_to_word_embeddings(tmp_path):
    model = tiny_bert(BertForMaskedLM)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path)
    loaded = BertForMaskedLM.from_pretrained(tmp_path)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    assert_same_state(model, loaded)


def test_llama_bare_model_from_causal_lm_checkpoint(tmp_path):
    lm = tiny_llama()
    lm.save_pretrained(tmp_path)
    bare = LlamaModel.from_pretrained(tmp_path)
    torch.testing.assert_close(bare(IDS).last_hidden_state, lm.model(IDS).last_hidden_state, rtol=0, atol=0)


# ------------------------------------------------------------------ building on the meta device
class _CpuAllocations(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of every CPU tensor an op creates while active."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                self.bytes += tensor.untyped_storage().nbytes()
        return out


def test_init_empty_weights_builds_a_5gb_model_without_allocating_it():
    import psutil

    from modelcore.modeling_utils import init_empty_weights

    config = LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16
    )
    with init_empty_weights():  # warm up: first-use imports and caches are not the model's memory
        LlamaForCausalLM(tiny_config_like(config))
    process = psutil.Process()
    rss_before = process.memory_info().rss
    with init_empty_weights():
        model = LlamaForCausalLM(config)
    rss_growth = process.memory_info().rss - rss_before
    assert model.num_parameters() * 4 > 4.5e9  # about 4.8 GB in fp32
    assert all(p.is_meta for p in model.parameters())
    assert rss_growth < 50 * 2**20, rss_growth
    # Before, every parameter was first created on the CPU (torch.empty: 4.8 GB of untouched pages, which
    # RSS does not show), then moved to meta: count what construction allocates on the CPU, op by op.
    with init_empty_weights(), _CpuAllocations() as allocations:
        LlamaForCausalLM(config)
    assert allocations.bytes < 100_000, allocations.bytes  # only the rotary frequencies are real
    inv_freq = model.model.rotary_emb.inv_freq
    assert not inv_freq.is_meta and torch.equal(inv_freq, LlamaModel(tiny_config_like(config)).rotary_emb.inv_freq)


def tiny_config_like(config: LlamaConfig) -> LlamaConfig:
    """A one-layer config with the same head_dim and rope settings (the same rotary frequencies)."""
    return LlamaConfig(
        vocab_size=8,
        hidden_size=config.head_dim * 2,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        rope_theta=config.rope_theta,
    )


def test_meta_build_gives_computed_buffers_their_values_and_loads_exactly(tmp_path):
    from modelcore.modeling_utils import init_empty_weights

    model = tiny_bert(BertForMaskedLM, max_position_embeddings=40)
    model.save_pretrained(tmp_path)
    with init_empty_weights():
        empty = BertForMaskedLM(model.config)
    embeddings = empty.bert.embeddings
    assert embeddings.word_embeddings.weight.is_meta
    assert torch.equal(embeddings.position_ids, torch.arange(40)[None])  # computed at init, not in the checkpoint
    assert torch.equal(embeddings.token_type_ids, torch.zeros(1, 40, dtype=torch.long))
    loaded = BertForMaskedLM.from_pretrained(tmp_path)
    assert_same_state(model, loaded)
    assert torch.equal(loaded.bert.embeddings.position_ids, model.bert.embeddings.position_ids)
    ids = torch.tensor([[1, 5, 9, 2]])
    torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)


def test_building_empty_in_one_thread_leaves_other_threads_building_normally():
    import threading

    from modelcore.modeling_utils import init_empty_weights

    inside, built = threading.Event(), threading.Event()
    results = {}

    def build_empty():
        with init_empty_weights():
            inside.set()
            built.wait(timeout=30)
            results["empty"] = torch.nn.Linear(4, 4)

    torch.manual_seed(0)
    expected_linear = torch.nn.Linear(4, 4).weight.detach().clone()
    thread = threading.Thread(target=build_empty)
    thread.start()
    assert inside.wait(timeout=30)
    try:
        results["normal"] = tiny_llama()  # in this thread, while the other one is inside init_empty_weights
        torch.manual_seed(0)
        results["linear"] = torch.nn.Linear(4, 4)  # torch's own init (nn.init.kaiming_uniform_) must run here
    finally:
        built.set()
        thread.join(timeout=30)
    # Before, init_empty_weights patched nn.Module.register_parameter for every thread.
    normal = results["normal"]
    assert not any(p.is_meta for p in normal.parameters())
    assert normal.model.layers[0].mlp.up_proj.weight.std() > 0.01  # initialized, not skipped
    assert torch.equal(results["linear"].weight, expected_linear)
    assert results["empty"].weight.is_meta
    assert torch.nn.init.normal_ is not None and not hasattr(torch.nn.init.normal_, "__wrapped__")  # restored


def test_device_map_auto_on_tied_weights_says_only_what_modelcore_did(tmp_path, caplog):
    """accelerate's "weights are not tied" and "parameters on the meta device" notices do not reach the user."""
    model = tiny_llama(tie_word_embeddings=True)
    model.save_pretrained(tmp_path / "ckpt")
    with caplog.at_level(logging.INFO):
        placed = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt", device_map="auto")
        offloaded = LlamaForCausalLM.from_pretrained(
            tmp_path / "ckpt", device_map="auto", max_memory={"cpu": "1KB"}, offload_folder=tmp_path / "off"
        )
    assert placed.lm_head.weight is placed.model.embed_tokens.weight
    accelerate_warnings = [
        r.getMessage() for r in caplog.records if r.name.startswith("accelerate") and r.levelno >= logging.WARNING
    ]
    assert accelerate_warnings == []
    assert any(f"offloaded to disk in {tmp_path / 'off'}" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(offloaded(IDS).logits, model(IDS).logits, rtol=0, atol=1e-6)
