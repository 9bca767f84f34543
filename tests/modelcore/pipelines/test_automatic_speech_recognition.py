"""pipeline("automatic-speech-recognition"): real speech through the converted whisper tiny.en."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from modelcore import pipeline
from modelcore.errors import DataError
from tests.modelcore.models import whisper_assets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def asr():
    return pipeline("automatic-speech-recognition", model=whisper_assets.converted_whisper_dir())


def test_paths_arrays_and_dicts_give_the_reference_transcript(asr):
    clip = whisper_assets.load_clip("vm-msgforwarded")
    path = whisper_assets.sounds_dir() / "vm-msgforwarded.wav"
    assert asr(str(path)) == {"text": clip.text}
    results = asr(
        [clip.audio, {"raw": clip.audio, "sampling_rate": clip.sampling_rate}], sampling_rate=clip.sampling_rate
    )
    assert results == [{"text": clip.text}, {"text": clip.text}]


def test_transcripts_equal_transformers_pipeline(asr):
    import transformers

    directory = whisper_assets.converted_whisper_dir()
    theirs = transformers.pipeline("automatic-speech-recognition", model=str(directory), device="cpu")
    for name in whisper_assets.TEST_CLIPS[:3]:
        clip = whisper_assets.load_clip(name)
        audio = asr.processor.feature_extractor.prepare_audio(clip.audio, clip.sampling_rate)  # 16 kHz for both
        expected = theirs({"raw": audio, "sampling_rate": 16_000})["text"].strip()
        assert asr(audio, sampling_rate=16_000)["text"] == expected == clip.text, name


def test_another_rate_is_resampled_and_said(asr, caplog):
    clip = whisper_assets.load_clip("vm-msgforwarded")  # 8 kHz
    with caplog.at_level(logging.WARNING):
        text = asr(clip.audio, sampling_rate=clip.sampling_rate)["text"]
    assert text == clip.text and "resampl" in caplog.text.lower()


def test_bad_audio_is_refused(asr):
    with pytest.raises(DataError, match="sampling_rate"):
        asr(np.zeros(16_000, dtype=np.float32))
    with pytest.raises(DataError, match="empty"):
        asr(np.zeros(0, dtype=np.float32), sampling_rate=16_000)
    with pytest.raises(DataError, match="no audio"):
        asr([])


def test_no_model_uses_the_converted_catalog_asset(caplog):
    with caplog.at_level(logging.INFO):
        default = pipeline("automatic-speech-recognition")
    assert "whisper-tiny-en" in caplog.text
    clip = whisper_assets.load_clip("vm-msgforwarded")
    assert default(clip.audio, sampling_rate=clip.sampling_rate)["text"] == clip.text
