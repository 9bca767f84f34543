"""GGUF checkpoints: config from metadata, dequantized weights under Hugging Face names, tokenizer from metadata.

Fast tests write tiny GGUF files the way llama.cpp's converter does (q/k rows permuted, llama.cpp names,
``llama.*`` metadata, a byte-level BPE vocabulary) and read them back. Slow tests load the real
SmolLM2-135M-Instruct Q4_1 file and compare tokenizer ids, logits and greedy choices with transformers'
own GGUF loader.
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from modelcore import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from modelcore.models.llama import LlamaConfig, LlamaForCausalLM
from modelcore.serialization import gguf as mc_gguf
from modelcore.serialization.gguf import GGUFError, unpermute_rope_rows
from modelcore.serialization.sources import resolve_source

gguf = pytest.importorskip("gguf")

TINY = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1987, 12345 people watched the game; it's the biggest crowd they'd seen.",
    "Tokenizers split text into pieces: words, digits and punctuation!",
    "A GGUF file stores the vocabulary, merges and special tokens as metadata.",
] * 5
HF_LAYER = {  # Hugging Face module -> llama.cpp tensor, as llama.cpp's converter renames them
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
HF_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


# --------------------------------------------------------------------------- helpers
def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to q/k rows: per head, halves (2, hs/2) become pairs (hs/2, 2)."""
    rows = weight.shape[0]
    return weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_name(hf_name: str) -> str:
    module, _, kind = hf_name.rpartition(".")
    if module.startswith("model.layers."):
        _, _, layer, rest = module.split(".", 3)
        return f"blk.{layer}.{HF_LAYER[rest]}.{kind}"
    return f"{HF_GLOBAL[module]}.{kind}"


def train_bpe(pre: str) -> BackendTokenizer:
    """A tiny byte-level BPE (vocab 300) with the split llama.cpp's pre-tokenizer ``pre`` names."""
    backend = BackendTokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        byte_level = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY["vocab_size"], special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS, trainer)
    return backend


def write_gguf(
    path,
    model: LlamaForCausalLM | None,
    *,
    arch: str = "llama",
    qtype=None,
    bpe: BackendTokenizer | None = None,
    pre: str = "gpt-2",
    add_bos: bool = False,
    raw_tensors: dict | None = None,
):
    """Write ``model`` (and ``bpe``) as llama.cpp's converter would; ``qtype`` quantizes the 2-D weights it can."""
    writer = gguf.GGUFWriter(str(path), arch)
    if model is not None:
        c = model.config
        writer.add_context_length(c.max_position_embeddings)
        writer.add_embedding_length(c.hidden_size)
        writer.add_block_count(c.num_hidden_layers)
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_head_count(c.num_attention_heads)
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        writer.add_rope_freq_base(c.rope_theta)
        writer.add_rope_dimension_count(c.head_dim)
        writer.add_file_type(0 if qtype is None else 7)
        heads = {"q_proj": c.num_attention_heads, "k_proj": c.num_key_value_heads}
        for name, tensor in model._state_dict_for_saving().items():
            data = tensor.detach().float().numpy()
            projection = name.rsplit(".", 2)[-2]
            if projection in heads:
                data = llama_cpp_permute(data, heads[projection])
            if qtype is not None and data.ndim == 2 and data.shape[1] % 32 == 0:
                writer.add_tensor(gguf_name(name), gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            else:
                writer.add_tensor(gguf_name(name), data)
    for name, (data, raw_dtype) in (raw_tensors or {}).items():
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    if bpe is not None:
        spec = json.loads(bpe.to_str())["model"]
        tokens = sorted(spec["vocab"], key=spec["vocab"].get)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["merges"]])
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_pad_token_id(2)
        writer.add_add_bos_token(add_bos)
        writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_bpe():
    return train_bpe("gpt-2")


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=True)).eval()


@pytest.fixture
def tiny_gguf(tmp_path, tiny_model, tiny_bpe):
    return write_gguf(tmp_path / "tiny.gguf", tiny_model, bpe=tiny_bpe)


