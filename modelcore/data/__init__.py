"""Data utilities: collators (padding, language modeling) and batch samplers (length grouping, sharding)."""

from modelcore.data.collators import (
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    default_data_collator,
    pad_rows,
)
from modelcore.data.sampling import LengthGroupedSampler, RandomBatchSampler, lengths_of

__all__ = [
    "DataCollatorForLanguageModeling",
    "DataCollatorWithPadding",
    "LengthGroupedSampler",
    "RandomBatchSampler",
    "default_data_collator",
    "lengths_of",
    "pad_rows",
]
