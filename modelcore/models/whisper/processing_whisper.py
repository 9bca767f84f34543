"""WhisperProcessor: the log-mel feature extractor and the tokenizer of one Whisper checkpoint, and ``transcribe``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from modelcore.errors import DataError
from modelcore.feature_extraction import AudioInput, BatchFeature, load_wav
from modelcore.models.whisper.feature_extraction_whisper import WhisperFeatureExtractor, is_batched
from modelcore.models.whisper.tokenization_whisper import WhisperTokenizer
from modelcore.processing import Processor

if TYPE_CHECKING:
    from modelcore.models.whisper.modeling_whisper import WhisperForConditionalGeneration


class WhisperProcessor(Processor):
    """``WhisperFeatureExtractor`` + ``WhisperTokenizer``, loaded from and saved to one folder."""

    feature_extractor_class = WhisperFeatureExtractor
    tokenizer_class = WhisperTokenizer
    feature_extractor: WhisperFeatureExtractor
    tokenizer: WhisperTokenizer

    def __call__(
        self,
        audio: AudioInput | Sequence[AudioInput] | None = None,
        sampling_rate: int | None = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Features of ``audio`` and/or token ids of ``text`` (as ``labels`` when both are given, else ``input_ids``).

        Args:
            audio: one clip or a batch, see ``WhisperFeatureExtractor.__call__``.
            sampling_rate: the clips' rate (resampled to 16 kHz, with a warning, when it differs).
            text: transcripts, encoded with the prompt template for training.
            return_tensors: ``"pt"`` or ``"np"``.
        """
        if audio is None and text is None:
            raise ValueError("pass audio, text, or both")
        out = BatchFeature()
        if audio is not None:
            out.update(self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors=return_tensors))
        if text is not None:
            encoded = self.tokenizer(text, padding=True, return_tensors=return_tensors)
            out["labels" if audio is not None else "input_ids"] = encoded["input_ids"]
            if audio is None:
                out["attention_mask"] = encoded["attention_mask"]
        return out

    def transcribe(
        self,
        model: WhisperForConditionalGeneration,
        audio: AudioInput | str | os.PathLike | Sequence[AudioInput | str | os.PathLike],
        sampling_rate: int | None = None,
        batch_size: int = 8,
        **generate_kwargs: Any,
    ) -> str | list[str]:
        """Transcribe one clip or a list of clips of any length.

        Each clip is resampled to 16 kHz if needed, cut into consecutive 30 s windows (no overlap), and the
        windows of all clips are decoded ``batch_size`` at a time; a clip's text is its windows' texts, stripped
        and joined with one space.

        Args:
            model: a Whisper model.
            audio: one 1-D clip or PCM WAV file path, or a list of them.
            sampling_rate: the arrays' rate (a file's own rate is read from it).
            batch_size: windows per ``generate`` call.
            **generate_kwargs: passed to ``model.generate`` (``max_new_tokens=...``).

        Returns:
            The text (a list of texts for a list of clips).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        extractor = self.feature_extractor
        single = not _is_many(audio)
        items = [audio] if single else list(audio)
        if not items:
            raise DataError("the list of audio clips is empty; pass at least one clip")
        clips = [self._clip(item, sampling_rate, f"audio[{i}]") for i, item in enumerate(items)]
        windows = [(i, window) for i, clip in enumerate(clips) for window in extractor.split_windows(clip)]
        texts: list[list[str]] = [[] for _ in clips]
        for start in range(0, len(windows), batch_size):
            part = windows[start : start + batch_size]
            features = extractor([w for _, w in part], sampling_rate=extractor.sampling_rate)["input_features"]
            with torch.inference_mode():
                tokens = model.generate(features, **generate_kwargs)
            for (clip_index, _), text in zip(part, self.batch_decode(tokens, skip_special_tokens=True), strict=True):
                if text.strip():
                    texts[clip_index].append(text.strip())
        joined = [" ".join(parts) for parts in texts]
        return joined[0] if single else joined

    def _clip(self, item: Any, sampling_rate: int | None, where: str) -> Any:
        """One checked clip at the extractor's rate, read from a WAV file when ``item`` is a path."""
        if isinstance(item, (str, os.PathLike)):
            samples, file_rate = load_wav(item)
            return self.feature_extractor.prepare_audio(samples, file_rate, str(item))
        return self.feature_extractor.prepare_audio(item, sampling_rate, where)


def _is_many(audio: Any) -> bool:
    """A list of clips or paths (or a 2-D batch), as opposed to one clip or one path."""
    if isinstance(audio, (str, os.PathLike)):
        return False
    if isinstance(audio, (list, tuple)) and audio and isinstance(audio[0], (str, os.PathLike)):
        return True
    return is_batched(audio)
