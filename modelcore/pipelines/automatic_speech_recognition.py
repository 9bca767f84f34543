"""Automatic speech recognition: audio (WAV paths, arrays with their sampling rate) in, text out."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelcore.errors import ConfigError, DataError
from modelcore.pipelines.base import Pipeline


class AutomaticSpeechRecognitionPipeline(Pipeline):
    """Transcribe speech with a Whisper model and its processor (feature extractor + tokenizer).

    Audio at another sampling rate is resampled to the model's (16 kHz) and a warning says so; audio longer than
    30 s is transcribed in consecutive 30 s windows whose texts are joined. With no model, the whisper-tiny.en
    asset is converted once into the cache and used. A call changes nothing shared.
    """

    task = "automatic-speech-recognition"
    auto_model = "AutoModelForSpeechSeq2Seq"
    default_batch_size = 8

    @classmethod
    def load_preprocessor(cls, source: str | os.PathLike) -> Any:
        from modelcore.configuration_utils import read_config_dict
        from modelcore.models.whisper.processing_whisper import WhisperProcessor
        from modelcore.serialization.sources import resolve_source

        directory = resolve_source(source)
        model_type = read_config_dict(directory / "config.json").get("model_type")
        if model_type != "whisper":
            raise ConfigError(f"{directory}: automatic-speech-recognition serves whisper models, not {model_type!r}")
        return WhisperProcessor.from_pretrained(directory)

    @property
    def processor(self) -> Any:
        return self.tokenizer

    def __call__(
        self,
        inputs: Any,
        sampling_rate: int | None = None,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
    ) -> dict[str, str] | list[dict[str, str]]:
        """Transcribe each input.

        Args:
            inputs: a PCM WAV file path, a 1-D array of samples (with ``sampling_rate``), a dict
                ``{"raw" | "array": samples, "sampling_rate": rate}`` (as transformers), or a list of these.
            sampling_rate: the rate of bare arrays.
            batch_size: 30 s windows per ``generate`` call.
            max_new_tokens: tokens per window (default: the model's limit).

        Returns:
            ``{"text": ...}`` for one input, a list of them for a list.

        Raises:
            DataError: an empty clip or list, a bare array without ``sampling_rate``, a non-mono clip.
        """
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if not items:
            raise DataError("no audio to transcribe: pass at least one clip")
        clips = [self._clip(item, sampling_rate, index) for index, item in enumerate(items)]
        generate = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
        texts = [
            self.processor.transcribe(self.model, clip, sampling_rate=rate, batch_size=self.batch_size_for(batch_size), **generate)
            for clip, rate in clips
        ]  # fmt: skip
        results = [{"text": text} for text in texts]
        return results[0] if single else results

    @staticmethod
    def _clip(item: Any, sampling_rate: int | None, index: int) -> tuple[Any, int | None]:
        """(samples or path, rate) of one input; a bare array must come with its rate."""
        if isinstance(item, (str, os.PathLike)):
            return item, None
        if isinstance(item, dict):
            samples = item.get("raw", item.get("array"))
            if samples is None or "sampling_rate" not in item:
                raise DataError(f"inputs[{index}]: a dict needs 'raw' (or 'array') and 'sampling_rate'")
            return samples, int(item["sampling_rate"])
        if sampling_rate is None:
            raise DataError(
                f"inputs[{index}]: an array of samples needs its sampling_rate (pass sampling_rate=16000, or a dict "
                "{'raw': samples, 'sampling_rate': rate}); a wrong rate would transcribe wrongly, not fail"
            )
        return np.asarray(item), sampling_rate
