"""LlamaConfig: the hyperparameters of Llama-family checkpoints (Llama 1/2/3, SmolLM, TinyLlama, ...).

Rotary settings arrive in one of two on-disk shapes:

* transformers v4 and most published checkpoints: ``rope_theta`` plus ``rope_scaling``
  (``{"rope_type" | "type": "llama3" | "linear" | ..., "factor": ...}`` or null);
* transformers v5: ``rope_parameters`` (``{"rope_type": ..., "rope_theta": ..., ...}``), no ``rope_theta``.

In code the config holds the v4 pair (``rope_theta``, ``rope_scaling``); ``rope_parameters`` is derived
from it. ``from_dict`` reads either shape, and ``to_dict`` writes both, so v4 and v5 readers of a
saved ``config.json`` see the same rotary embedding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from modelcore.configuration_utils import SIZE_LIMITS, ConfigError, PretrainedConfig
from modelcore.nn.activation_names import ACTIVATION_NAMES
from modelcore.typecheck import as_float_if_wanted

# rope_type -> keys its ``rope_scaling`` dict must carry (besides the type itself).
ROPE_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


@dataclasses.dataclass(kw_only=True, eq=False)
class LlamaConfig(PretrainedConfig):
    """Configuration of a Llama decoder; field names and defaults are those of Hugging Face's ``LlamaConfig``.

    Args:
        vocab_size: number of token ids.
        hidden_size: width C of the residual stream.
        intermediate_size: width of the SwiGLU MLP.
        num_hidden_layers: number of decoder blocks.
        num_attention_heads: query heads nh.
        num_key_value_heads: key/value heads nkv (grouped-query attention); None means nh (multi-head).
        head_dim: per-head width hs; None means ``hidden_size // num_attention_heads``.
        hidden_act: MLP activation (``"silu"`` for SwiGLU), one of ``nn.activation_names.ACTIVATION_NAMES``.
        max_position_embeddings: context length the model was trained for.
        initializer_range: std of the normal init of linear and embedding weights.
        rms_norm_eps: epsilon of every RMSNorm.
        use_cache: whether forward returns a KV cache by default.
        rope_theta: base of the rotary frequencies.
        rope_scaling: None, or a dict with ``rope_type`` (``linear``, ``dynamic``, ``yarn``, ``llama3``)
            and its parameters (``factor``, ...).
        attention_bias: bias on q/k/v/o projections.
        attention_dropout: dropout on attention weights while training.
        mlp_bias: bias on the MLP projections.
        pretraining_tp: tensor-parallel degree used in pretraining; kept for round trips, no effect here.
    """

    model_type = "llama"

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | list[int] | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    pretraining_tp: int = 1

    def __post_init__(self) -> None:
        # Derived defaults first, so that validation sees the values the model will use.
        if self.head_dim is None and _positive_int(self.hidden_size) and _positive_int(self.num_attention_heads):
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"LlamaConfig.hidden_size={self.hidden_size} is not divisible by "
                    f"num_attention_heads={self.num_attention_heads}; set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = _with_rope_type(self.rope_scaling)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        self._require_positive(
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
            "rms_norm_eps",
            "rope_theta",
            "pretraining_tp",
        )
        if self.head_dim % 2:
            raise ConfigError(f"LlamaConfig.head_dim={self.head_dim} must be even: rotary embeddings rotate pairs")
        if self.rope_theta <= 1:
            raise ConfigError(
                f"LlamaConfig.rope_theta={self.rope_theta} must be > 1: it is the base of the rotary frequencies "
                "(10000 in Llama 2, 500000 in Llama 3)"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"LlamaConfig.num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        # the embedding's padding row; negative ids count from the end, as torch's padding_idx does
        if self.pad_token_id is not None and not -self.vocab_size <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"LlamaConfig.pad_token_id ({self.pad_token_id}) must be in [-vocab_size, vocab_size={self.vocab_size})"
            )
        self._require_one_of("hidden_act", ACTIVATION_NAMES)
        self._require_probability("attention_dropout")
        self._require_non_negative("initializer_range")
        if self.rope_scaling is not None:
            _validate_rope_scaling(self.rope_scaling)
            if self.rope_type == "dynamic" and self.head_dim <= 2:
                raise ConfigError(f"LlamaConfig.head_dim={self.head_dim} must be > 2 for dynamic rope scaling")

    def parameter_estimate(self) -> dict[str, int]:
        """Parameters by term: token embeddings, decoder layers, final norm and the LM head (unless tied)."""
        h, hd, nh, nkv = self.hidden_size, self.head_dim, self.num_attention_heads, self.num_key_value_heads
        attention = h * hd * (2 * nh + 2 * nkv) + (hd * (nh + 2 * nkv) + h if self.attention_bias else 0)
        mlp = 3 * h * self.intermediate_size + (2 * self.intermediate_size + h if self.mlp_bias else 0)
        terms = {
            "embeddings (vocab_size x hidden_size)": self.vocab_size * h,
            "layers (num_hidden_layers x hidden_size x (head_dim x heads + 3 intermediate_size))": (
                self.num_hidden_layers * (attention + mlp + 2 * h)
            ),
            "final norm and classifier (hidden_size x (1 + num_labels))": h * (1 + self.num_labels),
        }
        if not self.tie_word_embeddings:
            terms["lm_head (vocab_size x hidden_size)"] = self.vocab_size * h
        return terms

    # ------------------------------------------------------------------ rotary
    @property
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else self.rope_scaling["rope_type"]

    @property
    def rope_parameters(self) -> dict[str, Any]:
        """The transformers-v5 view: ``{"rope_type", "rope_theta", **scaling}``, as v5 standardizes it."""
        params: dict[str, Any] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        if params["rope_type"] in ("yarn", "llama3"):
            params.setdefault("original_max_position_embeddings", self.max_position_embeddings)
        return params

    # ----------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """Fields as JSON, with rotary settings in both layouts (``rope_theta``/``rope_scaling`` and ``rope_parameters``)."""
        out = super().to_dict()
        out["rope_parameters"] = self.rope_parameters
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> LlamaConfig:
        """Read a v4 (``rope_theta`` + ``rope_scaling``) or v5 (``rope_parameters``) ``config.json`` dict.

        When both layouts are present, ``rope_scaling`` wins, as in transformers v5's own reader.
        """
        data = dict(config_dict)
        rope_parameters = data.pop("rope_parameters", None)
        source = data.get("rope_scaling") or rope_parameters
        if isinstance(source, dict):
            scaling = dict(source)
            data["rope_theta"] = scaling.pop("rope_theta", data.get("rope_theta", cls.rope_theta))
            is_default = scaling.get("rope_type", scaling.get("type", "default")) == "default"
            data["rope_scaling"] = None if is_default and set(scaling) <= {"rope_type", "type"} else scaling
        return super().from_dict(data, **overrides)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _with_rope_type(scaling: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``scaling`` with ``rope_type`` set from the legacy ``type`` key when only that is given.

    Its real-valued parameters become floats (JSON may write ``8`` for ``8.0``; an int too large for torch's
    int64 would overflow in the frequency computation; one too large for a float becomes inf, refused later).
    """
    scaling = dict(scaling)
    if "rope_type" not in scaling and "type" in scaling:
        scaling["rope_type"] = scaling["type"]
    for key in _ROPE_REAL_KEYS:
        if key in scaling:
            scaling[key] = as_float_if_wanted(scaling[key], float)
    return scaling


