"""Whisper: configuration, model, generate and the CTranslate2 converter, checked against Hugging Face transformers.

Tiny random configurations give both libraries the same weights and compare logits, losses, cached decoding
and generated tokens in fp32. The slow tests convert the real whisper-tiny.en asset and transcribe real speech
(Debian's Asterisk prompts, see ``whisper_assets``) with both libraries from the same converted folder.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelcore.configuration_utils import ConfigError
from modelcore.errors import CheckpointError, DataError
from modelcore.models.whisper.configuration_whisper import WhisperConfig
from modelcore.models.whisper.convert_ctranslate2 import convert, read_ctranslate2_model
from modelcore.models.whisper.modeling_whisper import WhisperCache, WhisperForConditionalGeneration, WhisperModel
from modelcore.models.whisper.processing_whisper import WhisperProcessor
from tests.modelcore.models import whisper_assets

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
START, NO_TIMESTAMPS, EOS = 100, 101, 99
TINY = dict(
    vocab_size=120,
    num_mel_bins=16,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=48,
    decoder_ffn_dim=48,
    max_source_positions=30,
    max_target_positions=40,
    decoder_start_token_id=START,
    pad_token_id=EOS,
    bos_token_id=START,
    eos_token_id=EOS,
    suppress_tokens=[3, 5],
    begin_suppress_tokens=[7, EOS],
)
FRAMES = 2 * TINY["max_source_positions"]


# --------------------------------------------------------------------------- helpers
def tiny_pair(seed: int = 0, attn_implementation: str = "eager", scale: float = 0.05):
    """The same tiny Whisper in both libraries, with non-trivial weights (norms and biases too)."""
    torch.manual_seed(seed)
    hf_config = transformers.WhisperConfig(**TINY)
    hf_config._attn_implementation = attn_implementation
    hf = transformers.WhisperForConditionalGeneration(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * scale)
    ours = WhisperForConditionalGeneration(
        WhisperConfig(**TINY, forced_decoder_ids=[[1, NO_TIMESTAMPS]], attn_implementation=attn_implementation)
    ).eval()
    result = ours.load_state_dict(hf.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours, hf


def features(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, TINY["num_mel_bins"], FRAMES, generator=torch.Generator().manual_seed(seed))


def hf_generate(hf, feats: torch.Tensor, **kwargs) -> torch.Tensor:
    """transformers' Whisper generate from the same prompt: <|startoftranscript|><|notimestamps|>."""
    hf.generation_config.forced_decoder_ids = None
    prompt = torch.tensor([[START, NO_TIMESTAMPS]]).expand(feats.shape[0], -1)
    return hf.generate(feats, decoder_input_ids=prompt, **kwargs)


# --------------------------------------------------------------------------- configuration
def test_config_round_trips_and_validates(tmp_path):
    config = WhisperConfig(**TINY, forced_decoder_ids=[[1, NO_TIMESTAMPS]])
    config.save_pretrained(tmp_path)
    assert WhisperConfig.from_pretrained(tmp_path) == config
    hf = transformers.WhisperConfig.from_pretrained(tmp_path)
    assert (hf.d_model, hf.encoder_layers, hf.suppress_tokens) == (32, 2, [3, 5])
    with pytest.raises(ConfigError, match="d_model"):
        WhisperConfig(d_model=30, encoder_attention_heads=4)
    with pytest.raises(ConfigError, match="suppress_tokens"):
        WhisperConfig(**{**TINY, "suppress_tokens": [120]})
    with pytest.raises(TypeError):
        WhisperConfig(d_modle=32)


# --------------------------------------------------------------------------- forward parity
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_and_loss_match_transformers(attn_implementation):
    ours, hf = tiny_pair(attn_implementation=attn_implementation)
    feats = features()
    labels = torch.tensor([[NO_TIMESTAMPS, 10, 11, 12, EOS], [NO_TIMESTAMPS, 20, 21, -100, -100]])
    with torch.no_grad():
        theirs = hf(input_features=feats, labels=labels)
        mine = ours(input_features=feats, labels=labels)
    torch.testing.assert_close(mine.logits, theirs.logits, rtol=0, atol=ATOL)
    torch.testing.assert_close(mine.loss, theirs.loss, rtol=0, atol=ATOL)
    torch.testing.assert_close(mine.encoder_last_hidden_state, theirs.encoder_last_hidden_state, rtol=0, atol=ATOL)


