"""PretrainedConfig: typed hyperparameters that round-trip through ``config.json``.

A configuration is a keyword-only dataclass. Two kinds of input are treated differently:

* keywords passed in code (``LlamaConfig(hidden_sise=64)``) must be fields: a typo is a
  ``TypeError``, never silently swallowed;
* keys read from a real checkpoint's ``config.json`` that we do not model are kept as plain
  attributes and written back on save, so a round trip loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing
from pathlib import Path
from typing import Any, ClassVar

from modelcore.errors import ConfigError
from modelcore.json_files import read_json_object
from modelcore.serialization.atomic import atomic_write_text
from modelcore.typecheck import as_float_if_wanted, matches, non_finite_path, type_name

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

# Keys that older transformers versions wrote under another name.
_RENAMED_KEYS = {"torch_dtype": "dtype"}
# Fields that describe how this process runs the model, not the model: never written to config.json.
_RUNTIME_FIELDS = ("attn_implementation", "num_labels")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# Sizes are checked before anything is built, so that a damaged or hostile config.json is refused with a
# message instead of exhausting memory. The cap on the whole model is well above the largest published
# checkpoints (dense Llama 3.1 405B: 4.1e11 parameters; the largest open mixtures of experts: about 1e12)
# and far below the point where the number stops being a typo: 2e12 parameters are 8 TB in fp32, more than
# any single machine can hold, and a meta-device build of it would still work.
MAX_PARAMETERS = 2 * 10**12
# Per-field caps, each far above every published checkpoint (in brackets: the largest we know of).
SIZE_LIMITS: dict[str, int] = {
    "vocab_size": 2**31 - 1,  # token ids are int32 in tokenizers and ONNX exports [262,144, Gemma 3]
    "hidden_size": 2**20,  # [16,384, Llama 3.1 405B]
    "intermediate_size": 2**22,  # [53,248, Llama 3.1 405B]
    "num_hidden_layers": 10_000,  # [126, Llama 3.1 405B]
    "num_attention_heads": 2**16,  # [128]
    "num_key_value_heads": 2**16,
    "head_dim": 2**16,  # [256]
    "max_position_embeddings": 2**31 - 1,  # positions are int32 in exports [10,485,760, Llama 4 Scout]
    "type_vocab_size": 2**16,  # [2]
}
MAX_LABELS = 2**20  # the classification head and id2label are built from num_labels


@dataclasses.dataclass(kw_only=True, eq=False)
class PretrainedConfig:
    """Base class of every family's configuration.

    Subclasses set ``model_type`` and declare their fields with Hugging Face names and defaults;
    ``validate`` checks cross-field constraints and is run on construction.
    """

    model_type: ClassVar[str] = ""

    architectures: list[str] | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    num_labels: int | None = None
    problem_type: str | None = None
    pad_token_id: int | None = None
    bos_token_id: int | list[int] | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True
    dtype: str | None = None
    output_hidden_states: bool = False
    output_attentions: bool = False
    attn_implementation: str = "sdpa"

    # Per-field caps (see SIZE_LIMITS); a family narrows them where a size costs memory at construction.
    size_limits: ClassVar[dict[str, int]] = SIZE_LIMITS

    def __post_init__(self) -> None:
        self._extra: dict[str, Any] = {}
        self._check_types()
        self._sync_labels()
        self.validate()
        self.check_sizes()

    # ----------------------------------------------------------------- labels
    def _sync_labels(self) -> None:
        name = type(self).__name__
        if self.num_labels is not None and not 1 <= self.num_labels <= MAX_LABELS:
            raise ConfigError(f"{name}.num_labels must be in [1, {MAX_LABELS:,}], got {self.num_labels:,}")
        if self.id2label is not None:
            self.id2label = {_label_id(k, f"{name}.id2label"): _label_name(v, k) for k, v in self.id2label.items()}
            if self.num_labels is not None and self.num_labels != len(self.id2label):
                raise ConfigError(
                    f"{name}.num_labels={self.num_labels} disagrees with id2label, "
                    f"which has {len(self.id2label)} labels"
                )
        else:
            n = 2 if self.num_labels is None else self.num_labels
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {v: k for k, v in self.id2label.items()}
        else:
            self.label2id = {str(k): _label_id(v, f"{name}.label2id[{k!r}]") for k, v in self.label2id.items()}
        object.__setattr__(self, "num_labels", len(self.id2label))

    def __setattr__(self, name: str, value: Any) -> None:
        # Setting num_labels after construction re-derives the label maps, as in transformers.
        super().__setattr__(name, value)
        if name == "num_labels" and "_extra" in self.__dict__ and len(self.id2label or {}) != value:
            super().__setattr__("id2label", None)
            super().__setattr__("label2id", None)
            self._sync_labels()

    # ------------------------------------------------------------- validation
    def _check_types(self) -> None:
        """Each field has its annotated type, and no float in it (nested ones too) is NaN or infinite.

        Every range check (``eps > 0``, ``0 <= p < 1``) is then a check on a finite number: ``NaN > 0`` is
        False, so a NaN would pass a check written as "refuse if <= 0", and ``inf`` passes "> 0".
        """
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = as_float_if_wanted(getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
            if not matches(value, hints[field.name]):
                raise ConfigError(
                    f"{type(self).__name__}.{field.name} must be {type_name(hints[field.name])}, "
                    f"got {_short_repr(value)} ({type(value).__name__})"
                )
            found = non_finite_path(value, f"{type(self).__name__}.{field.name}")
            if found is not None:
                where, bad = found
                raise ConfigError(f"{where} must be a finite number, got {bad!r}")

    def validate(self) -> None:
        """Check constraints between fields; raise ``ConfigError`` naming the field."""
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ConfigError(f"attn_implementation must be 'eager' or 'sdpa', got {self.attn_implementation!r}")
        self._require_one_of("problem_type", PROBLEM_TYPES)

    def check_sizes(self) -> None:
        """Refuse sizes no real checkpoint has, before any tensor is allocated.

        Each field of ``size_limits`` must be within its cap, and the parameter count estimated from the
        config (``parameter_estimate``) within ``MAX_PARAMETERS``.

        Raises:
            ConfigError: naming the field(s) and, for the total, the estimate and the terms that dominate it.
        """
        name = type(self).__name__
        for field_name, limit in self.size_limits.items():
            value = getattr(self, field_name, None)
            if isinstance(value, int) and value > limit:
                raise ConfigError(
                    f"{name}.{field_name}={value:,} is above {limit:,}, far larger than any real checkpoint; "
                    "the value is damaged or mistyped"
                )
        terms = self.parameter_estimate()
        total = sum(terms.values())
        if total > MAX_PARAMETERS:
            largest = sorted(terms.items(), key=lambda item: -item[1])[:3]
            detail = ", ".join(f"{term}: {count:.3g}" for term, count in largest)
            raise ConfigError(
                f"{name} would have about {total:.3g} parameters ({4 * total / 1e12:.3g} TB in fp32), above the "
                f"limit of {MAX_PARAMETERS:.3g}; largest terms: {detail}"
            )

    def parameter_estimate(self) -> dict[str, int]:
        """The model's parameter count by term, e.g. ``{"embeddings (vocab_size x hidden_size)": ...}``.

        Families override this; the base class knows no sizes and returns ``{}``. The count may be rough
        (a head more or less), as it only guards against sizes off by orders of magnitude.
        """
        return {}

    def _require_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is None or value <= 0:
                raise ConfigError(f"{type(self).__name__}.{name} must be > 0, got {value}")

    def _require_non_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is None or value < 0:
                raise ConfigError(f"{type(self).__name__}.{name} must be >= 0, got {value}")

    def _require_probability(self, *names: str) -> None:
        """Each field is a dropout-style probability in [0, 1), or None."""
        for name in names:
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"{type(self).__name__}.{name} must be in [0, 1), got {value}")

    def _require_one_of(self, name: str, choices: tuple[str, ...]) -> None:
        """The field is one of ``choices``, or None."""
        value = getattr(self, name)
        if value is not None and value not in choices:
            raise ConfigError(f"{type(self).__name__}.{name} {value!r} is not one of {', '.join(choices)}")

    # ---------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """All fields plus the extra keys read from a checkpoint, as JSON-ready values."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if field.name in _RUNTIME_FIELDS:
                continue
            out[field.name] = _jsonable(getattr(self, field.name))
        out.update({k: _jsonable(v) for k, v in self._extra.items()})
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_diff_dict(self) -> dict[str, Any]:
        """Only the values that differ from the class defaults (plus ``model_type``)."""
        default = type(self)().to_dict()
        return {k: v for k, v in self.to_dict().items() if k == "model_type" or default.get(k, object()) != v}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write the configuration as JSON, atomically."""
        atomic_write_text(Path(path), self.to_json_string())

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``config.json`` into ``save_directory`` (created if needed); return its path."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        self.to_json_file(path)
        return path

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> PretrainedConfig:
        """Build a config from a ``config.json`` dict: unknown keys are kept, overrides must be fields.

        Args:
            config_dict: the parsed JSON.
            **overrides: field values that replace the stored ones; an unknown name is a ``TypeError``.
        """
        field_names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - field_names)
        if unknown:
            raise TypeError(f"{cls.__name__} got unexpected keyword argument(s): {', '.join(unknown)}")
        # How a process runs the model is not the model: a stored attn_implementation is not applied.
        data = {_RENAMED_KEYS.get(k, k): v for k, v in config_dict.items() if k != "attn_implementation"}
        stored_type = data.pop("model_type", cls.model_type)
        if cls.model_type and stored_type and stored_type != cls.model_type:
            raise ConfigError(f"config has model_type {stored_type!r}, but {cls.__name__} expects {cls.model_type!r}")
        if "num_labels" in overrides and "id2label" not in overrides:
            data.pop("id2label", None)
            data.pop("label2id", None)
        data.update(overrides)
        known = {k: v for k, v in data.items() if k in field_names}
        extra = {k: v for k, v in data.items() if k not in field_names}
        config = cls(**known)
        for key, value in extra.items():
            config._extra[key] = value
            if _is_free_attribute(config, key):  # a key named like a method or "__class__" is kept, not set
                object.__setattr__(config, key, value)
        return config

    @classmethod
    def from_file_dict(
        cls, config_dict: dict[str, Any], where: str | os.PathLike, **overrides: Any
    ) -> PretrainedConfig:
        """``from_dict`` for a dict read from a file: a ``ConfigError`` names the file first.

        Args:
            config_dict: the parsed ``config.json`` (or GGUF metadata).
            where: the file it came from.
            **overrides: as in ``from_dict``.
        """
        try:
            return cls.from_dict(config_dict, **overrides)
        except ConfigError as err:
            with_overrides = f" (with overrides {', '.join(sorted(overrides))})" if overrides else ""
            raise ConfigError(f"{where}{with_overrides}: {err}") from err

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> PretrainedConfig:
        """Load a configuration from a ``config.json`` file; errors name the file."""
        return cls.from_file_dict(read_config_dict(Path(path)), path, **overrides)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **overrides: Any) -> PretrainedConfig:
        """Load the configuration of a checkpoint: its ``config.json``, or a GGUF file's metadata.

        Args:
            source: a directory holding ``config.json``, an asset name, or a ``.gguf`` file
                (see ``modelcore.serialization.sources``).
            **overrides: field values replacing the stored ones.
        """
        data, where = read_source_config(source)
        return cls.from_file_dict(data, where, **overrides)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()


def read_config_dict(path: Path) -> dict[str, Any]:
    """Parse a ``config.json``; a file that is not UTF-8, not JSON or not an object is a ``ConfigError`` naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    return read_json_object(path, ConfigError)


