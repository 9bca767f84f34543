"""The MLflow pyfunc model that serves a modelcore checkpoint (MLflow "models from code").

MLflow copies this file into the logged model and runs it on load; no pickled object is stored.
The weights travel as the ``checkpoint`` artifact (config.json, safetensors, tokenizer files) and
are loaded with :func:`modelcore.pipeline`, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` answer with the same code path as ``modelcore.pipeline``.

What a request holds and what comes back is the task's (``modelcore.task_registry``, the ``task`` of the
model config): text classification takes a ``text`` column and returns ``label``, ``score`` and one
``prob_<label>`` column per label (image classification the same, from an ``image`` column of base64 image
files or pixel arrays); a causal LM takes prompts (``text``) or chats (``messages``) and the
generation parameters of its params schema, and returns ``generated_text``. A value of the wrong kind (a
number, a null or a list where a string belongs) is refused with an ``INVALID_PARAMETER_VALUE`` error
(HTTP 400 from ``mlflow models serve``) naming the field and the row, never scored as the text ``"None"``.

One loaded model serves the scoring server's threads at once: prediction changes nothing shared.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class ModelcorePyfunc(PythonModel):
    def load_context(self, context):  # no type hints: MLflow reads them as a schema
        from modelcore.pipelines import pipeline
        from modelcore.task_registry import get_task

        self.settings = dict(context.model_config or {})
        self.task = get_task(self.settings.get("task", "text-classification"))
        self.predict_rows = self.task.function("pyfunc_predict")
        self.pipe = pipeline(self.task.pipeline_task, model=context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        from modelcore.errors import DataError
        from modelcore.task_registry.requests import RequestError

        try:
            return self.predict_rows(self.pipe, model_input, params or {}, self.settings)
        except (RequestError, DataError) as error:  # a bad request, or an image that cannot be read
            raise _invalid(str(error)) from None


def _invalid(message):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(f"invalid input: {message}", error_code=INVALID_PARAMETER_VALUE)


mlflow.models.set_model(ModelcorePyfunc())
