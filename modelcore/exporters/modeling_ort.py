"""onnxruntime-backed models that load an export directory and answer like the eager models.

    from modelcore.exporters import OrtModelForSequenceClassification, OrtModelForCausalLM

    clf = OrtModelForSequenceClassification.from_pretrained("out/onnx", threads=2)
    clf(**tokenizer(texts, padding=True, return_tensors="pt")).logits   # (B, num_labels) torch tensor

    lm = OrtModelForCausalLM.from_pretrained("out/llama-onnx")
    lm.generate(input_ids, attention_mask=mask, max_new_tokens=20)       # GenerationMixin, with the KV cache

An export directory holds ``model.onnx`` (its weights in ``model.onnx.data`` beside it),
``config.json``, the tokenizer files and ``report.json``; it can be copied or moved as a whole.
Inputs may be torch tensors or numpy arrays; outputs are torch tensors (CPU, sharing the
onnxruntime buffers).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modelcore.configuration_utils import CONFIG_NAME, PretrainedConfig
from modelcore.generation.configuration import GENERATION_CONFIG_NAME, GenerationConfig
from modelcore.generation.utils import GenerationMixin, left_padded_positions
from modelcore.modeling_outputs import CausalLMOutputWithPast, SequenceClassifierOutput

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
TASK_METADATA_KEY = "modelcore.task"
ORT_DISABLED_OPTIMIZERS_KEY = "modelcore.ort_disabled_optimizers"  # comma-separated; written by onnx_optimize
ORT_SESSION_CONFIG_KEY = "modelcore.ort_session_config"  # JSON {config key: value}; written by onnx_export


def _read_model_proto(path: Path) -> Any:
    """The graph of ``path`` without its weights; ValueError when it is not an ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from None


