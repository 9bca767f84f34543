"""Auto model classes: the family's class for a task, picked from the config's ``model_type``."""

from __future__ import annotations

import os
from typing import Any

from modelcore.auto.configuration_auto import config_class_for
from modelcore.auto.registry import FAMILIES, resolve
from modelcore.configuration_utils import ConfigError, PretrainedConfig, read_source_config
from modelcore.modeling_utils import PreTrainedModel
from modelcore.serialization.sources import resolve_source


class _AutoModel:
    """Shared behaviour; each subclass is one task with its own registry."""

    _registry: dict[str, str | type[PreTrainedModel]]

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is not instantiable: use from_pretrained or from_config")

    def __init_subclass__(cls) -> None:
        cls._registry = {mt: fam.models[cls.__name__] for mt, fam in FAMILIES.items() if cls.__name__ in fam.models}

    @classmethod
    def model_class_for(cls, model_type: str, where: str = "") -> type[PreTrainedModel]:
        """The registered model class of ``model_type`` for this task; the error names ``where`` it came from."""
        origin = f"{where}: " if where else ""
        if not isinstance(model_type, str):
            raise ConfigError(f"{origin}model_type must be a string, got {model_type!r}"[:300])
        if model_type not in cls._registry:
            raise ConfigError(
                f"{origin}{cls.__name__} has no model for model_type {model_type!r}; "
                f"supported: {', '.join(sorted(cls._registry)) or 'none'}"
            )
        return resolve(cls._registry[model_type])

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> PreTrainedModel:
        """A randomly initialized model of the config's family."""
        return cls.model_class_for(config.model_type)(config)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs: Any) -> PreTrainedModel:
        """Load a checkpoint with the family's class; ``kwargs`` as in ``PreTrainedModel.from_pretrained``."""
        config = kwargs.get("config")
        if config is not None:
            return cls.model_class_for(config.model_type).from_pretrained(source, **kwargs)
        location = resolve_source(source)  # a directory or a GGUF file; resolved once (URIs, assets)
        data, where = read_source_config(location)
        if "model_type" not in data:
            raise ConfigError(f"{where}: has no 'model_type' key, so its model family is unknown")
        model_type = data["model_type"]
        config_class_for(model_type, where)  # an unknown model_type fails here, naming the file
        return cls.model_class_for(model_type, where).from_pretrained(location, **kwargs)

    @classmethod
    def register(
        cls, config_class: type[PretrainedConfig], model_class: type[PreTrainedModel], exist_ok: bool = False
    ) -> None:
        """Make ``config_class.model_type`` resolve to ``model_class`` for this task."""
        if model_class.config_class is not config_class:
            raise ValueError(f"{model_class.__name__}.config_class is not {config_class.__name__}")
        if config_class.model_type in cls._registry and not exist_ok:
            raise ValueError(
                f"{cls.__name__} already has a model for {config_class.model_type!r} (pass exist_ok=True to replace it)"
            )
        cls._registry[config_class.model_type] = model_class


class AutoModel(_AutoModel):
    """The bare model (hidden states out)."""


class AutoModelForCausalLM(_AutoModel):
    """A decoder with a language-modeling head."""


class AutoModelForSequenceClassification(_AutoModel):
    """A model with a sequence classification / regression head."""


class AutoModelForMaskedLM(_AutoModel):
    """An encoder with a masked-language-modeling head."""


class AutoModelForTokenClassification(_AutoModel):
    """A model with a per-token classification head."""


class AutoModelForQuestionAnswering(_AutoModel):
    """A model with an extractive question-answering head (a start and an end logit per token)."""


class AutoModelForImageClassification(_AutoModel):
    """A vision model with an image classification head (``pixel_values`` in, one logit per label out)."""


class AutoModelForSpeechSeq2Seq(_AutoModel):
    """An encoder-decoder speech model with a language-model head (``input_features`` in, tokens out)."""
