"""Text generation: ``GenerationConfig`` and ``GenerationMixin.generate`` (greedy and sampling over a KV cache)."""

from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.utils import GenerationMixin

__all__ = ["GenerationConfig", "GenerationMixin"]