def _check_external_data(path: Path, proto: Any) -> None:
    """Every external weights file the graph names must lie next to it."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    missing = set()
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            if not (path.parent / location).is_file():
                missing.add(location)
    if missing:
        raise FileNotFoundError(
            f"{path}: its weights file(s) {', '.join(sorted(missing))} are missing from {path.parent} "
            "(copy the whole export directory, not model.onnx alone)"
        )


def load_session(
    path: str | os.PathLike,
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
    session_options: Any = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path``, with errors that name the file.

    The session follows the export's metadata: onnxruntime fusions to leave out
    (``modelcore.ort_disabled_optimizers``) and session config entries (``modelcore.ort_session_config``;
    our exports ask for ``session.set_denormal_as_zero``, which onnxruntime applies to its threads and to
    the thread that creates the session). ``session_options``, when given, replace the latter.

    Raises:
        FileNotFoundError: ``path`` or one of its external weights files is missing.
        ValueError: the file is not a valid ONNX model, or onnxruntime cannot load it.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX model (write one with `modelcore export onnx SRC DST`)")
    proto = _read_model_proto(path)
    _check_external_data(path, proto)
    metadata = {p.key: p.value for p in proto.metadata_props}
    # onnxruntime fusions the export undid on purpose (see onnx_optimize), not to be redone at load
    disabled = [name for name in metadata.get(ORT_DISABLED_OPTIMIZERS_KEY, "").split(",") if name]
    options = session_options
    if options is None:  # the settings the export was measured with (a caller's own options are kept as given)
        options = ort.SessionOptions()
        for key, value in json.loads(metadata.get(ORT_SESSION_CONFIG_KEY, "{}")).items():
            options.add_session_config_entry(key, str(value))
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"], disabled_optimizers=disabled
        )
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types, all with a message
        raise ValueError(f"{path}: onnxruntime cannot load it ({error})") from None


def _numpy(value: torch.Tensor | np.ndarray, dtype: np.dtype) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return array.astype(dtype, copy=False)


class OrtModel:
    """An exported model in an onnxruntime session; subclasses set ``task`` and ``forward``.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        config: the model's configuration (``config.json`` of the export directory).
        path: the ``.onnx`` file loaded.
    """

    task: ClassVar[str] = ""

    def __init__(self, session: Any, config: PretrainedConfig, path: Path) -> None:
        self.session = session
        self.config = config
        self.path = path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @classmethod
    def from_pretrained(
        cls,
        export_dir: str | os.PathLike,
        *,
        file_name: str = ONNX_NAME,
        threads: int | None = None,
        providers: list[str] | None = None,
        session_options: Any = None,
    ) -> OrtModel:
        """Load ``export_dir/file_name`` and ``export_dir/config.json``.

        Args:
            export_dir: a directory written by ``export_onnx`` / ``quantize_onnx`` (or copied from one).
            file_name: the graph to load.
            threads: onnxruntime intra-op threads (default: onnxruntime's, one per physical core).
            providers: execution providers (default CPU).
            session_options: an ``onnxruntime.SessionOptions`` to start from.

        Raises:
            FileNotFoundError: the directory, its config.json, its model file or the weights file is missing.
            ValueError: the model file is corrupt, or holds an export of another task.
        """
        from modelcore.auto.configuration_auto import AutoConfig

        directory = Path(export_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: no such export directory")
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory / CONFIG_NAME}: missing; an export directory holds the model's config")
        path = directory / file_name
        session = load_session(path, threads=threads, providers=providers, session_options=session_options)
        exported_task = session.get_modelmeta().custom_metadata_map.get(TASK_METADATA_KEY)
        if exported_task and cls.task and exported_task != cls.task:
            raise ValueError(f"{path}: holds a {exported_task!r} export, not {cls.task!r}; load it with its own class")
        config = AutoConfig.from_pretrained(directory)
        return cls(session, config, path)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: value for name, value in feeds.items() if name in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def eval(self) -> OrtModel:  # eager models' API, so code written for them runs unchanged
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class OrtModelForSequenceClassification(OrtModel):
    """A ``text-classification`` export: ``input_ids``, ``attention_mask`` [, ``token_type_ids``] -> logits."""

    task = "text-classification"

    def forward(
        self,
        input_ids: torch.Tensor | np.ndarray,
        attention_mask: torch.Tensor | np.ndarray | None = None,
        token_type_ids: torch.Tensor | np.ndarray | None = None,
        **unused: Any,
    ) -> SequenceClassifierOutput:
        """Logits (B, num_labels) for (B, T) inputs; a missing mask means no padding, missing segments are 0."""
        ids = _numpy(input_ids, np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids) if attention_mask is None else _numpy(attention_mask, np.int64),
            "token_type_ids": np.zeros_like(ids) if token_type_ids is None else _numpy(token_type_ids, np.int64),
        }
        return SequenceClassifierOutput(logits=torch.from_numpy(self._run(feeds)["logits"]))


class OrtModelForCausalLM(OrtModel, GenerationMixin):
    """A ``text-generation`` export, with or without past key/value inputs; ``generate`` as for eager models."""

    task = "text-generation"

    def __init__(self, session: Any, config: PretrainedConfig, path: Path) -> None:
        super().__init__(session, config, path)
        self.past_names = [n for n in self.input_names if n.startswith("past_key_values.")]
        self.present_names = [n for n in self.output_names if n.startswith("present.")]
        self.past_shape = {i.name: i.shape for i in session.get_inputs() if i.name in self.past_names}
        generation_file = path.parent / GENERATION_CONFIG_NAME
        self.generation_config = (
            GenerationConfig.from_pretrained(path.parent)
            if generation_file.is_file()
            else GenerationConfig.from_model_config(config)
        )

    @property
    def with_past(self) -> bool:
        return bool(self.past_names)

    def empty_past(self, batch_size: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """Zero-length past keys/values (B, nkv, 0, hs) for each layer: the prompt step's input."""
        arrays = []
        for name in self.past_names:
            _, heads, _, head_dim = self.past_shape[name]
            arrays.append(np.zeros((batch_size, heads, 0, head_dim), dtype=np.float32))
        return tuple(zip(arrays[0::2], arrays[1::2], strict=True))

    def forward(
        self,
        input_ids: torch.Tensor | np.ndarray,
        attention_mask: torch.Tensor | np.ndarray | None = None,
        position_ids: torch.Tensor | np.ndarray | None = None,
        past_key_values: tuple[tuple[Any, Any], ...] | None = None,
        **unused: Any,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, V) for the new tokens (B, T), and the presents when the export has a KV cache.

        Args:
            input_ids: the tokens not yet in ``past_key_values``.
            attention_mask: (B, P + T) covering the past too; None means no padding.
            position_ids: (B, T); default counts from each row's first real token.
            past_key_values: per layer (key, value) (B, nkv, P, hs) from an earlier call; None is empty.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` and ``past_key_values`` (per layer (key, value)) or None.
        """
        ids = _numpy(input_ids, np.int64)
        b, t = ids.shape
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        mask = np.ones((b, past_length + t), np.int64) if attention_mask is None else _numpy(attention_mask, np.int64)
        if position_ids is None:
            position_ids = left_padded_positions(torch.from_numpy(mask))[:, past_length:]
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": _numpy(position_ids, np.int64)}
        if self.with_past:
            past = past_key_values if past_key_values is not None else self.empty_past(b)
            for i, (key, value) in enumerate(past):
                feeds[f"past_key_values.{i}.key"] = _numpy(key, np.float32)
                feeds[f"past_key_values.{i}.value"] = _numpy(value, np.float32)
        elif past_key_values is not None:
            raise ValueError(f"{self.path}: exported without past key/value inputs; pass the whole sequence")
        out = self._run(feeds)
        presents = None
        if self.with_past:
            tensors = [torch.from_numpy(out[name]) for name in self.present_names]
            presents = tuple(zip(tensors[0::2], tensors[1::2], strict=True))
        return CausalLMOutputWithPast(logits=torch.from_numpy(out["logits"]), past_key_values=presents)

    def generation_step(self, sequences: torch.LongTensor, attention_mask: torch.Tensor, past: Any) -> tuple[Any, Any]:
        """One decoding step: only the new tokens when the export has a KV cache, else the whole sequence."""
        seen = 0 if past is None else past[0][0].shape[2]
        out = self.forward(sequences[:, seen:], attention_mask, past_key_values=past)
        return out.logits[:, -1].float(), out.past_key_values


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (task, exporter settings)."""
    proto = _read_model_proto(Path(path))
    return {p.key: p.value for p in proto.metadata_props}


__all__ = ["OrtModel", "OrtModelForCausalLM", "OrtModelForSequenceClassification", "load_session", "read_metadata"]
