"""Weight initialization shared by model families (the families' ``_init_weights`` call it)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_linear_and_embedding(module: nn.Module, std: float) -> None:
    """N(0, std) weights for ``nn.Linear`` and ``nn.Embedding``, zero Linear bias and Embedding padding row.

    Other modules are left untouched, so a family's ``_init_weights`` handles its norms and extras after this.
    """
    if isinstance(module, nn.Linear):
        module.weight.normal_(mean=0.0, std=std)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(mean=0.0, std=std)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