def test_bare_model_and_backward():
    ours, hf = tiny_pair()
    bare = WhisperModel(ours.config)
    bare.load_state_dict({k.removeprefix("model."): v for k, v in ours.state_dict().items() if k != "proj_out.weight"})
    ids = torch.tensor([[START, NO_TIMESTAMPS, 10, 11]])
    with torch.no_grad():
        theirs = hf.model(input_features=features(1), decoder_input_ids=ids).last_hidden_state
    torch.testing.assert_close(bare(features(1), decoder_input_ids=ids).last_hidden_state, theirs, rtol=0, atol=ATOL)
    ours.train()
    ours(input_features=features(), labels=torch.tensor([[10, 11, EOS], [12, EOS, -100]])).loss.backward()
    trainable = [(n, p) for n, p in ours.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    assert ours.model.encoder.embed_positions.weight.grad is None  # fixed sinusoids, as transformers


def test_cached_decoding_equals_the_full_forward():
    ours, _ = tiny_pair()
    feats, ids = (
        features(),
        torch.tensor([[START, NO_TIMESTAMPS, 10, 11, 12, 13], [START, NO_TIMESTAMPS, 20, 21, 22, 23]]),
    )
    with torch.no_grad():
        full = ours(input_features=feats, decoder_input_ids=ids).logits
        encoder = ours.model.encoder(feats).last_hidden_state
        cache = WhisperCache()
        first = ours(encoder_outputs=encoder, decoder_input_ids=ids[:, :3], past_key_values=cache).logits
        steps = [
            ours(encoder_outputs=encoder, decoder_input_ids=ids[:, i : i + 1], past_key_values=cache).logits
            for i in range(3, 6)
        ]
    assert cache.get_seq_length() == 6 and set(cache.cross_attention) == {0, 1}
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, rtol=0, atol=ATOL)


def test_encoder_refuses_features_that_are_not_30_seconds():
    ours, _ = tiny_pair()
    with pytest.raises(ValueError, match=rf"\(batch, 16, {FRAMES}\).*30 s"):
        ours(input_features=torch.zeros(1, 16, FRAMES - 2), decoder_input_ids=torch.tensor([[START]]))


# --------------------------------------------------------------------------- generate
@pytest.mark.parametrize("seed", [0, 5])
def test_generate_equals_transformers(seed):
    ours, hf = tiny_pair(seed=seed, scale=0.5)  # large weights: varied tokens, rows that end at different steps
    feats = features(3, seed=seed)
    expected = hf_generate(hf, feats, max_new_tokens=12)
    mine = ours.generate(feats, max_new_tokens=12)
    assert mine.tolist() == expected.tolist()
    assert len(set(mine.flatten().tolist())) > 2  # not one token repeated


def test_generate_suppresses_tokens_and_stops_at_eos():
    ours, hf = tiny_pair(seed=1, scale=0.3)  # rows 0 and 2 meet EOS after 5 and 6 tokens, row 1 never
    feats = features(3, seed=1)
    mine = ours.generate(feats, max_new_tokens=20)
    assert mine.tolist() == hf_generate(hf, feats, max_new_tokens=20).tolist()
    assert mine.shape == (3, 20)
    assert (mine[0, 5:] == EOS).all() and (mine[2, 6:] == EOS).all() and not (mine[1] == EOS).any()
    assert not (mine[0, :5] == EOS).any() and not (mine[2, :6] == EOS).any()  # EOS itself is cut, then padding
    assert not set(mine.flatten().tolist()) & {3, 5}  # suppress_tokens
    assert all(row[0] not in (7, EOS) for row in mine.tolist())  # begin_suppress_tokens
    finished = ours.generate(feats[[0, 2]], max_new_tokens=20)
    assert finished.shape == (2, 6)  # both rows ended: cut after the longer text


