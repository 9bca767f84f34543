"""The MLflow pyfunc model that serves a modelcore checkpoint (MLflow "models from code").

MLflow copies this file into the logged model and runs it on load; no pickled object is stored.
The weights travel as the ``checkpoint`` artifact (config.json, safetensors, tokenizer files) and
are loaded with :func:`modelcore.pipeline`, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` answer with the same code path as ``modelcore.pipeline``.

Input: a DataFrame with a ``text`` column (or a list of strings). Output: a DataFrame with
``label`` and ``score`` (the top label) and one ``prob_<label>`` column per label.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class ModelcorePyfunc(PythonModel):
    def load_context(self, context):  # no type hints: MLflow reads them as a schema
        from modelcore.pipelines import pipeline

        config = context.model_config or {}
        self.batch_size = int(config.get("batch_size", 64))
        self.max_length = config.get("max_length")
        self.pipe = pipeline(config.get("task", "text-classification"), model=context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            if "text" not in model_input.columns:
                raise ValueError(f"input needs a 'text' column; got columns {list(model_input.columns)}")
            texts = model_input["text"].astype(str).tolist()
        elif isinstance(model_input, str):
            texts = [model_input]
        else:
            texts = [str(t) for t in model_input]
        probs = self.pipe.predict_proba(texts, batch_size=self.batch_size, max_length=self.max_length)
        id2label = self.pipe.model.config.id2label
        names = [id2label.get(i, str(i)) for i in range(probs.shape[1])]
        best = probs.argmax(axis=1)
        frame = pd.DataFrame({"label": [names[i] for i in best], "score": probs.max(axis=1).astype(float)})
        for i, name in enumerate(names):
            frame[f"prob_{name}"] = probs[:, i].astype(float)
        return frame


mlflow.models.set_model(ModelcorePyfunc())
