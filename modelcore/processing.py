"""Processor: one object that bundles a model's preprocessors (feature extractor or image processor, tokenizer).

A multimodal model reads one modality through its feature extractor and writes text through its tokenizer;
the processor loads both from one checkpoint folder, saves both into one, and forwards ``decode`` /
``batch_decode`` to the tokenizer. A family's processor names its two classes (``WhisperProcessor``:
``WhisperFeatureExtractor`` + ``WhisperTokenizer``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from modelcore.feature_extraction import FeatureExtractor
from modelcore.tokenization import Tokenizer


class Processor:
    """A feature extractor and a tokenizer that belong to one checkpoint.

    Args:
        feature_extractor: turns raw inputs (audio) into model inputs.
        tokenizer: turns text into ids and model outputs back into text.
    """

    feature_extractor_class: ClassVar[type[FeatureExtractor]] = FeatureExtractor
    tokenizer_class: ClassVar[type[Tokenizer]] = Tokenizer

    def __init__(self, feature_extractor: FeatureExtractor, tokenizer: Tokenizer) -> None:
        if not isinstance(feature_extractor, self.feature_extractor_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.feature_extractor_class.__name__}, got {type(feature_extractor).__name__}"
            )
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> Processor:
        """Load both parts from one folder (``preprocessor_config.json`` and the tokenizer files).

        Args:
            source: a checkpoint directory, or anything ``modelcore.serialization.sources.resolve_source`` accepts.
        """
        return cls(cls.feature_extractor_class.from_pretrained(source), cls.tokenizer_class.from_pretrained(source))

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write both parts into ``save_directory`` (created if needed); return it."""
        directory = Path(save_directory)
        self.feature_extractor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """``tokenizer.decode``."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """``tokenizer.batch_decode``."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(feature_extractor={self.feature_extractor!r}, tokenizer={self.tokenizer!r})"
