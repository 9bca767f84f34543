"""Activation functions by their ``hidden_act`` name, each computed as Hugging Face transformers does.

The tanh approximations are not interchangeable bit for bit: ``gelu_new`` and ``gelu_fast`` are the
formulas of the original BERT/GPT code, ``gelu_pytorch_tanh`` is torch's fused kernel. A checkpoint
gets the one its config names, so outputs match transformers to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from modelcore.nn.activation_names import ACTIVATION_NAMES

Activation = Callable[[torch.Tensor], torch.Tensor]


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """Tanh-approximated GELU as written in the Google BERT / OpenAI GPT code."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_fast(x: torch.Tensor) -> torch.Tensor:
    """The same approximation, factored differently (Hendrycks & Gimpel's reference code)."""
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the cheap approximation CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


# hidden_act name -> function; the keys are exactly activation_names.ACTIVATION_NAMES.
ACT2FN: dict[str, Activation] = {
    "gelu": F.gelu,  # exact (erf) GELU: what the Google BERT checkpoints use
    "gelu_new": gelu_new,
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "gelu_fast": gelu_fast,
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def get_activation(name: str) -> Activation:
    """The activation function called ``name`` in a config's ``hidden_act``.

    Args:
        name: one of ``ACTIVATION_NAMES``.

    Returns:
        A function from a tensor to a tensor of the same shape.

    Raises:
        ValueError: ``name`` is not implemented; the message lists the names that are.
    """
    try:
        return ACT2FN[name]
    except KeyError:
        raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATION_NAMES)}") from None
