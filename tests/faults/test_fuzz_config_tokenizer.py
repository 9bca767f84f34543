"""Fuzz config.json and the tokenizer files of real checkpoints: our errors naming the file, or a working load.

A bounded, seeded mutation loop (hypothesis is not a dependency) over

* config.json: the real all-MiniLM-L6-v2 one; the same with small sizes (so that its model is built and run);
  a tiny Llama one with llama3 rope scaling;
* the real MiniLM tokenizer files: tokenizer.json, tokenizer_config.json, special_tokens_map.json, and
  vocab.txt (in a folder without tokenizer.json, so that the WordPiece pipeline is built from it).

Each case alters one file once: a JSON value replaced by one of another type, NaN or +-Infinity, a huge,
negative or zero number, a deleted key, a long or empty string; or the bytes: flipped, truncated, invalid
UTF-8 inserted. A child process (``_config_tokenizer_child.py``) loads every case under a time limit and
uses what loaded (a config builds its model, run when small; a tokenizer encodes and decodes a batch).
Every outcome must be

* an error of ours (``ModelcoreError``) whose message names the altered file, or
* a load, after which the model runs or is refused by an error of ours, and the tokenizer encodes;

never another exception (``PanicException``, ``TypeError``, ``KeyError``, ``UnicodeDecodeError``...), a
hang, or a crash.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modelcore import BertConfig, LlamaConfig
from tests.faults._config_tokenizer_child import run_cases

SEED = int(os.environ.get("MODELCORE_FUZZ_SEED", "20240614"))  # another seed: other cases
CASES_PER_CONFIG = 75  # x 3 configs
CASES_PER_TOKENIZER_FILE = {"tokenizer.json": 60, "tokenizer_config.json": 45, "special_tokens_map.json": 30}
VOCAB_CASES = 35
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

ODD_VALUES: list[Any] = [None, True, False, "", "x", "gelu", [], {}, [1, 2], {"content": 5}, {"a": 1}, 0, 1, -1]
ODD_VALUES += [0.5, -0.5, 1e-300, 1e300, 2**31, 2**63, 10**12, 10**30, 7.5]
NON_FINITE = [float("nan"), float("inf"), float("-inf")]
INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]


# ------------------------------------------------------------------ mutations
def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a parsed JSON value (objects and arrays), skipping the bulk of a vocabulary."""
    paths = []
    if isinstance(value, dict):
        items = list(value.items())
        if prefix[-1:] == ("vocab",):
            items = items[:5]  # a few vocabulary entries, not 30,000
        for key, item in items:
            paths.append((*prefix, key))
            paths.extend(json_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value[:5]):
            paths.append((*prefix, index))
            paths.extend(json_paths(item, (*prefix, index)))
    return paths


def replacement(current: Any, rng: random.Random) -> Any:
    """Another value for a JSON slot: a different type, a non-finite float, an extreme or derived number."""
    kind = rng.random()
    if kind < 0.2:
        return rng.choice(NON_FINITE)
    if kind < 0.35 and isinstance(current, (int, float)) and not isinstance(current, bool):
        return rng.choice([current * 2, current + 1, current - 1, -current, current * 10**9, current / 3])
    if kind < 0.45 and isinstance(current, str):
        return rng.choice(["", current * 2, current[::-1], "\u00e9\u65e5\U0001f600", "a" * 100_000, current + "\x00"])
    return rng.choice(ODD_VALUES)


def json_edit(data: Any, rng: random.Random) -> tuple[Any, str]:
    """One edit of a parsed JSON document: a value replaced, a key deleted or added."""
    paths = json_paths(data)
    path = rng.choice(paths)
    *parents, last = path
    container = data
    for key in parents:
        container = container[key]
    action = rng.random()
    if action < 0.12 and isinstance(container, dict):
        del container[last]
        return data, f"delete {'.'.join(map(str, path))}"
    if action < 0.17 and isinstance(container, dict):
        container[f"unknown_{rng.randrange(100)}"] = rng.choice(ODD_VALUES)
        return data, "add an unknown key"
    new = replacement(container[last], rng)
    container[last] = new
    return data, f"{'.'.join(map(str, path))} = {str(new)[:40]!r}"


def byte_edit(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One edit of a file's bytes: flips, truncation, invalid UTF-8, emptied."""
    action = rng.random()
    position = rng.randrange(len(raw))
    if action < 0.3:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), "bit flips"
    if action < 0.55:
        return raw[:position], f"truncated at {position}"
    if action < 0.9:
        bad = rng.choice(INVALID_UTF8)
        return raw[:position] + bad + raw[position:], f"invalid UTF-8 {bad!r} at {position}"
    return b"", "emptied"