# rope_scaling keys the frequency functions compute with: each must be a number > 0 (>= 0 for the mscales,
# where 0 means "not set"), so that no division by zero, log of a negative or NaN reaches the model.
_ROPE_POSITIVE_KEYS = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "attention_factor",
    "beta_fast",
    "beta_slow",
)
_ROPE_NON_NEGATIVE_KEYS = ("mscale", "mscale_all_dim")
_ROPE_REAL_KEYS = tuple(key for key in (*_ROPE_POSITIVE_KEYS, *_ROPE_NON_NEGATIVE_KEYS) if "position" not in key)


def _validate_rope_scaling(scaling: dict[str, Any]) -> None:
    rope_type = scaling.get("rope_type")
    if not isinstance(rope_type, str) or rope_type not in ROPE_REQUIRED_KEYS:
        raise ConfigError(
            f"LlamaConfig.rope_scaling has rope_type {rope_type!r}; expected one of {list(ROPE_REQUIRED_KEYS)}"
        )
    missing = [key for key in ROPE_REQUIRED_KEYS[rope_type] if scaling.get(key) is None]
    if missing:
        raise ConfigError(f"LlamaConfig.rope_scaling of rope_type {rope_type!r} is missing {', '.join(missing)}")
    for key in (*_ROPE_POSITIVE_KEYS, *_ROPE_NON_NEGATIVE_KEYS):
        value = scaling.get(key)
        if value is None:
            continue
        non_negative = key in _ROPE_NON_NEGATIVE_KEYS
        if not _is_number(value) or not (value >= 0 if non_negative else value > 0):
            bound = ">= 0" if non_negative else "> 0"
            raise ConfigError(f"LlamaConfig.rope_scaling {key} must be a number {bound}, got {value!r}")
    original = scaling.get("original_max_position_embeddings")
    limit = SIZE_LIMITS["max_position_embeddings"]
    if original is not None and not (isinstance(original, int) and original <= limit):
        raise ConfigError(
            f"LlamaConfig.rope_scaling original_max_position_embeddings must be an int <= {limit:,}, got {original!r}"
        )
    if not isinstance(scaling.get("truncate", True), bool):
        raise ConfigError(f"LlamaConfig.rope_scaling truncate must be true or false, got {scaling['truncate']!r}")
    if rope_type == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ConfigError(
            "LlamaConfig.rope_scaling high_freq_factor must be greater than low_freq_factor, got "
            f"{scaling['high_freq_factor']} and {scaling['low_freq_factor']}"
        )