def read_source_config(source: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The ``config.json`` dict of a checkpoint source, and where it came from (for error messages).

    Args:
        source: anything ``modelcore.serialization.sources.resolve_source`` accepts; for a GGUF file the
            dict is built from the file's metadata.

    Returns:
        ``(config dict, path of config.json or of the .gguf file)``.
    """
    from modelcore.serialization.sources import is_gguf_file, resolve_source

    location = resolve_source(source)
    if is_gguf_file(location):
        from modelcore.serialization.gguf import gguf_config_dict

        return gguf_config_dict(location), str(location)
    path = location / CONFIG_NAME
    return read_config_dict(path), str(path)


# ------------------------------------------------------------------- helpers
def _label_id(value: Any, where: str) -> int:
    """A label id from ``id2label``'s keys (strings in JSON) or ``label2id``'s values."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 20:
        return int(value)
    raise ConfigError(f"{where}: label ids must be integers, got {_short_repr(value)}")


def _label_name(value: Any, key: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ConfigError(f"id2label[{key!r}] must be a label name, got {_short_repr(value)}")
    return str(value)


def _is_free_attribute(config: PretrainedConfig, key: str) -> bool:
    """Whether an unknown config.json key can become an attribute without shadowing the class or our state."""
    return key.isidentifier() and not key.startswith("__") and not hasattr(type(config), key) and key != "_extra"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, PretrainedConfig):
        return value.to_dict()
    return value
