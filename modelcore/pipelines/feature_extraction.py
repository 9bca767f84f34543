"""Feature extraction: texts in, sentence embeddings (or per-token hidden states) out.

The default output is what sentence-transformers' all-MiniLM-L6-v2 gives: the mean of the last hidden
states over the attention mask, L2-normalized, so a dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelcore.pipelines.base import Pipeline, as_texts, chunks

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "max", None)
# sentence-transformers' 1_Pooling/config.json flag -> our pooling name
_ST_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


class FeatureExtractionPipeline(Pipeline):
    """Embed texts with a bare encoder (``AutoModel``)."""

    task = "feature-extraction"
    auto_model = "AutoModel"
    default_batch_size = 32
    # sentence-transformers' settings of the checkpoint folder (see read_directory_settings); these defaults are
    # all-MiniLM-L6-v2's except the length, which is the tokenizer's unless the folder says otherwise
    pooling: str = "mean"
    normalize: bool = True
    max_seq_length: int | None = None

    def read_directory_settings(self, directory: Path) -> None:
        """Use a sentence-transformers folder's max_seq_length, pooling mode and Normalize module.

        ``sentence_bert_config.json`` gives ``max_seq_length`` (256 for all-MiniLM-L6-v2: longer texts are cut
        there, not at the tokenizer's 512); ``1_Pooling/config.json`` the pooling; ``modules.json`` whether a
        ``Normalize`` module follows. Files that are absent leave the defaults.
        """
        st_config = _read_json(directory / "sentence_bert_config.json")
        if isinstance(st_config.get("max_seq_length"), int):
            self.max_seq_length = st_config["max_seq_length"]
        modules = _read_json(directory / "modules.json", default=[])
        pooling_dirs = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")]
        if pooling_dirs:
            flags = _read_json(directory / pooling_dirs[0] / "config.json")
            chosen = [name for flag, name in _ST_POOLING_FLAGS.items() if flags.get(flag)]
            if len(chosen) == 1:
                self.pooling = chosen[0]
            self.normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        logger.info(
            "feature-extraction settings from %s: pooling=%s normalize=%s max_seq_length=%s",
            directory,
            self.pooling,
            self.normalize,
            self.max_seq_length,
        )

    def __call__(
        self,
        texts: str | Iterable[str],
        pooling: str | None = "auto",
        normalize: bool | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
    ) -> list[Any]:
        """Embed each text.

        Args:
            texts: one text, a list or any iterable of texts.
            pooling: ``"auto"`` (the checkpoint folder's sentence-transformers pooling, else ``"mean"``), ``"mean"``
                (over the attention mask), ``"cls"`` (the first token), ``"max"`` (over the mask), or None for the
                per-token hidden states, shaped as Hugging Face's pipeline: ``[1][tokens][hidden]``.
            normalize: L2-normalize pooled embeddings; None: as the folder says (a ``Normalize`` module), else True.
            batch_size: texts per forward pass (None: the pipeline's ``batch_size``, else the task's default).
            max_length: truncate longer inputs to this many tokens (default: the folder's ``max_seq_length``, else
                the tokenizer's limit).

        Returns:
            For a lone string its embedding (a list of floats); for several, one embedding per text.
        """
        items, single = as_texts(texts)
        batch_size = self.batch_size_for(batch_size)
        max_length = max_length if max_length is not None else self.max_seq_length
        if pooling is None:
            results = [self._token_features(batch, max_length) for batch in chunks(items, batch_size)]
            rows = [row for batch in results for row in batch]
        else:
            rows = self.embed(items, pooling=pooling, normalize=normalize, batch_size=batch_size, max_length=max_length)
            rows = rows.tolist()
        return rows[0] if single else rows

    def embed(
        self,
        texts: str | Iterable[str],
        pooling: str = "auto",
        normalize: bool | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Pooled embeddings as a float32 array of shape ``(len(texts), hidden_size)``, in input order.

        Raises:
            ValueError: an unknown ``pooling``.
        """
        pooling = self.pooling if pooling == "auto" else pooling
        normalize = self.normalize if normalize is None else normalize
        if pooling not in POOLINGS or pooling is None:
            raise ValueError(
                f"pooling must be one of 'auto', 'mean', 'cls', 'max' (or None in __call__), got {pooling!r}"
            )
        items, _ = as_texts(texts)
        batch_size = self.batch_size_for(batch_size)
        max_length = max_length if max_length is not None else self.max_seq_length
        out = np.zeros((len(items), self.model.config.hidden_size), dtype=np.float32)
        start = 0
        for batch in chunks(items, batch_size):
            encoding = self.encode(batch, max_length=max_length)
            hidden = self.forward(encoding).last_hidden_state.float()  # (B, T, H)
            pooled = pool(hidden, encoding["attention_mask"].to(hidden.device), pooling)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[start : start + len(batch)] = pooled.cpu().numpy()
            start += len(batch)
        return out

    def _token_features(self, batch: list[str], max_length: int | None) -> list[list[list[list[float]]]]:
        encoding = self.encode(batch, max_length=max_length)
        hidden = self.forward(encoding).last_hidden_state.float().cpu()
        # keep the attended positions of each row (padding may be on either side)
        return [[hidden[i][encoding["attention_mask"][i].bool()].tolist()] for i in range(len(batch))]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (B, T, H) hidden states to (B, H) over the positions where ``attention_mask`` is 1."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if pooling == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    # sentence-transformers' mean pooling: the clamp only guards an all-padding row
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or ``default`` ({} unless given) when the file is absent or not a JSON object/list."""
    default = {} if default is None else default
    if not path.is_file():
        return default
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("ignoring %s: %s", path, err)
        return default
    return value if isinstance(value, type(default)) else default
