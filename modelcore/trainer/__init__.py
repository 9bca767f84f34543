"""Training: arguments, the loop, callbacks, checkpoints and distillation."""

from modelcore._lazy import lazy_exports

_EXPORTS = {
    "TrainingArguments": "arguments",
    "Trainer": "trainer",
    "TrainingDivergedError": "trainer",
    "EvalPrediction": "trainer",
    "PredictionOutput": "trainer",
    "TrainOutput": "trainer",
    "DistillationTrainer": "distillation",
    "TrainerCallback": "callbacks",
    "TrainerState": "callbacks",
    "TrainerControl": "callbacks",
    "EarlyStoppingCallback": "callbacks",
    "ProgressCallback": "callbacks",
    "LoggingCallback": "callbacks",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