# --------------------------------------------------------------------------- unit tests
@pytest.mark.parametrize("rows, heads", [(32, 4), (16, 2), (64, 1)])
def test_unpermute_inverts_llama_cpp_permute(rows, heads):
    weight = np.random.default_rng(0).standard_normal((rows, 8)).astype(np.float32)
    bias = np.arange(rows, dtype=np.float32)
    for original in (weight, bias):
        stored = torch.from_numpy(llama_cpp_permute(original, heads))
        assert not torch.equal(stored, torch.from_numpy(original))
        assert torch.equal(unpermute_rope_rows(stored, heads), torch.from_numpy(original))


def test_tensor_names_map_to_hugging_face_llama():
    assert mc_gguf.hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert mc_gguf.hf_tensor_name("blk.11.attn_q.weight") == "model.layers.11.self_attn.q_proj.weight"
    assert mc_gguf.hf_tensor_name("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight"
    assert mc_gguf.hf_tensor_name("blk.2.attn_k.bias") == "model.layers.2.self_attn.k_proj.bias"
    assert mc_gguf.hf_tensor_name("output_norm.weight") == "model.norm.weight"
    assert mc_gguf.hf_tensor_name("output.weight") == "lm_head.weight"
    assert mc_gguf.hf_tensor_name("blk.0.attn_rot_embd") is None


def test_config_from_metadata(tiny_gguf):
    config = AutoConfig.from_pretrained(tiny_gguf)
    assert isinstance(config, LlamaConfig)
    for key, value in TINY.items():
        assert getattr(config, key) == value, key
    assert config.tie_word_embeddings is True  # no output.weight in the file
    assert config.head_dim == 16 and config.dtype == "float32"
    assert LlamaConfig.from_pretrained(tiny_gguf) == config


@pytest.mark.parametrize("tie", [True, False])
def test_f32_file_loads_the_exact_weights_and_logits(tmp_path, tiny_bpe, tie):
    torch.manual_seed(0)
    original = LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=tie)).eval()
    path = write_gguf(tmp_path / "tiny.gguf", original, bpe=tiny_bpe)
    loaded, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert loaded.config.tie_word_embeddings is tie
    expected = original.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name  # q/k rows un-permuted exactly
    ids = torch.randint(0, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(loaded(ids).logits, original(ids).logits)


def test_quantized_file_dequantizes_like_gguf(tmp_path, tiny_model):
    q8 = gguf.GGMLQuantizationType.Q8_0
    path = write_gguf(tmp_path / "q8.gguf", tiny_model, qtype=q8)
    loaded = AutoModelForCausalLM.from_pretrained(path)
    reader = gguf.GGUFReader(path)
    stored = {t.name: t for t in reader.tensors}
    assert stored["blk.0.attn_q.weight"].tensor_type == q8
    q = torch.from_numpy(gguf.dequantize(stored["blk.0.attn_q.weight"].data, q8))
    assert torch.equal(loaded.model.layers[0].self_attn.q_proj.weight, unpermute_rope_rows(q, 4))
    for name, tensor in loaded.state_dict().items():  # Q8_0 keeps every weight within 1% of its block's range
        torch.testing.assert_close(tensor, tiny_model.state_dict()[name], atol=2e-3, rtol=0)


def test_dtype_and_bare_model(tiny_gguf, tiny_model):
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_gguf, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.config.dtype == "bfloat16"
    bare, info = AutoModel.from_pretrained(tiny_gguf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(bare.embed_tokens.weight, tiny_model.model.embed_tokens.weight)


def test_save_pretrained_after_gguf_load_round_trips(tiny_gguf, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_gguf)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gguf)
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    for name, tensor in again.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    text = CORPUS[1]
    assert AutoTokenizer.from_pretrained(tmp_path / "hf")(text).input_ids == tokenizer(text).input_ids


def test_sources_resolve_gguf_files_and_directories(tmp_path, tiny_gguf):
    assert resolve_source(tiny_gguf) == tiny_gguf
    assert resolve_source(tiny_gguf.parent) == tiny_gguf  # the one .gguf of a directory without config.json
    (tmp_path / "copy.gguf").write_bytes(tiny_gguf.read_bytes())
    with pytest.raises(ValueError, match="several GGUF files"):
        resolve_source(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert resolve_source(tmp_path) == tmp_path  # a Hugging Face layout wins


# --------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("pre", ["gpt-2", "smollm"])
def test_tokenizer_matches_the_vocabulary_it_was_built_from(tmp_path, pre):
    reference = train_bpe(pre)
    path = write_gguf(tmp_path / "tok.gguf", None, bpe=reference, pre=pre)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [*CORPUS[:4], "Numbers 2024 and 3.14159 in text", "  leading spaces\n\nnew lines\ttabs"]
    for text in texts:
        assert tokenizer(text).input_ids == reference.encode(text).ids, text
        assert tokenizer.decode(tokenizer(text).input_ids) == text
    assert tokenizer("<|im_start|>hi<|im_end|>").input_ids[0] == 1  # control tokens stay whole
    assert tokenizer.bos_token == "<|im_start|>" and tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.unk_token is None  # no unknown token id in the file
    assert tokenizer.decode([1, *tokenizer("hi").input_ids, 2], skip_special_tokens=True) == "hi"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "<|im_start|>hi<|im_end|>"


def test_tokenizer_adds_bos_when_the_file_says_so(tmp_path, tiny_bpe):
    path = write_gguf(tmp_path / "bos.gguf", None, bpe=tiny_bpe, add_bos=True)
    ids = AutoTokenizer.from_pretrained(path)("hello").input_ids
    assert ids[0] == 1 and ids[1:] == tiny_bpe.encode("hello").ids


def test_unknown_pre_tokenizer_warns_and_splits_like_gpt2(tmp_path, tiny_bpe, caplog):
    path = write_gguf(tmp_path / "pre.gguf", None, bpe=tiny_bpe, pre="some-future-model")
    with caplog.at_level(logging.WARNING):
        tokenizer = AutoTokenizer.from_pretrained(path)
    assert "tokenizer.ggml.pre 'some-future-model'" in caplog.text and str(path) in caplog.text
    assert tokenizer(CORPUS[0]).input_ids == tiny_bpe.encode(CORPUS[0]).ids


# --------------------------------------------------------------------------- bad input
def test_truncated_file_is_named(tiny_gguf):
    data = tiny_gguf.read_bytes()
    for size in (2, 64, len(data) // 2, len(data) - 100):
        tiny_gguf.write_bytes(data[:size])
        with pytest.raises(GGUFError, match="tiny.gguf") as err:
            AutoModelForCausalLM.from_pretrained(tiny_gguf)
        assert "truncated or corrupt" in str(err.value) or "not a GGUF file" in str(err.value)


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not GGUF" * 4)
    with pytest.raises(GGUFError, match=r"fake\.gguf: not a GGUF file"):
        AutoConfig.from_pretrained(path)


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "gpt2.gguf", None, arch="gpt2")
    with pytest.raises(GGUFError, match=r"gpt2\.gguf: general\.architecture is 'gpt2'"):
        AutoModelForCausalLM.from_pretrained(path)


def test_missing_required_metadata(tmp_path):
    path = write_gguf(tmp_path / "bare.gguf", None)
    with pytest.raises(GGUFError, match=r"bare\.gguf: metadata key\(s\) llama\.embedding_length"):
        AutoConfig.from_pretrained(path)


def test_unsupported_quantization_type(tmp_path, tiny_model):
    q8_1 = gguf.GGMLQuantizationType.Q8_1  # a block type the gguf package cannot dequantize
    blocks = np.zeros((4, 40), dtype=np.uint8)  # 4 rows of one 32-element Q8_1 block (40 bytes)
    path = write_gguf(tmp_path / "q81.gguf", tiny_model, raw_tensors={"blk.0.extra.weight": (blocks, q8_1)})
    with pytest.raises(GGUFError, match=r"q81\.gguf: tensor 'blk\.0\.extra\.weight' is stored as Q8_1"):
        AutoModelForCausalLM.from_pretrained(path)


def test_unsupported_tokenizer_model(tmp_path, tiny_model):
    path = write_gguf(tmp_path / "notok.gguf", tiny_model)
    with pytest.raises(GGUFError, match=r"notok\.gguf: tokenizer\.ggml\.model is None"):
        AutoTokenizer.from_pretrained(path)


def test_missing_gguf_package_says_how_to_install(tiny_gguf, monkeypatch):
    mc_gguf._cached_reader.cache_clear()
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match=r"modelcore\[gguf\]"):
        AutoConfig.from_pretrained(tiny_gguf)


# --------------------------------------------------------------------------- the real SmolLM2 file
@pytest.fixture(scope="module")
def smollm2():
    from modelcore import assets

    path = assets.fetch("smollm2-135m-gguf")
    hf_args = (str(path.parent),), {"gguf_file": path.name}
    ours = AutoModelForCausalLM.from_pretrained("smollm2-135m-gguf"), AutoTokenizer.from_pretrained(path)
    return path, ours, hf_args


@pytest.fixture(scope="module")
def hf_smollm2(smollm2):
    transformers = pytest.importorskip("transformers")
    _, _, (args, kwargs) = smollm2
    model = transformers.AutoModelForCausalLM.from_pretrained(*args, **kwargs, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(*args, **kwargs)


@pytest.fixture(scope="module")
def wiki_texts():
    from modelcore import assets

    with open(assets.fetch("wikipedia-summaries"), encoding="utf-8") as f:
        return [entry["extract"] for entry in json.load(f).values() if entry.get("extract")]


@pytest.mark.slow
def test_real_config(smollm2):
    path, (model, tokenizer), _ = smollm2
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert (c.intermediate_size, c.vocab_size, c.rope_theta, c.rms_norm_eps) == (1536, 49152, 100000.0, 1e-5)
    assert c.tie_word_embeddings and (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, 2)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert resolve_source(path.parent) == path and len(tokenizer) == 49152


@pytest.mark.slow
def test_real_tokenizer_ids_match_transformers(smollm2, hf_smollm2, wiki_texts):
    _, (_, ours), _ = smollm2
    _, hf = hf_smollm2
    # every 5th article (~2,000, ~200k tokens: names, dates, numbers, accents, quotes); all 10,033 matched when measured
    texts = wiki_texts[::5] + [
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
        "  two  spaces\n\n\ttab",
        "Ünïcödé 日本語 🙂",
    ]
    ours_ids, hf_ids = ours(texts).input_ids, hf(texts).input_ids
    for text, a, b in zip(texts, ours_ids, hf_ids, strict=True):
        assert a == b, text[:80]
    for text, ids in list(zip(texts, ours_ids, strict=True))[:50]:
        assert ours.decode(ids) == hf.decode(ids) == text
    # One known difference: llama.cpp's "smollm" split isolates every \p{N} character before BPE (as SmolLM2's own
    # tokenizer.json does with Digits), transformers' GGUF tokenizer does not: " ½" is "Ġ" + "Â½" for llama.cpp
    # and us, "ĠÂ" + "½" for transformers.
    assert ours.convert_ids_to_tokens(ours(" ½").input_ids) == ["Ġ", "Â½"]
    assert hf.convert_ids_to_tokens(hf(" ½").input_ids) == ["ĠÂ", "½"]
    chat = [{"role": "user", "content": "Name a planet."}]
    assert ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == hf.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True
    )


@pytest.mark.slow
def test_real_logits_match_transformers(smollm2, hf_smollm2, wiki_texts):
    _, (model, tokenizer), _ = smollm2
    hf_model, _ = hf_smollm2
    worst = 0.0
    for text in wiki_texts[:4]:
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :128]
        with torch.inference_mode():
            ours, theirs = model(ids).logits, hf_model(ids).logits
        worst = max(worst, (ours - theirs).abs().max().item())
    assert worst <= 1e-4  # measured: 0.0 (same dequantized weights, same fp32 arithmetic)


@pytest.mark.slow
def test_real_greedy_next_token_matches_transformers(smollm2, hf_smollm2):
    _, (model, tokenizer), _ = smollm2
    hf_model, _ = hf_smollm2
    prompts = ["The capital of France is", "def fibonacci(n):\n   ", "Water boils at a temperature of"]
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            ours, theirs = model(ids).logits[0, -1], hf_model(ids).logits[0, -1]
        assert ours.argmax().item() == theirs.argmax().item(), prompt
    ids = tokenizer(prompts[0], return_tensors="pt").input_ids
    with torch.inference_mode():
        assert tokenizer.decode(model(ids).logits[0, -1].argmax().item()) == " Paris"
