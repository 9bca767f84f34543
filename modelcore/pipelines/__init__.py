"""``pipeline(task, model=..., device=...)``: a checkpoint plus its tokenizer behind one call.

One module per task; :data:`TASKS` maps task names (and aliases) to pipeline classes.
"""

from __future__ import annotations

from modelcore.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline
from modelcore.pipelines.base import TASKS, Pipeline, pipeline
from modelcore.pipelines.feature_extraction import FeatureExtractionPipeline
from modelcore.pipelines.fill_mask import FillMaskPipeline
from modelcore.pipelines.image_classification import ImageClassificationPipeline
from modelcore.pipelines.question_answering import QuestionAnsweringPipeline
from modelcore.pipelines.text_classification import TextClassificationPipeline
from modelcore.pipelines.text_generation import TextGenerationPipeline
from modelcore.pipelines.token_classification import TokenClassificationPipeline
from modelcore.pipelines.zero_shot_classification import ZeroShotClassificationPipeline

__all__ = [
    "TASKS",
    "AutomaticSpeechRecognitionPipeline",
    "FeatureExtractionPipeline",
    "FillMaskPipeline",
    "ImageClassificationPipeline",
    "Pipeline",
    "QuestionAnsweringPipeline",
    "TextClassificationPipeline",
    "TextGenerationPipeline",
    "TokenClassificationPipeline",
    "ZeroShotClassificationPipeline",
    "pipeline",
]
