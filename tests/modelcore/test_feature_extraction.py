"""Audio feature extraction: Whisper's log-mel features against transformers' on real speech, resampling, bad input.

The real clips are Debian's Asterisk prompts (8 kHz, see ``tests/modelcore/models/whisper_assets.py``).
"""

from __future__ import annotations

import json
import logging
import wave

import numpy as np
import pytest
import torch

from modelcore.errors import DataError
from modelcore.feature_extraction import load_wav, resample
from modelcore.models.whisper.feature_extraction_whisper import WhisperFeatureExtractor, mel_filter_bank
from tests.modelcore.models import whisper_assets

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clips() -> list[whisper_assets.Clip]:
    return [whisper_assets.load_clip(name) for name in whisper_assets.TEST_CLIPS]


def test_mel_filters_equal_transformers():
    from transformers.audio_utils import mel_filter_bank as hf_mel_filter_bank

    expected = hf_mel_filter_bank(201, 80, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filter_bank(201, 80, 16000, 8000.0), expected, rtol=1e-12, atol=1e-15)


def test_features_equal_transformers_on_real_speech(clips):
    """Single clips and a batch (each clip normalised by its own maximum), 16 kHz input for both."""
    ours, theirs = WhisperFeatureExtractor(), transformers.WhisperFeatureExtractor()
    audio = [resample(c.audio, c.sampling_rate, 16000) for c in clips]
    batch = ours(audio, sampling_rate=16000)["input_features"]
    expected = theirs(audio, sampling_rate=16000, return_tensors="np")["input_features"]
    assert batch.shape == (len(clips), 80, 3000) and batch.dtype == torch.float32
    np.testing.assert_allclose(batch.numpy(), expected, rtol=0, atol=1e-4)
    single = ours(audio[0], sampling_rate=16000, return_tensors="np")["input_features"]
    np.testing.assert_allclose(single, theirs(audio[0], sampling_rate=16000)["input_features"], rtol=0, atol=1e-4)
    long = np.concatenate(audio * 12)  # > 30 s: cut to the first 30 s, as transformers does
    np.testing.assert_allclose(
        ours(long, sampling_rate=16000)["input_features"].numpy(),
        theirs(long, sampling_rate=16000)["input_features"],
        rtol=0,
        atol=1e-4,
    )


def test_other_rates_are_resampled_and_said_so(clips, caplog):
    """8 kHz audio with sampling_rate=8000 gives the features of the clip resampled to 16 kHz, and a warning."""
    extractor = WhisperFeatureExtractor()
    clip = clips[0]
    with caplog.at_level(logging.WARNING, logger="modelcore.feature_extraction"):
        features = extractor(clip.audio, sampling_rate=8000)["input_features"]
    assert "resampled from 8000 Hz to 16000 Hz" in caplog.text
    expected = transformers.WhisperFeatureExtractor()(resample(clip.audio, 8000, 16000), sampling_rate=16000)
    np.testing.assert_allclose(features.numpy(), expected["input_features"], rtol=0, atol=1e-4)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modelcore.feature_extraction"):
        extractor(clip.audio)  # no rate given: assumed 16 kHz, and said so
    assert "no sampling_rate given; assuming 16000 Hz" in caplog.text


@pytest.mark.parametrize(("orig", "new"), [(8000, 16000), (44100, 16000), (48000, 16000), (22050, 16000)])
def test_resample_keeps_a_tone_and_the_length(orig, new):
    """A 440 Hz tone resampled equals the tone sampled at the new rate (away from the edges)."""
    seconds = 0.5
    tone = np.sin(2 * np.pi * 440 * np.arange(int(orig * seconds)) / orig).astype(np.float32)
    out = resample(tone, orig, new)
    assert len(out) == int(np.ceil(len(tone) * new / orig))
    expected = np.sin(2 * np.pi * 440 * np.arange(len(out)) / new)
    middle = slice(200, len(out) - 200)
    np.testing.assert_allclose(out[middle], expected[middle], atol=2e-3)


def test_resample_removes_what_the_new_rate_cannot_hold():
    """A 12 kHz tone at 44.1 kHz is above the 8 kHz Nyquist of 16 kHz: it is filtered out, not aliased to 4 kHz."""
    tone = np.sin(2 * np.pi * 12000 * np.arange(44100) / 44100).astype(np.float32)
    out = resample(tone, 44100, 16000)
    assert np.abs(out[200:-200]).max() < 0.01


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.array([], dtype=np.float32), "empty"),
        ([], "batch of audio clips is empty"),
        (np.zeros((2, 3, 100), dtype=np.float32), "mono audio"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NaN or infinite"),
        ([np.zeros(100, dtype=np.float32), np.array([], dtype=np.float32)], r"audio\[1\]: the audio array is empty"),
    ],
)
def test_bad_audio_is_refused_clearly(audio, message):
    with pytest.raises(DataError, match=message):
        WhisperFeatureExtractor()(audio, sampling_rate=16000)


def test_preprocessor_config_round_trips_with_transformers(tmp_path):
    ours = WhisperFeatureExtractor(chunk_length=20)
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.WhisperFeatureExtractor.from_pretrained(tmp_path / "ours")
    assert (theirs.chunk_length, theirs.n_samples, theirs.nb_max_frames) == (20, 320000, 2000)
    theirs.save_pretrained(tmp_path / "theirs")
    again = WhisperFeatureExtractor.from_pretrained(tmp_path / "theirs")
    assert again.chunk_length == 20 and again.n_samples == 320000
    stored = json.loads((tmp_path / "theirs" / "preprocessor_config.json").read_text())
    again.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "preprocessor_config.json").read_text()).keys() >= stored.keys() - {
        "processor_class"
    }
    with pytest.raises(TypeError, match="chunk_lenght"):
        WhisperFeatureExtractor.from_pretrained(tmp_path / "ours", chunk_lenght=10)


def test_load_wav_reads_pcm_and_refuses_other_files(tmp_path):
    samples = (np.sin(np.arange(800) / 10) * 20000).astype("<i2")
    stereo = np.stack([samples, samples // 2], axis=1)
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(stereo.tobytes())
    audio, rate = load_wav(tmp_path / "stereo.wav")
    assert rate == 22050 and audio.shape == (800,)
    np.testing.assert_allclose(audio, (samples + samples // 2) / 2 / 32768, atol=1e-6)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not a wave file")
    with pytest.raises(DataError, match=r"bad\.wav: not a PCM WAV file"):
        load_wav(tmp_path / "bad.wav")