def mutate(name: str, raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    if name == "vocab.txt" or rng.random() < 0.25:
        return byte_edit(raw, rng)
    data, what = json_edit(json.loads(raw), rng)
    return json.dumps(data, allow_nan=True).encode("utf-8"), what


# ------------------------------------------------------------------ the reference folders
def small_minilm_config(minilm_dir: Path) -> dict[str, Any]:
    """The real MiniLM config.json with small sizes: every key of the real file, a model that runs in ms."""
    data = json.loads((minilm_dir / "config.json").read_text())
    data.update(vocab_size=500, hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2)
    data.update(max_position_embeddings=32)
    assert BertConfig.from_dict(data)  # a valid start
    return data


def tiny_llama_config() -> dict[str, Any]:
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_scaling={**rope, "original_max_position_embeddings": 16},
    )
    return config.to_dict()


def reference_folders(minilm_dir: Path, work: Path) -> dict[str, Path]:
    folders = {name: work / f"ref-{name}" for name in ("minilm", "small-bert", "llama", "tokenizer", "vocab")}
    for folder in folders.values():
        folder.mkdir()
    shutil.copy(minilm_dir / "config.json", folders["minilm"])
    (folders["small-bert"] / "config.json").write_text(json.dumps(small_minilm_config(minilm_dir)))
    (folders["llama"] / "config.json").write_text(json.dumps(tiny_llama_config()))
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, folders["tokenizer"])
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folders["vocab"])
    return folders


def build_cases(minilm_dir: Path, work: Path) -> tuple[list[dict], dict[str, str]]:
    """The mutated case folders; returns the cases and, by case id, the altered file."""
    rng = random.Random(SEED)
    folders = reference_folders(minilm_dir, work)
    plan = [(ref, "config", "config.json", CASES_PER_CONFIG) for ref in ("minilm", "small-bert", "llama")]
    plan += [("tokenizer", "tokenizer", name, count) for name, count in CASES_PER_TOKENIZER_FILE.items()]
    plan.append(("vocab", "tokenizer", "vocab.txt", VOCAB_CASES))
    cases, altered = [], {}
    for reference, kind, name, count in plan:
        original = (folders[reference] / name).read_bytes()
        for _ in range(count):
            case_dir = work / f"c{len(cases):03d}"
            shutil.copytree(folders[reference], case_dir, copy_function=os.link)  # only the altered file is new
            data, what = mutate(name, original, rng)
            target = case_dir / name
            target.unlink()  # never write through a hard link into the reference
            target.write_bytes(data)
            case_id = f"{len(cases):03d} {reference}/{name}: {what}"
            cases.append({"id": case_id, "kind": kind, "dir": str(case_dir)})
            altered[case_id] = str(target)
    return cases, altered


@pytest.fixture(scope="module")
def fuzz_results(minilm_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz-config-tokenizer")
    cases, altered = build_cases(Path(minilm_dir), work)
    return run_cases(cases, work, case_timeout_s=10.0, total_timeout_s=240.0), altered


# ------------------------------------------------------------------ the checks
def test_fuzzed_files_load_or_fail_with_our_error_naming_the_file(fuzz_results):
    results, altered = fuzz_results
    bad = []
    for case_id, result in results.items():
        if result["outcome"] == "error":
            if not result["ours"]:
                bad.append(f"{case_id}: {result['type']}: {result['message'][:300]}")
            elif altered[case_id] not in result["message"]:
                bad.append(f"{case_id}: the message does not name {altered[case_id]}: {result['message'][:300]}")
        elif result["outcome"] == "loaded":
            if result["use"] == "error" and not result["use_ours"]:
                bad.append(f"{case_id}: loaded, then {result['use_type']}: {result['use_message'][:300]}")
            if result["use"] == "meta" and not result["meta"]:
                bad.append(f"{case_id}: a large model was built with real tensors")
        else:
            bad.append(f"{case_id}: {result['outcome']}")
    assert not bad, "\n".join(bad)


def test_fuzz_covers_refusals_loads_and_forwards(fuzz_results):
    results, _ = fuzz_results
    total = 3 * CASES_PER_CONFIG + sum(CASES_PER_TOKENIZER_FILE.values()) + VOCAB_CASES
    assert len(results) == total
    outcomes = Counter(
        r["type"].rsplit(".", 1)[-1] if r["outcome"] == "error" else r["outcome"] for r in results.values()
    )
    uses = Counter(r.get("use") for r in results.values())
    assert outcomes["ConfigError"] >= 60 and outcomes["TokenizerError"] >= 40, outcomes
    assert outcomes["loaded"] >= 80, outcomes
    assert uses["forward"] >= 30 and uses["meta"] >= 10 and uses["encoded"] >= 20, uses