def test_generate_budget_and_prompt_errors():
    ours, _ = tiny_pair()
    with pytest.raises(ValueError, match="max_target_positions"):
        ours.generate(features(1), max_new_tokens=TINY["max_target_positions"])
    ours.config.forced_decoder_ids = [[1, None]]  # a language to detect
    with pytest.raises(ValueError, match="language detection is not supported"):
        ours.generate(features(1), max_new_tokens=2)
    with pytest.raises(ValueError, match="greedily"):
        ours.generate(features(1), decoder_input_ids=torch.tensor([[START]]), do_sample=True)


# --------------------------------------------------------------------------- save / load both ways
def test_save_load_both_ways(tmp_path):
    ours, hf = tiny_pair()
    feats, ids = features(), torch.tensor([[START, NO_TIMESTAMPS, 10, 11], [START, NO_TIMESTAMPS, 20, 21]])
    with torch.no_grad():
        expected = ours(input_features=feats, decoder_input_ids=ids).logits
    ours.save_pretrained(tmp_path / "ours", max_shard_size="50KB")
    assert len(list((tmp_path / "ours").glob("model-*.safetensors"))) > 1
    theirs = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            theirs(input_features=feats, decoder_input_ids=ids).logits, expected, rtol=0, atol=ATOL
        )
    hf.save_pretrained(tmp_path / "theirs")
    again = WhisperForConditionalGeneration.from_pretrained(tmp_path / "theirs")
    assert again.proj_out.weight is again.model.decoder.embed_tokens.weight  # tied again after loading
    with torch.no_grad():
        torch.testing.assert_close(
            again(input_features=feats, decoder_input_ids=ids).logits, expected, rtol=0, atol=ATOL
        )


# --------------------------------------------------------------------------- the converter on a synthetic file
def _ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _ct2_variable(name: str, array: np.ndarray) -> bytes:
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    data = np.ascontiguousarray(array).tobytes()
    header = struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
    return _ct2_string(name) + header + struct.pack("<BI", dtype_ids[array.dtype], len(data)) + data


