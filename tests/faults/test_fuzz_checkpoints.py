"""Fuzz the safetensors shards and the index of a real sharded save: our errors or the exact bytes, nothing else.

A bounded, seeded mutation loop (hypothesis is not a dependency): each case alters one file of a
tiny Llama's sharded checkpoint: byte and bit flips in the header, header-length changes,
truncation, bytes appended or inserted, JSON edits of offsets, shapes, dtypes, entries, names and
metadata; and for the index: byte flips, truncation, invalid UTF-8, and JSON edits of its entries
and metadata. A child process (``_ckpt_load_child.py``) loads every case with ``from_pretrained``
under a time limit. Every outcome must be

* an error of ours (``ModelcoreError``; ``FileNotFoundError`` for a shard the index names that is
  not there) whose message names the altered file, or
* a load whose every loaded tensor equals the original (dtype, shape and bytes): possible only
  when the alteration changed nothing that matters (metadata, whitespace, a dropped index entry,
  which is then reported missing);

never another exception, a hang, or a crash; and a shard the ``safetensors`` library refuses is
refused by us too.

Out of scope by design: alterations that make another well-formed checkpoint (two same-shape
tensors whose offsets are swapped, a float16 tensor relabelled bfloat16); no reader can tell them
from the real thing without content hashes, so the mutations below do not produce them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections import Counter
from pathlib import Path

import pytest

from tests.faults._ckpt_load_child import run_cases
from tests.tiny_models import tiny_llama

SEED = 20240613
SHARD_CASES = 260
INDEX_CASES = 140
INDEX = "model.safetensors.index.json"
DTYPE_NAMES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "U16", "U32", "U64"]
ODD_VALUES = [-1, -4096, 1.5, 0.0, True, None, "8", [], {}, 2**64, 2**63 - 1]


# ------------------------------------------------------------------ safetensors mutations
def split(raw: bytes) -> tuple[int, bytes, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return n, raw[8 : 8 + n], raw[8 + n :]


def assemble(header: bytes, data: bytes, pad: bool = True) -> bytes:
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def tensor_names(header: dict) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def json_edit(header: dict, rng: random.Random) -> str:
    """Change the parsed header in place; return what was done."""
    names = tensor_names(header)
    name = rng.choice(names)
    entry = header[name]
    kind = rng.choice(
        [
            "offset shift",
            "offset end",
            "offset overlap",
            "offset odd",
            "shape",
            "dtype",
            "entry type",
            "entry field",
            "metadata",
            "rename",
            "delete entry",
        ]
    )
    if kind == "offset shift":
        delta = rng.choice([-8, -4, -1, 1, 2, 4, 8, 64])
        entry["data_offsets"] = [o + delta for o in entry["data_offsets"]]
    elif kind == "offset end":
        entry["data_offsets"][1] += rng.choice([-4, -1, 1, 4, 10**6])
    elif kind == "offset overlap":
        same_size = [
            n
            for n in names
            if n != name
            and header[n]["data_offsets"][1] - header[n]["data_offsets"][0]
            == entry["data_offsets"][1] - entry["data_offsets"][0]
        ]
        other = rng.choice(same_size or names)
        entry["data_offsets"] = list(header[other]["data_offsets"])
    elif kind == "offset odd":
        entry["data_offsets"][rng.randrange(2)] = rng.choice(ODD_VALUES)
    elif kind == "shape":
        shape = entry["shape"]
        entry["shape"] = rng.choice(
            [
                [*shape, 1],
                shape[::-1],
                shape[:-1],
                [d * 2 for d in shape],
                [],
                [-d for d in shape],
                [bool(d) for d in shape],
                [float(d) for d in shape],
                [str(d) for d in shape],
                [rng.choice(ODD_VALUES), *shape[1:]],
            ]
        )
    elif kind == "dtype":
        entry["dtype"] = rng.choice([*DTYPE_NAMES, "F33", "f32", "", 4, None])
    elif kind == "entry type":
        header[name] = rng.choice([[1, 2], "F32", 7, None, True])
    elif kind == "entry field":
        if rng.random() < 0.5:
            del entry[rng.choice(["dtype", "shape", "data_offsets"])]
        else:
            entry["extra"] = rng.choice(["x", 1, None])  # the library ignores unknown fields; so do we
    elif kind == "metadata":
        metadata = header.setdefault("__metadata__", {})
        change = rng.choice(["add", "odd value", "drop", "save id", "not a map"])
        if change == "add":
            metadata["note"] = "harmless"
        elif change == "odd value":
            metadata["format"] = rng.choice(ODD_VALUES)
        elif change == "drop":
            del header["__metadata__"]
        elif change == "save id":
            metadata["modelcore_save_id"] = "0" * 32
        else:
            header["__metadata__"] = rng.choice([[], "pt", 1])
        kind += f" {change}"
    elif kind == "rename":
        header[name + rng.choice(["x", ".", "_"])] = header.pop(name)
    else:
        del header[name]
    return f"json {kind} ({name})"


def textual_edit(header: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Edits json.dumps cannot produce: duplicate keys, NaN, lone surrogates, whitespace, bad UTF-8."""
    body = header.rstrip(b" ")
    parsed = json.loads(body)
    name = rng.choice(tensor_names(parsed))
    kind = rng.choice(["duplicate key", "NaN", "surrogate", "whitespace", "bad utf-8", "leading space"])
    if kind == "duplicate key":
        entry = json.dumps({name: parsed[name]}).encode()[1:-1]
        return body[:-1] + b"," + entry + b"}", kind
    if kind == "NaN":
        return body.replace(b'"shape":[', b'"shape":[NaN,', 1), kind
    if kind == "surrogate":
        return body.replace(json.dumps(name).encode(), b'"\\ud800' + name.encode() + b'"', 1), kind
    if kind == "whitespace":
        return json.dumps(parsed, indent=1).encode(), kind  # same content, other layout: harmless
    if kind == "bad utf-8":
        at = rng.randrange(1, len(body) - 1)
        return body[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + body[at:], kind
    return b"  \n" + body, kind


def mutate_shard(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    n, header, data = split(raw)
    kind = rng.choice(
        ["flip bytes", "flip bit", "header length", "truncate", "append", "insert", "json", "json", "json", "text"]
    )
    if kind == "flip bytes":
        out = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(8, 8 + n)] = rng.randrange(256)
        return bytes(out), kind
    if kind == "flip bit":
        out = bytearray(raw)
        at = rng.randrange(0, 8 + n)
        out[at] ^= 1 << rng.randrange(8)
        return bytes(out), f"{kind} at {at}"
    if kind == "header length":
        new = rng.choice([n + rng.choice([-9, -8, -1, 1, 8, 9]), 0, n * 2, len(raw), 2**63, rng.randrange(2**64)])
        return struct.pack("<Q", new) + raw[8:], f"{kind} {n} -> {new}"
    if kind == "truncate":
        at = rng.randrange(len(raw))
        return raw[:at], f"{kind} at {at}"
    if kind == "append":
        return raw + rng.randbytes(rng.randint(1, 64)), kind
    if kind == "insert":
        at = rng.choice([8 + n, 8 + n, rng.randrange(len(raw))])  # right after the header: the shift attack
        return raw[:at] + rng.randbytes(rng.choice([1, 4, 8, 64])) + raw[at:], f"{kind} at {at}"
    if kind == "json":
        parsed = json.loads(header)
        what = json_edit(parsed, rng)
        return assemble(json.dumps(parsed).encode(), data), what
    text, what = textual_edit(header, rng)
    return assemble(text, data), f"text {what}"


# ------------------------------------------------------------------ index mutations
def mutate_index(raw: bytes, rng: random.Random, shards: list[str], case_dir: Path) -> tuple[bytes, str]:
    kind = rng.choice(["flip bytes", "truncate", "bad utf-8", "json", "json", "json", "duplicate key"])
    if kind == "flip bytes":
        out = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] = rng.randrange(32, 127)
        return bytes(out), kind
    if kind == "truncate":
        return raw[: rng.randrange(len(raw))], kind
    if kind == "bad utf-8":
        at = rng.randrange(len(raw))
        return raw[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82"]) + raw[at:], kind
    if kind == "duplicate key":
        text = raw.decode()
        line = rng.choice([line for line in text.splitlines() if line.startswith('    "')]).rstrip(",")
        return text.replace(line, f"{line},\n{line}", 1).encode(), kind
    index = json.loads(raw)
    weight_map, metadata = index["weight_map"], index["metadata"]
    name = rng.choice(list(weight_map))
    edit = rng.choice(["value", "value", "key", "drop entry", "weight_map", "metadata", "total_size", "save id"])
    if edit == "value":
        outside = case_dir.parent / f"{case_dir.name}-outside.safetensors"
        choice = rng.choice(
            ["missing", "other shard", "parent", "absolute", "empty", "dot", "odd", "symlink", "same shard"]
        )
        if choice == "symlink":
            shutil.copyfile(case_dir / weight_map[name], outside)
            (case_dir / "link.safetensors").symlink_to(outside)
        weight_map[name] = {
            "missing": "model-00009-of-00009.safetensors",
            "other shard": rng.choice([s for s in shards if s != weight_map[name]]),
            "parent": f"../{case_dir.name}/{weight_map[name]}",
            "absolute": str(case_dir / weight_map[name]),
            "empty": "",
            "dot": ".",
            "odd": rng.choice(ODD_VALUES),
            "symlink": "link.safetensors",
            "same shard": f"./{weight_map[name]}",
        }[choice]
        edit += f" {choice}"
    elif edit == "key":
        weight_map[name + "x"] = weight_map.pop(name)
    elif edit == "drop entry":
        del weight_map[name]
    elif edit == "weight_map":
        index["weight_map"] = rng.choice([[], "model.safetensors", {}, None, 3])
    elif edit == "metadata":
        index["metadata"] = rng.choice([[], None, "x", {}])
    elif edit == "total_size":
        metadata["total_size"] = rng.choice(ODD_VALUES + [10**30])
    else:
        metadata["modelcore_save_id"] = rng.choice(["0" * 32, 5, None])
    return json.dumps(index, indent=2).encode(), f"json {edit} ({name})"


# ------------------------------------------------------------------ the run
def build_cases(reference: Path, work: Path) -> tuple[list[dict], dict[str, dict]]:
    rng = random.Random(SEED)
    shards = sorted(p.name for p in reference.glob("model-*.safetensors"))
    cases, info = [], {}
    for i in range(SHARD_CASES + INDEX_CASES):
        case_dir = work / f"c{i:03d}"
        shutil.copytree(reference, case_dir, copy_function=os.link)  # hard links: only the altered file is new
        if i < SHARD_CASES:
            target = case_dir / rng.choice(shards)
            data, what = mutate_shard(target.read_bytes(), rng)
        else:
            target = case_dir / INDEX
            data, what = mutate_index(target.read_bytes(), rng, shards, case_dir)
        target.unlink()  # never write through a hard link into the reference
        target.write_bytes(data)
        case_id = f"{i:03d} {target.name}: {what}"
        cases.append({"id": case_id, "dir": str(case_dir), "shard": str(target) if i < SHARD_CASES else None})
        info[case_id] = {"file": str(target), "index": i >= SHARD_CASES}
    return cases, info


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    reference = tmp_path_factory.mktemp("reference")
    tiny_llama().save_pretrained(reference, max_shard_size=40_000)
    assert len(list(reference.glob("model-*.safetensors"))) == 3
    work = tmp_path_factory.mktemp("fuzz")
    cases, info = build_cases(reference, work)
    results = run_cases(reference, cases, work, case_timeout_s=5.0, total_timeout_s=150.0)
    return results, info


def test_fuzzed_checkpoints_load_exactly_or_fail_with_our_error_naming_the_file(fuzz_results):
    results, info = fuzz_results
    bad = []
    for case_id, result in results.items():
        file = info[case_id]["file"]
        if result["outcome"] == "loaded":
            if not result["equal"]:
                bad.append(f"{case_id}: loaded tensors that differ from the original")
            if result.get("reference_refuses"):
                bad.append(f"{case_id}: loaded a shard the safetensors library refuses")
        elif result["outcome"] == "error":
            if not result["ours"]:
                bad.append(f"{case_id}: {result['type']}: {result['message'][:300]}")
            elif result["type"] == "FileNotFoundError" and not info[case_id]["index"]:
                bad.append(f"{case_id}: FileNotFoundError for an altered shard: {result['message'][:300]}")
            elif file not in result["message"]:
                bad.append(f"{case_id}: the message does not name {file}: {result['message'][:300]}")
        else:
            bad.append(f"{case_id}: {result['outcome']}")
    assert not bad, "\n".join(bad)


def test_fuzz_covers_refusals_and_harmless_changes(fuzz_results):
    results, _ = fuzz_results
    outcomes = Counter(r["outcome"] if r["outcome"] != "error" else r["type"] for r in results.values())
    assert len(results) == SHARD_CASES + INDEX_CASES
    assert outcomes["SafetensorsError"] > 100 and outcomes["CheckpointError"] > 50, outcomes
    assert outcomes["loaded"] >= 10, outcomes  # metadata and whitespace edits load, unchanged
