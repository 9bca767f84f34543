"""Audio feature extractors: the base class, audio checks, resampling and WAV reading.

A feature extractor turns raw audio (1-D float arrays at a known sampling rate) into model inputs, and
round-trips its settings through ``preprocessor_config.json`` (the Hugging Face layout: the same keys, so
a folder saved by either library loads in the other). Family extractors (``WhisperFeatureExtractor``)
subclass :class:`FeatureExtractor` and declare their settings as dataclass fields.

Audio at another sampling rate than the model's is resampled (band-limited sinc interpolation with a Hann
window, as ``torchaudio.functional.resample``) and a warning says so: never silently wrong. An empty array,
a non-finite sample or a multi-channel array is refused with a ``DataError`` that says what to pass.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import wave
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modelcore.errors import ConfigError, DataError
from modelcore.json_files import read_json_object
from modelcore.serialization.atomic import atomic_write_text

logger = logging.getLogger(__name__)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
PROCESSOR_CONFIG_NAME = "processor_config.json"  # transformers v5: every part of a processor in one file
AudioInput = np.ndarray | torch.Tensor | Sequence[float]


class BatchFeature(dict):
    """The output of a feature extractor: a dict of arrays or tensors whose keys read as attributes too."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchFeature:
        """Move every tensor value to ``device`` in place; returns ``self``."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


# ------------------------------------------------------------------------------------------- audio checks
def as_mono_float32(audio: AudioInput, where: str = "audio") -> np.ndarray:
    """One clip as a 1-D float32 array, checked.

    Args:
        audio: a 1-D array, tensor or list of samples (a (1, n) or (n, 1) array is taken as mono).
        where: how to name the input in errors (``"audio[3]"``).

    Returns:
        The samples as float32.

    Raises:
        DataError: the clip is empty, has several channels, or holds NaN or infinite samples.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise DataError(
            f"{where}: expected mono audio (a 1-D array of samples), got shape {array.shape}; mix the channels down first"
        )
    if array.size == 0:
        raise DataError(f"{where}: the audio array is empty (0 samples); pass at least one sample")
    if not np.isfinite(array).all():
        raise DataError(f"{where}: the audio holds NaN or infinite samples")
    return array


# ------------------------------------------------------------------------------------------- resampling
@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """The (new, 1, K) polyphase filter bank of the Hann-windowed sinc resampler, and its half-width.

    ``orig`` and ``new`` are already divided by their gcd. The cut-off is ``rolloff`` times the lower Nyquist
    frequency, so resampling down removes what the new rate cannot represent instead of aliasing it.
    """
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig  # (1, 1, K)
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx  # (new, 1, K)
    t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * (base / orig)
    return kernel.float(), width


