"""Hostile config.json and tokenizer files: each refused with an error of ours naming the file and the key.

Every case is one real file, altered in one way, in a copy of the real all-MiniLM-L6-v2 folder (or of a
tiny Llama config), loaded by a child process (``_config_tokenizer_child.py``) under a time limit, the
way a user loads it: ``AutoConfig`` / ``AutoModel`` / ``AutoTokenizer.from_pretrained``. Before these
fixes some of them raised a bare ``UnicodeDecodeError``, ``KeyError`` or ``TypeError`` without the file,
loaded (``layer_norm_eps: NaN`` gave NaN outputs), or raised ``pyo3_runtime.PanicException``, which no
``except Exception`` catches.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelcore import LlamaConfig
from tests.faults._config_tokenizer_child import run_cases

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TOKEN_SHAPES: dict[str, Any] = {
    "a list": ["[PAD]"],
    "a number": 0,
    "an object without content": {"lstrip": False},
    "an AddedToken with a number as content": {"__type": "AddedToken", "content": 5, "lstrip": False},
    "an AddedToken with a string flag": {"content": "[PAD]", "lstrip": "yes"},
}
# A tokenizer.json normalizer the Rust library panics on while loading it (tokenizers 0.20-0.23).
PANICKING_NORMALIZER = {"type": "Precompiled", "precompiled_charsmap": None}
# A post-processor that loads, then panics on every encode: its template names a token it has no id for.
PANICKING_TEMPLATE = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {},
}
TINY_LLAMA = LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4
)


def edit_json(**changes: Any) -> Callable[[bytes], bytes]:
    """An alteration setting top-level keys (None deletes), written with NaN/Infinity literals allowed."""

    def alter(raw: bytes) -> bytes:
        data = json.loads(raw)
        for key, value in changes.items():
            data[key] = value
        return json.dumps(data, allow_nan=True).encode()

    return alter


def edit_nested(path: tuple, value: Any) -> Callable[[bytes], bytes]:
    def alter(raw: bytes) -> bytes:
        data = json.loads(raw)
        container = data
        for key in path[:-1]:
            container = container[key]
        container[path[-1]] = value
        return json.dumps(data, allow_nan=True).encode()

    return alter


def insert_bytes(after: bytes, bad: bytes) -> Callable[[bytes], bytes]:
    def alter(raw: bytes) -> bytes:
        at = raw.index(after) + len(after)
        return raw[:at] + bad + raw[at:]

    return alter


def replace_with(data: bytes) -> Callable[[bytes], bytes]:
    return lambda raw: data


# (case id, folder, file, alteration, loader kind, error type, words the message must hold besides the path)
CASES: list[tuple[str, str, str, Callable[[bytes], bytes], str, str, list[str]]] = [
    # config.json: bytes, syntax, shape
    (
        "config-invalid-utf8",
        "bert",
        "config.json",
        insert_bytes(b'"gelu', b"\xff"),
        "config",
        "ConfigError",
        ["UTF-8", "byte"],
    ),
    (
        "config-truncated",
        "bert",
        "config.json",
        lambda raw: raw[:200],
        "config",
        "ConfigError",
        ["JSON", "line", "column"],
    ),
    (
        "config-array",
        "bert",
        "config.json",
        replace_with(b"[1, 2, 3]"),
        "config",
        "ConfigError",
        ["JSON object", "array"],
    ),
    (
        "config-wrong-type",
        "bert",
        "config.json",
        edit_json(hidden_size="384"),
        "config",
        "ConfigError",
        ["hidden_size"],
    ),
    (
        "config-model-type-list",
        "bert",
        "config.json",
        edit_json(model_type=["bert"]),
        "config",
        "ConfigError",
        ["model_type"],
    ),
    (
        "config-id2label-keys",
        "bert",
        "config.json",
        edit_json(id2label={"zero": "a"}),
        "config",
        "ConfigError",
        ["id2label"],
    ),
    # non-finite floats where a finite one is needed
    (
        "config-eps-nan",
        "bert",
        "config.json",
        edit_json(layer_norm_eps=float("nan")),
        "config",
        "ConfigError",
        ["layer_norm_eps", "finite"],
    ),
    (
        "config-dropout-inf",
        "bert",
        "config.json",
        edit_json(hidden_dropout_prob=float("inf")),
        "config",
        "ConfigError",
        ["hidden_dropout_prob", "finite"],
    ),
    (
        "config-attention-dropout-nan",
        "bert",
        "config.json",
        edit_json(attention_probs_dropout_prob=float("nan")),
        "config",
        "ConfigError",
        ["attention_probs_dropout_prob"],
    ),
    (
        "config-init-range-neg-inf",
        "bert",
        "config.json",
        edit_json(initializer_range=float("-inf")),
        "config",
        "ConfigError",
        ["initializer_range", "finite"],
    ),
    (
        "llama-rms-eps-nan",
        "llama",
        "config.json",
        edit_json(rms_norm_eps=float("nan")),
        "config",
        "ConfigError",
        ["rms_norm_eps", "finite"],
    ),
    (
        "llama-rope-theta-inf",
        "llama",
        "config.json",
        edit_json(rope_theta=float("inf"), rope_parameters=None),
        "config",
        "ConfigError",
        ["rope_theta", "finite"],
    ),
    (
        "llama-rope-factor-nan",
        "llama",
        "config.json",
        edit_json(rope_scaling={"rope_type": "linear", "factor": float("nan")}),
        "config",
        "ConfigError",
        ["factor", "finite"],
    ),
    # absurd sizes: refused by AutoModel.from_pretrained before anything is built
    ("config-vocab-1e12", "bert", "config.json", edit_json(vocab_size=10**12), "model", "ConfigError", ["vocab_size"]),
    (
        "llama-layers-1e6",
        "llama",
        "config.json",
        edit_json(num_hidden_layers=10**6),
        "model",
        "ConfigError",
        ["num_hidden_layers"],
    ),
    (
        "llama-hidden-1e9",
        "llama",
        "config.json",
        edit_json(hidden_size=10**9, num_attention_heads=1000, head_dim=None),
        "model",
        "ConfigError",
        ["hidden_size"],
    ),
    (
        "llama-intermediate-1e8",
        "llama",
        "config.json",
        edit_json(intermediate_size=10**8),
        "model",
        "ConfigError",
        ["intermediate_size"],
    ),
    (
        "llama-estimate-2e15",
        "llama",
        "config.json",
        edit_json(vocab_size=2**31 - 1, hidden_size=2**20, num_attention_heads=2**10, head_dim=None),
        "model",
        "ConfigError",
        ["parameters", "vocab_size x hidden_size"],
    ),
    (
        "config-heads-not-dividing",
        "bert",
        "config.json",
        edit_json(num_attention_heads=7),
        "model",
        "ConfigError",
        ["hidden_size", "num_attention_heads"],
    ),
    # tokenizer.json
    (
        "tokenizer-json-invalid-utf8",
        "tokenizer",
        "tokenizer.json",
        insert_bytes(b'"[UNK]', b"\xc3\x28"),
        "tokenizer",
        "TokenizerError",
        ["UTF-8", "byte", "line"],
    ),
    (
        "tokenizer-json-truncated",
        "tokenizer",
        "tokenizer.json",
        lambda raw: raw[:1000],
        "tokenizer",
        "TokenizerError",
        ["JSON", "line", "column"],
    ),
    (
        "tokenizer-json-array",
        "tokenizer",
        "tokenizer.json",
        replace_with(b"[]"),
        "tokenizer",
        "TokenizerError",
        ["JSON object"],
    ),
    (
        "tokenizer-json-panic-on-load",
        "tokenizer",
        "tokenizer.json",
        edit_json(normalizer=PANICKING_NORMALIZER),
        "tokenizer",
        "TokenizerError",
        ["panicked", "normalizer"],
    ),
    (
        "tokenizer-json-panic-on-encode",
        "tokenizer",
        "tokenizer.json",
        edit_json(post_processor=PANICKING_TEMPLATE),
        "tokenizer",
        "TokenizerError",
        ["panicked", "post_processor"],
    ),
    (
        "tokenizer-json-bad-regex",
        "tokenizer",
        "tokenizer.json",
        edit_json(
            pre_tokenizer={
                "type": "Split",
                "pattern": {"Regex": "a{100000}{100000}"},
                "behavior": "Isolated",
                "invert": False,
            }
        ),
        "tokenizer",
        "TokenizerError",
        ["pre_tokenizer", "too big number"],
    ),
    (
        "tokenizer-json-vocab-list",
        "tokenizer",
        "tokenizer.json",
        edit_nested(("model", "vocab"), ["[PAD]"]),
        "tokenizer",
        "TokenizerError",
        ['"model"'],
    ),
    (
        "tokenizer-json-huge-id",
        "tokenizer",
        "tokenizer.json",
        edit_nested(("model", "vocab", "[unused1]"), 2**31),
        "tokenizer",
        "TokenizerError",
        ["model.vocab", "[unused1]"],
    ),
    # tokenizer_config.json / special_tokens_map.json: bytes, syntax, shape, settings
    (
        "tokenizer-config-invalid-utf8",
        "tokenizer",
        "tokenizer_config.json",
        insert_bytes(b'"[PAD]', b"\x80"),
        "tokenizer",
        "TokenizerError",
        ["UTF-8", "byte"],
    ),
    (
        "tokenizer-config-not-json",
        "tokenizer",
        "tokenizer_config.json",
        replace_with(b"{'pad_token': '[PAD]'}"),
        "tokenizer",
        "TokenizerError",
        ["JSON", "line 1, column 2"],
    ),
    (
        "tokenizer-config-string",
        "tokenizer",
        "tokenizer_config.json",
        replace_with(b'"[PAD]"'),
        "tokenizer",
        "TokenizerError",
        ["JSON object", "string"],
    ),
    (
        "special-tokens-map-invalid-utf8",
        "tokenizer",
        "special_tokens_map.json",
        insert_bytes(b'"[SEP]', b"\xed\xa0\x80"),
        "tokenizer",
        "TokenizerError",
        ["UTF-8"],
    ),
    (
        "special-tokens-map-array",
        "tokenizer",
        "special_tokens_map.json",
        replace_with(b'["[PAD]"]'),
        "tokenizer",
        "TokenizerError",
        ["JSON object"],
    ),
    (
        "model-max-length-nan",
        "tokenizer",
        "tokenizer_config.json",
        edit_json(model_max_length=float("nan")),
        "tokenizer",
        "TokenizerError",
        ["model_max_length"],
    ),
    (
        "model-max-length-string",
        "tokenizer",
        "tokenizer_config.json",
        edit_json(model_max_length="512"),
        "tokenizer",
        "TokenizerError",
        ["model_max_length"],
    ),
    (
        "padding-side",
        "tokenizer",
        "tokenizer_config.json",
        edit_json(padding_side="middle"),
        "tokenizer",
        "TokenizerError",
        ["padding_side"],
    ),
    (
        "strip-accents",
        "tokenizer",
        "tokenizer_config.json",
        edit_json(strip_accents="yes"),
        "tokenizer",
        "TokenizerError",
        ["strip_accents"],
    ),
    (
        "additional-special-tokens",
        "tokenizer",
        "special_tokens_map.json",
        edit_json(additional_special_tokens="[X]"),
        "tokenizer",
        "TokenizerError",
        ["additional_special_tokens"],
    ),
    (
        "added-tokens-decoder-key",
        "tokenizer",
        "tokenizer_config.json",
        edit_json(added_tokens_decoder={"x": {"content": "[X]"}}),
        "tokenizer",
        "TokenizerError",
        ["added_tokens_decoder"],
    ),
    (
        "chat-template-number",
        "tokenizer",
        "tokenizer_config.json",
        edit_json(chat_template=5),
        "tokenizer",
        "TokenizerError",
        ["chat_template"],
    ),
    (
        "chat-template-jinja-invalid-utf8",
        "tokenizer",
        "chat_template.jinja",
        replace_with(b"{{ messages \xff }}"),
        "tokenizer",
        "TokenizerError",
        ["UTF-8"],
    ),
    # vocab.txt (a folder without tokenizer.json)
    (
        "vocab-invalid-utf8",
        "vocab",
        "vocab.txt",
        insert_bytes(b"\nthe\n", b"\xff"),
        "tokenizer",
        "TokenizerError",
        ["UTF-8", "line 1998"],
    ),
    (
        "vocab-without-unk",
        "vocab",
        "vocab.txt",
        lambda raw: raw.replace(b"[UNK]\n", b"[UNKNOWN]\n"),
        "tokenizer",
        "TokenizerError",
        ["unk_token", "[UNK]"],
    ),
    (
        "vocab-without-cls",
        "vocab",
        "vocab.txt",
        lambda raw: raw.replace(b"[CLS]\n", b"[CLASS]\n"),
        "tokenizer",
        "TokenizerError",
        ["cls_token", "[CLS]"],
    ),
    ("vocab-empty", "vocab", "vocab.txt", replace_with(b""), "tokenizer", "TokenizerError", ["unk_token", "0 tokens"]),
]
# every special token, in both settings files, in every wrong shape
for _file in ("tokenizer_config.json", "special_tokens_map.json"):
    for _index, _name in enumerate(SPECIAL_TOKENS):
        for _shape, _value in TOKEN_SHAPES.items():
            if _file == "special_tokens_map.json" and (_index + len(_shape)) % 3:  # a third of them: enough
                continue
            CASES.append(
                (f"{_file}-{_name}-{_shape.replace(' ', '-')}", "tokenizer", _file, edit_json(**{_name: _value}),
                 "tokenizer", "TokenizerError", [_name])
            )  # fmt: skip


def reference_folders(minilm_dir: Path, work: Path) -> dict[str, Path]:
    folders = {name: work / f"ref-{name}" for name in ("bert", "llama", "tokenizer", "vocab")}
    for folder in folders.values():
        folder.mkdir()
    shutil.copy(minilm_dir / "config.json", folders["bert"])
    TINY_LLAMA.save_pretrained(folders["llama"])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"):
        shutil.copy(minilm_dir / name, folders["tokenizer"])
    (folders["tokenizer"] / "chat_template.jinja").write_text("{{ messages }}")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folders["vocab"])
    return folders


@pytest.fixture(scope="module")
def hostile_results(minilm_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile-files")
    folders = reference_folders(Path(minilm_dir), work)
    cases, altered = [], {}
    for case_id, folder, name, alter, kind, _, _ in CASES:
        case_dir = work / case_id
        shutil.copytree(folders[folder], case_dir, copy_function=os.link)  # only the altered file is new
        target = case_dir / name
        data = alter(target.read_bytes())
        target.unlink()  # never write through a hard link into the reference
        target.write_bytes(data)
        cases.append({"id": case_id, "kind": kind, "dir": str(case_dir)})
        altered[case_id] = str(target)
    return run_cases(cases, work, case_timeout_s=20.0, total_timeout_s=240.0), altered


@pytest.mark.parametrize(("case_id", "error", "words"), [(c[0], c[5], c[6]) for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_file_is_refused_naming_file_and_key(hostile_results, case_id, error, words):
    results, altered = hostile_results
    result = results[case_id]
    assert result["outcome"] == "error", result
    assert result["ours"] and result["type"] == f"modelcore.errors.{error}", result
    message = result["message"]
    assert altered[case_id] in message, message
    for word in words:
        assert word in message, (word, message)
    if case_id.startswith(("config-vocab", "llama-layers", "llama-hidden", "llama-intermediate", "llama-estimate")):
        assert result["rss_growth"] < 50 * 2**20, result  # refused before any tensor was allocated
