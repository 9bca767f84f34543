"""WhisperFeatureExtractor: 16 kHz audio -> 80-bin log-mel spectrograms of 30 s windows (3000 frames).

The computation is OpenAI's (and transformers'): a 400-sample Hann-windowed STFT every 160 samples (reflect
padding at both ends, the last frame dropped), power spectrum, Slaney-normalised mel filters on the Slaney
mel scale from 0 to 8 kHz, ``log10`` clamped at 1e-10, values below (per-clip maximum - 8) raised to it,
then ``(x + 4) / 4``. Clips are padded with zeros or cut to 30 s first; longer audio is split into
consecutive 30 s windows by :meth:`WhisperFeatureExtractor.split_windows` and transcribed window by window.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from modelcore.errors import DataError
from modelcore.feature_extraction import AudioInput, BatchFeature, FeatureExtractor


def is_batched(raw_speech: Any) -> bool:
    """True for a batch of clips: a list/tuple of arrays or lists, or a 2-D array/tensor with no unit dimension."""
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        return raw_speech.ndim == 2 and 1 not in raw_speech.shape
    return isinstance(raw_speech, (list, tuple)) and (len(raw_speech) == 0 or not np.isscalar(raw_speech[0]))


def hertz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mels)


def mel_to_hertz(mels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`hertz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


@lru_cache(maxsize=8)
def mel_filter_bank(
    num_frequency_bins: int, num_mel_filters: int, sampling_rate: int, max_frequency: float
) -> np.ndarray:
    """(num_frequency_bins, num_mel_filters) triangular filters, Slaney area normalisation (librosa's ``mel``).

    Args:
        num_frequency_bins: ``n_fft // 2 + 1``.
        num_mel_filters: mel bins.
        sampling_rate: the audio's rate (the bins span 0 .. sampling_rate / 2).
        max_frequency: the top edge of the last filter.
    """
    mel_points = np.linspace(hertz_to_mel(0.0), hertz_to_mel(max_frequency), num_mel_filters + 2)
    filter_freqs = mel_to_hertz(mel_points)  # edges and centres of the triangles
    fft_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]  # (bins, filters + 2)
    filter_diff = np.diff(filter_freqs)
    down = -slopes[:, :-2] / filter_diff[:-1]
    up = slopes[:, 2:] / filter_diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2 : num_mel_filters + 2] - filter_freqs[:num_mel_filters])
    return filters * enorm[None, :]


@dataclasses.dataclass(kw_only=True)
class WhisperFeatureExtractor(FeatureExtractor):
    """Log-mel features for Whisper; settings and ``preprocessor_config.json`` keys as transformers'.

    Args:
        feature_size: mel bins (80; 128 for large-v3).
        sampling_rate: 16000.
        hop_length: samples between frames (10 ms).
        chunk_length: seconds per window (30).
        n_fft: STFT size (25 ms).
        padding_value: the sample value used to pad short clips (silence).
        return_attention_mask: kept for config round trips; the model attends to all 3000 frames.
    """

    feature_extractor_type: ClassVar[str] = "WhisperFeatureExtractor"

    feature_size: int = 80
    sampling_rate: int = 16000
    hop_length: int = 160
    chunk_length: int = 30
    n_fft: int = 400
    padding_value: float = 0.0
    return_attention_mask: bool = False

    @property
    def n_samples(self) -> int:
        """Samples per window (480,000 = 30 s at 16 kHz)."""
        return self.chunk_length * self.sampling_rate

    @property
    def nb_max_frames(self) -> int:
        """Frames per window (3000)."""
        return self.n_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        """The settings plus the derived ``n_samples`` and ``nb_max_frames`` that transformers writes."""
        return dict(
            sorted({**super().to_dict(), "n_samples": self.n_samples, "nb_max_frames": self.nb_max_frames}.items())
        )

    @property
    def mel_filters(self) -> np.ndarray:
        """(n_fft // 2 + 1, feature_size) mel filters, float64."""
        return mel_filter_bank(1 + self.n_fft // 2, self.feature_size, self.sampling_rate, self.sampling_rate / 2)

    def __call__(
        self,
        raw_speech: AudioInput | Sequence[AudioInput],
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Features of one clip or a batch of clips, each padded with silence or cut to ``chunk_length`` seconds.

        Args:
            raw_speech: a 1-D array/tensor/list of samples, or a list of them (a batch); a 2-D array is a batch.
            sampling_rate: the clips' rate; another rate than ``self.sampling_rate`` is resampled, with a warning.
            return_tensors: ``"pt"`` (torch, default) or ``"np"`` / None (numpy).

        Returns:
            ``BatchFeature`` with ``input_features`` (B, feature_size, nb_max_frames) float32.

        Raises:
            DataError: an empty clip, an empty batch, several channels, or NaN/inf samples.
        """
        clips = self.prepare_batch(raw_speech, sampling_rate)
        batch = np.zeros((len(clips), self.n_samples), dtype=np.float32) + np.float32(self.padding_value)
        for row, clip in zip(batch, clips, strict=True):
            n = min(len(clip), self.n_samples)
            row[:n] = clip[:n]
        features = self.log_mel(torch.from_numpy(batch))
        if return_tensors in (None, "np"):
            return BatchFeature(input_features=features.numpy())
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        return BatchFeature(input_features=features)

    def prepare_batch(self, raw_speech: Any, sampling_rate: int | None) -> list[np.ndarray]:
        """The clips of ``raw_speech`` as checked mono float32 arrays at ``self.sampling_rate``."""
        if not is_batched(raw_speech):
            return [self.prepare_audio(raw_speech, sampling_rate)]
        if len(raw_speech) == 0:
            raise DataError("the batch of audio clips is empty; pass at least one clip")
        return [self.prepare_audio(clip, sampling_rate, f"audio[{i}]") for i, clip in enumerate(raw_speech)]

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, n) samples -> (B, feature_size, n // hop_length) normalised log-mel features."""
        window = torch.hann_window(self.n_fft, device=waveforms.device)
        stft = torch.stft(waveforms, self.n_fft, self.hop_length, window=window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()  # (B, bins, frames): the last frame is dropped
        filters = torch.from_numpy(self.mel_filters).to(waveforms.device, torch.float32)
        log_spec = torch.clamp(filters.T @ power, min=1e-10).log10()  # (B, mels, frames)
        floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0  # an 80 dB range below each clip's loudest bin
        return (torch.maximum(log_spec, floor) + 4.0) / 4.0

    def split_windows(self, audio: np.ndarray) -> list[np.ndarray]:
        """Consecutive ``chunk_length``-second windows of a clip at ``self.sampling_rate`` (the last one shorter).

        Args:
            audio: (n,) samples.

        Returns:
            ``ceil(n / n_samples)`` windows, none empty.
        """
        count = max(1, math.ceil(len(audio) / self.n_samples))
        return [audio[i * self.n_samples : (i + 1) * self.n_samples] for i in range(count)]