def resample(
    audio: np.ndarray, orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> np.ndarray:
    """Resample a 1-D clip from ``orig_sr`` to ``new_sr`` Hz (band-limited sinc interpolation, Hann window).

    The same algorithm and defaults as ``torchaudio.functional.resample``: the output has
    ``ceil(len * new_sr / orig_sr)`` samples.

    Args:
        audio: (n,) float samples.
        orig_sr: the clip's sampling rate.
        new_sr: the wanted rate.
        lowpass_filter_width: zero crossings of the sinc on each side (sharper filter, more work).
        rolloff: the cut-off as a fraction of the lower Nyquist frequency.

    Returns:
        (m,) float32 samples at ``new_sr``.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sampling rates must be > 0, got {orig_sr} and {new_sr}")
    if orig_sr == new_sr:
        return audio
    gcd = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // gcd, int(new_sr) // gcd
    kernel, width = _sinc_kernel(orig, new, lowpass_filter_width, rolloff)
    wave_t = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None]  # (1, 1, n)
    padded = torch.nn.functional.pad(wave_t, (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernel, stride=orig)  # (1, new, frames)
    out = out.transpose(1, 2).reshape(-1)  # interleave the phases
    target = math.ceil(new * audio.shape[0] / orig)
    return out[:target].numpy()


# ------------------------------------------------------------------------------------------- reading audio files
def load_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file (8-, 16-, 24- or 32-bit integer samples) as mono float32 in [-1, 1].

    Several channels are averaged. Other encodings (float WAV, compressed formats) are refused; convert them
    first (``sox in.flac -b 16 out.wav``).

    Args:
        path: the file.

    Returns:
        ``(samples, sampling_rate)``.

    Raises:
        DataError: the file is not a PCM WAV file this reader handles (the message names it).
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as error:
        raise DataError(
            f"{path}: not a PCM WAV file this reader handles ({error}); convert it to 16-bit PCM WAV"
        ) from None
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        ints = bytes3[:, 0].astype(np.int32) | bytes3[:, 1].astype(np.int32) << 8 | bytes3[:, 2].astype(np.int32) << 16
        samples = ((ints << 8) >> 8).astype(np.float32) / float(1 << 23)  # sign-extend 24 bits
    elif width in (2, 4):
        dtype = np.dtype("<i2") if width == 2 else np.dtype("<i4")
        samples = np.frombuffer(raw, dtype=dtype).astype(np.float32) / float(1 << (8 * width - 1))
    else:
        raise DataError(f"{path}: {8 * width}-bit WAV samples are not supported")
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
    return samples.astype(np.float32), rate


# ------------------------------------------------------------------------------------------- the base class
@dataclasses.dataclass(kw_only=True)
class FeatureExtractor:
    """Base class of audio feature extractors: settings as dataclass fields, saved in ``preprocessor_config.json``.

    Strict with code, lenient with files (as configurations): an unknown keyword is a ``TypeError``; unknown
    keys of a saved file are kept and written back.

    Args:
        feature_size: features per frame (mel bins).
        sampling_rate: the rate the model was trained on; other rates are resampled to it.
        padding_value: the sample value used to pad audio.
        return_attention_mask: whether ``__call__`` returns a frame mask by default.
    """

    feature_extractor_type: ClassVar[str] = "FeatureExtractor"
    model_input_names: ClassVar[tuple[str, ...]] = ("input_features",)

    feature_size: int = 80
    sampling_rate: int = 16000
    padding_value: float = 0.0
    return_attention_mask: bool = False

    def __post_init__(self) -> None:
        self._extra: dict[str, Any] = {}
        if self.sampling_rate <= 0 or self.feature_size <= 0:
            raise ConfigError(f"{type(self).__name__}: sampling_rate and feature_size must be > 0")

    def prepare_audio(self, audio: AudioInput, sampling_rate: int | None, where: str = "audio") -> np.ndarray:
        """One clip checked and at ``self.sampling_rate``: resampled, with a warning, when given at another rate.

        Args:
            audio: the samples.
            sampling_rate: the clip's rate; None means "already at ``self.sampling_rate``" (a warning says so, as
                the model cannot tell).
            where: how to name the clip in messages.

        Raises:
            DataError: see :func:`as_mono_float32`.
        """
        array = as_mono_float32(audio, where)
        if sampling_rate is None:
            logger.warning(
                "%s: no sampling_rate given; assuming %d Hz. Pass sampling_rate= so other rates are resampled",
                where,
                self.sampling_rate,
            )
            return array
        if sampling_rate != self.sampling_rate:
            logger.warning(
                "%s: resampled from %d Hz to %d Hz (the rate %s expects)",
                where,
                sampling_rate,
                self.sampling_rate,
                type(self).__name__,
            )
            array = resample(array, sampling_rate, self.sampling_rate)
        return array

    # --------------------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """Every setting, the extra keys read from a file, and ``feature_extractor_type``."""
        data = {**self._extra, **dataclasses.asdict(self)}
        data["feature_extractor_type"] = self.feature_extractor_type
        return dict(sorted(data.items()))

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed); return its path."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PREPROCESSOR_CONFIG_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<dict>", **overrides: Any) -> FeatureExtractor:
        """Build from a ``preprocessor_config.json`` dict; unknown keys are kept, unknown overrides are errors."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"{cls.__name__} got unexpected keyword argument(s): {', '.join(unknown)}")
        stored_type = data.get("feature_extractor_type")
        if stored_type not in (None, cls.feature_extractor_type):
            raise ConfigError(
                f"{where}: feature_extractor_type is {stored_type!r}, {cls.__name__} reads {cls.feature_extractor_type!r}"
            )
        merged = {**data, **overrides}
        try:
            extractor = cls(**{k: v for k, v in merged.items() if k in fields})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {error}") from error
        extractor._extra = {k: v for k, v in data.items() if k not in fields and k != "feature_extractor_type"}
        return extractor

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **overrides: Any) -> FeatureExtractor:
        """Load the settings from a folder (or an asset name); errors name the file.

        Reads ``preprocessor_config.json``, or else the ``feature_extractor`` entry of ``processor_config.json``
        (where transformers v5 saves a processor's parts together).

        Args:
            source: a directory, or anything ``modelcore.serialization.sources.resolve_source`` accepts.
            **overrides: settings that replace the stored ones.
        """
        from modelcore.serialization.sources import resolve_source

        directory = Path(resolve_source(source))
        path = directory / PREPROCESSOR_CONFIG_NAME
        if path.is_file():
            return cls.from_dict(read_json_object(path, ConfigError), str(path), **overrides)
        combined = directory / PROCESSOR_CONFIG_NAME
        if combined.is_file():
            entry = read_json_object(combined, ConfigError).get("feature_extractor")
            if not isinstance(entry, dict):
                raise ConfigError(f"{combined}: no 'feature_extractor' object; the folder has no feature extractor")
            return cls.from_dict(entry, f"{combined} (feature_extractor)", **overrides)
        raise FileNotFoundError(
            f"{path}: no such file (nor {PROCESSOR_CONFIG_NAME}); the folder has no feature extractor settings"
        )