def write_ct2_whisper(folder: Path, hf_model) -> dict[str, np.ndarray]:
    """A CTranslate2 WhisperSpec folder holding ``hf_model``'s weights (fused as CTranslate2's converter fuses)."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in hf_model.state_dict().items()}
    c = hf_model.config.d_model
    zeros = np.zeros(c, np.float16)
    v: dict[str, np.ndarray] = {
        "decoder/activation": np.array(3, np.int8),
        "decoder/pre_norm": np.array(1, np.int8),
        "decoder/scale_embeddings": np.array(0, np.int8),
        "encoder/num_heads": np.array(4, np.int16),
        "decoder/num_heads": np.array(4, np.int16),
    }

    def lin(src, dst):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def ln(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    for stack, n in (("encoder", 2), ("decoder", 2)):
        for i in range(n):
            s, d = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            v[f"{d}/self_attention/linear_0/weight"] = np.concatenate(
                [sd[f"{s}.self_attn.{p}_proj.weight"] for p in "qkv"]
            )
            v[f"{d}/self_attention/linear_0/bias"] = np.concatenate(
                [sd[f"{s}.self_attn.q_proj.bias"], zeros, sd[f"{s}.self_attn.v_proj.bias"]]
            )
            lin(f"{s}.self_attn.out_proj", f"{d}/self_attention/linear_1")
            ln(f"{s}.self_attn_layer_norm", f"{d}/self_attention/layer_norm")
            if stack == "decoder":
                lin(f"{s}.encoder_attn.q_proj", f"{d}/attention/linear_0")
                v[f"{d}/attention/linear_1/weight"] = np.concatenate(
                    [sd[f"{s}.encoder_attn.{p}_proj.weight"] for p in "kv"]
                )
                v[f"{d}/attention/linear_1/bias"] = np.concatenate([zeros, sd[f"{s}.encoder_attn.v_proj.bias"]])
                lin(f"{s}.encoder_attn.out_proj", f"{d}/attention/linear_2")
                ln(f"{s}.encoder_attn_layer_norm", f"{d}/attention/layer_norm")
            lin(f"{s}.fc1", f"{d}/ffn/linear_0")
            lin(f"{s}.fc2", f"{d}/ffn/linear_1")
            ln(f"{s}.final_layer_norm", f"{d}/ffn/layer_norm")
        ln(f"model.{stack}.layer_norm", f"{stack}/layer_norm")
        v[f"{stack}/position_encodings/encodings"] = sd[f"model.{stack}.embed_positions.weight"]
    lin("model.encoder.conv1", "encoder/conv1")
    lin("model.encoder.conv2", "encoder/conv2")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    body = b"".join(_ct2_variable(name, array) for name, array in v.items())
    alias = _ct2_string("decoder/projection/weight") + _ct2_string("decoder/embeddings/weight")
    blob = (
        struct.pack("<I", 6)
        + _ct2_string("WhisperSpec")
        + struct.pack("<II", 3, len(v))
        + body
        + struct.pack("<I", 1)
        + alias
    )
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(blob)
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [3, 5], "suppress_ids_begin": [7, EOS]}))
    vocab = {f"t{i}": i for i in range(EOS)}
    specials = {"<|endoftext|>": EOS, "<|startoftranscript|>": START, "<|notimestamps|>": NO_TIMESTAMPS}
    tokenizer = {
        "version": "1.0",
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "special": True,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
            }
            for t, i in specials.items()
        ],
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return v


def test_converter_maps_every_tensor_and_transformers_loads_it(tmp_path):
    _, hf = tiny_pair()
    written = write_ct2_whisper(tmp_path / "ct2", hf)
    parsed = read_ctranslate2_model(tmp_path / "ct2" / "model.bin")
    assert (
        parsed.spec == "WhisperSpec"
        and parsed.variables["decoder/projection/weight"] is parsed.variables["decoder/embeddings/weight"]
    )
    for name, array in written.items():
        np.testing.assert_array_equal(parsed.variables[name], array, err_msg=name)

    convert(tmp_path / "ct2", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["vocab_size"], config["d_model"], config["encoder_layers"], config["decoder_attention_heads"]) == (
        120,
        32,
        2,
        4,
    )
    assert config["forced_decoder_ids"] is not None and config["suppress_tokens"] == [3, 5]
    converted, info = transformers.WhisperForConditionalGeneration.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, tensor in hf.state_dict().items():  # fp16 in the CTranslate2 file: equal after rounding to fp16
        torch.testing.assert_close(converted.state_dict()[name], tensor.half().float(), rtol=0, atol=0, msg=name)
    ours = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf")
    feats = features()
    assert ours.generate(feats, max_new_tokens=5).tolist() == converted.generate(feats, max_new_tokens=5).tolist()


def test_converter_cli_and_refusals(tmp_path):
    _, hf = tiny_pair()
    write_ct2_whisper(tmp_path / "ct2", hf)
    command = [
        sys.executable,
        "-m",
        "modelcore.models.whisper.convert_ctranslate2",
        str(tmp_path / "ct2"),
        str(tmp_path / "hf"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "hf").iterdir()} >= {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    }
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwritten unless asked

    blob = (tmp_path / "ct2" / "model.bin").read_bytes()
    (tmp_path / "ct2" / "model.bin").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"model\.bin: truncated or corrupt CTranslate2 file: .* of 'decoder/"):
        read_ctranslate2_model(tmp_path / "ct2" / "model.bin")
    (tmp_path / "ct2" / "model.bin").write_bytes(struct.pack("<I", 9) + blob[4:])
    with pytest.raises(CheckpointError, match="binary version 9 is not supported"):
        convert(tmp_path / "ct2", tmp_path / "other")
    assert not (tmp_path / "other").exists()  # nothing half-written


def test_converter_refuses_quantized_models(tmp_path):
    _, hf = tiny_pair()
    written = write_ct2_whisper(tmp_path / "ct2", hf)
    name = "encoder/layer_0/ffn/linear_0/weight"
    quantized = dict(written, **{name: written[name].astype(np.int8), name + "_scale": np.ones(48, np.float32)})
    body = b"".join(_ct2_variable(n, a) for n, a in quantized.items())
    header = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, len(quantized))
    (tmp_path / "ct2" / "model.bin").write_bytes(header + body + struct.pack("<I", 0))
    with pytest.raises(CheckpointError, match=r"model\.bin: a quantized CTranslate2 model .*_scale.*float16"):
        convert(tmp_path / "ct2", tmp_path / "hf")


# --------------------------------------------------------------------------- the real whisper-tiny.en on real speech
@pytest.fixture(scope="module")
def tiny_en_dir() -> Path:
    return whisper_assets.converted_whisper_dir()


@pytest.mark.slow
def test_real_conversion_tensor_by_tensor(tiny_en_dir):
    """Every converted tensor equals its slice of model.bin; transformers loads the folder with nothing missing."""
    from modelcore import assets

    parsed = read_ctranslate2_model(assets.fetch("whisper-tiny-en") / "model.bin").variables
    hf, info = transformers.WhisperForConditionalGeneration.from_pretrained(tiny_en_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = hf.state_dict()
    checked = 0
    for name, tensor in state.items():
        source, rows = ct2_source(name, hf.config.d_model)
        if source is None:
            continue
        expected = torch.from_numpy(parsed[source].astype(np.float32))[rows]
        assert torch.equal(tensor, expected), name
        checked += 1
    assert checked == len(state) == 167 + 1  # proj_out.weight (tied) compared with decoder/projection/weight


def ct2_source(hf_name: str, d_model: int):
    """The CTranslate2 variable (and row slice) an HF Whisper tensor comes from, written independently of the converter."""
    m = re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.*)\.(weight|bias)$", hf_name)
    attr = {"weight": "weight", "bias": "bias"}
    if m:
        stack, i, part, kind = m.groups()
        base = f"{stack}/layer_{i}"
        fused = {
            "self_attn.q_proj": ("self_attention/linear_0", 0),
            "self_attn.k_proj": ("self_attention/linear_0", 1),
            "self_attn.v_proj": ("self_attention/linear_0", 2),
            "encoder_attn.k_proj": ("attention/linear_1", 0),
            "encoder_attn.v_proj": ("attention/linear_1", 1),
        }
        if part in fused:
            src, k = fused[part]
            return f"{base}/{src}/{attr[kind]}", slice(k * d_model, (k + 1) * d_model)
        plain = {
            "self_attn.out_proj": "self_attention/linear_1",
            "encoder_attn.q_proj": "attention/linear_0",
            "encoder_attn.out_proj": "attention/linear_2",
            "fc1": "ffn/linear_0",
            "fc2": "ffn/linear_1",
        }
        norms = {
            "self_attn_layer_norm": "self_attention/layer_norm",
            "encoder_attn_layer_norm": "attention/layer_norm",
            "final_layer_norm": "ffn/layer_norm",
        }
        if part in plain:
            return f"{base}/{plain[part]}/{kind}", slice(None)
        return f"{base}/{norms[part]}/{'gamma' if kind == 'weight' else 'beta'}", slice(None)
    top = {
        "model.encoder.conv1.weight": "encoder/conv1/weight",
        "model.encoder.conv1.bias": "encoder/conv1/bias",
        "model.encoder.conv2.weight": "encoder/conv2/weight",
        "model.encoder.conv2.bias": "encoder/conv2/bias",
        "model.encoder.embed_positions.weight": "encoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight": "decoder/position_encodings/encodings",
        "model.decoder.embed_tokens.weight": "decoder/embeddings/weight",
        "proj_out.weight": "decoder/projection/weight",
        "model.encoder.layer_norm.weight": "encoder/layer_norm/gamma",
        "model.encoder.layer_norm.bias": "encoder/layer_norm/beta",
        "model.decoder.layer_norm.weight": "decoder/layer_norm/gamma",
        "model.decoder.layer_norm.bias": "decoder/layer_norm/beta",
    }
    return top.get(hf_name), slice(None)


@pytest.mark.slow
def test_real_transcripts_equal_transformers(tiny_en_dir):
    """Greedy tokens of the converted tiny.en equal transformers' on six real prompts (one batch each)."""
    clips = [whisper_assets.load_clip(name) for name in whisper_assets.TEST_CLIPS]
    processor = WhisperProcessor.from_pretrained(tiny_en_dir)
    feats = processor([c.audio for c in clips], sampling_rate=clips[0].sampling_rate)["input_features"]
    ours = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir).eval()
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(tiny_en_dir).eval()
    mine = ours.generate(feats)
    assert mine.tolist() == hf.generate(feats).tolist()
    texts = processor.batch_decode(mine, skip_special_tokens=True)
    for clip, text in zip(clips, texts, strict=True):
        assert text.strip() == clip.text, clip.name  # tiny.en gets each of these prompts exactly right


