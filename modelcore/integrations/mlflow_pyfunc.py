"""The MLflow pyfunc model that serves a modelcore checkpoint (MLflow "models from code").

MLflow copies this file into the logged model and runs it on load; no pickled object is stored.
The weights travel as the ``checkpoint`` artifact (config.json, safetensors, tokenizer files) and
are loaded with :func:`modelcore.pipeline`, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` answer with the same code path as ``modelcore.pipeline``.

Input: a DataFrame with a ``text`` column (or a list of strings, or ``{"text": [...]}``). Every value
must be a string (empty strings are text too): a number, a null or a list is refused with an
``INVALID_PARAMETER_VALUE`` error (HTTP 400 from ``mlflow models serve``) naming the field and the row,
never scored as the text ``"None"`` or ``"1"``. Output: a DataFrame with ``label`` and ``score`` (the
top label) and one ``prob_<label>`` column per label.

One loaded model serves the scoring server's threads at once: prediction changes nothing shared.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

TEXT_FIELD = "text"


class ModelcorePyfunc(PythonModel):
    def load_context(self, context):  # no type hints: MLflow reads them as a schema
        from modelcore.pipelines import pipeline

        config = context.model_config or {}
        self.batch_size = int(config.get("batch_size", 64))
        self.max_length = config.get("max_length")
        self.pipe = pipeline(config.get("task", "text-classification"), model=context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = input_texts(model_input)
        probs = self.pipe.predict_proba(texts, batch_size=self.batch_size, max_length=self.max_length)
        id2label = self.pipe.model.config.id2label
        names = [id2label.get(i, str(i)) for i in range(probs.shape[1])]
        best = probs.argmax(axis=1)
        frame = pd.DataFrame({"label": [names[i] for i in best], "score": probs.max(axis=1).astype(float)})
        for i, name in enumerate(names):
            frame[f"prob_{name}"] = probs[:, i].astype(float)
        return frame


def input_texts(model_input):
    """The texts of a request, each checked to be a string.

    Accepted: a DataFrame with a ``text`` column, ``{"text": [...]}``, a list (or array) of strings, a list of
    ``{"text": ...}`` rows, or one string.

    Raises:
        MlflowException: (``INVALID_PARAMETER_VALUE``, HTTP 400) no ``text`` field, or a value that is not a
            string; the message names the field and the row.
    """
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if TEXT_FIELD not in model_input.columns:
            raise _invalid(f"the input has no {TEXT_FIELD!r} column (columns: {[str(c) for c in model_input.columns]})")
        values = model_input[TEXT_FIELD].tolist()
    elif isinstance(model_input, dict):
        if TEXT_FIELD not in model_input:
            raise _invalid(f"the input has no {TEXT_FIELD!r} field (fields: {[str(k) for k in model_input]})")
        values = _plain(model_input[TEXT_FIELD])
    else:
        values = _plain(model_input)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise _invalid(
            f"{TEXT_FIELD!r} must be a list of strings (or a DataFrame with a {TEXT_FIELD!r} column); "
            f"got {_kind(values)} ({values!r:.60})"
        )
    texts = []
    for row, value in enumerate(values):
        value = _plain(value)  # `instances` rows arrive as 0-d arrays
        if isinstance(value, dict):  # {"inputs": [{"text": ...}, ...]}: one record per row
            if TEXT_FIELD not in value:
                raise _invalid(f"row {row} has no {TEXT_FIELD!r} field (fields: {[str(k) for k in value]})")
            value = _plain(value[TEXT_FIELD])
        if not isinstance(value, str):
            raise _invalid(f"{TEXT_FIELD!r} of row {row} must be a string, got {_kind(value)} ({value!r:.60})")
        texts.append(value)
    return texts


def _plain(value):
    """Arrays and Series (MLflow's JSON parser makes them) as lists, or as the scalar of a 0-d array."""
    return value.tolist() if hasattr(value, "tolist") and hasattr(value, "ndim") else value


def _kind(value):
    return "null" if value is None or (isinstance(value, float) and value != value) else type(value).__name__


def _invalid(message):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(f"invalid input: {message}", error_code=INVALID_PARAMETER_VALUE)


mlflow.models.set_model(ModelcorePyfunc())
