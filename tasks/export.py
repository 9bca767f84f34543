"""Export and quantization tasks: each conversion is checked against the eager model it came from."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.serialization.atomic import atomic_write_text

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5  # max abs logit difference allowed for a lossless (safetensors) export


@task(name="export_safetensors", cache_policy=NO_CACHE)
def export_safetensors(checkpoint: str, output_dir: str, max_shard_size: str, check_texts: list[str]) -> dict[str, Any]:
    """Re-save ``checkpoint`` as sharded safetensors with an index, reload it and compare logits.

    Returns:
        ``{"path", "shards", "max_abs_logit_diff"}``.

    Raises:
        RuntimeError: when the reloaded export's logits differ from the checkpoint's.
    """
    from modelcore.pipelines import pipeline

    source = pipeline("text-classification", model=checkpoint)
    out = Path(output_dir)
    source.model.save_pretrained(out, max_shard_size=max_shard_size)
    source.tokenizer.save_pretrained(out)
    exported = pipeline("text-classification", model=out)
    diff = float(abs(source.predict_logits(check_texts) - exported.predict_logits(check_texts)).max())
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"{out}: safetensors export changed the logits by {diff:.3g}")
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    report = {"path": str(out), "shards": shards, "max_abs_logit_diff": diff}
    atomic_write_text(out / "export_check.json", json.dumps(report, indent=2) + "\n")
    logger.info("safetensors export: %d shard(s), max abs logit diff %.3g", len(shards), diff)
    return report