@pytest.mark.slow
def test_real_long_audio_is_transcribed_in_30_second_windows(tiny_en_dir):
    clip = whisper_assets.load_clip(whisper_assets.LONG_CLIP)  # 31.1 s at 8 kHz: two windows
    processor = WhisperProcessor.from_pretrained(tiny_en_dir)
    ours = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir).eval()
    text = processor.transcribe(ours, clip.audio, clip.sampling_rate, max_new_tokens=12)  # a short budget: fast

    audio = processor.feature_extractor.prepare_audio(clip.audio, clip.sampling_rate)
    first, second = audio[:480_000], audio[480_000:]
    assert len(second) > 16_000  # more than a second of speech past 30 s
    features = processor([first, second], sampling_rate=16_000)["input_features"]
    windows = [
        t.strip() for t in processor.batch_decode(ours.generate(features, max_new_tokens=12), skip_special_tokens=True)
    ]
    assert all(windows) and text == " ".join(windows)
    assert windows[0].startswith("Dial one. If you wish this")


@pytest.mark.slow
def test_real_transcribe_takes_wav_paths_and_arrays(tiny_en_dir):
    processor = WhisperProcessor.from_pretrained(tiny_en_dir)
    ours = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir).eval()
    clip = whisper_assets.load_clip("vm-msgforwarded")
    path = whisper_assets.sounds_dir() / "vm-msgforwarded.wav"
    assert processor.transcribe(ours, path) == clip.text  # the file's 8 kHz rate is read from it
    texts = processor.transcribe(ours, [str(path), clip.audio], sampling_rate=clip.sampling_rate)
    assert texts == [clip.text, clip.text]
    with pytest.raises(DataError, match="empty"):
        processor.transcribe(ours, [])


@pytest.mark.slow
def test_real_processor_round_trips_with_transformers(tiny_en_dir, tmp_path):
    ours = WhisperProcessor.from_pretrained(tiny_en_dir)
    theirs = transformers.WhisperProcessor.from_pretrained(tiny_en_dir)
    ids = [50257, 50362, 50364, 3406, 3275, 468, 587, 7675, 28308, 13, 50414, 50256]  # with two timestamp tokens
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids, skip_special_tokens=True) == " Your message has been successfully forwarded."
    assert ours(text="Hello world.")["input_ids"].tolist() == [theirs(text="Hello world.")["input_ids"]]

    ours.save_pretrained(tmp_path / "ours")
    again = transformers.WhisperProcessor.from_pretrained(tmp_path / "ours")
    assert again.feature_extractor.n_samples == 480000 and again.decode(ids, skip_special_tokens=True) == (
        " Your message has been successfully forwarded."
    )
    theirs.save_pretrained(tmp_path / "theirs")
    back = WhisperProcessor.from_pretrained(tmp_path / "theirs")
    assert (back.feature_extractor.feature_size, back.feature_extractor.chunk_length) == (80, 30)
    assert back.decode(ids, skip_special_tokens=True) == " Your message has been successfully forwarded."
