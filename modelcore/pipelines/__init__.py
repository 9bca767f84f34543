"""``pipeline(task, model=..., device=...)``: a checkpoint plus its tokenizer behind one call.

One module per task; :data:`TASKS` maps task names (and aliases) to pipeline classes.
"""

from __future__ import annotations

from modelcore.pipelines.base import TASKS, Pipeline, pipeline
from modelcore.pipelines.text_classification import TextClassificationPipeline

__all__ = ["TASKS", "Pipeline", "TextClassificationPipeline", "pipeline"]
