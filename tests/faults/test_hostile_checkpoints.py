"""Hostile checkpoints: each is refused by a real loading process, with the file (and tensor) named.

Every case is a checkpoint directory built from a real save of a tiny Llama, then altered the way
an attacker or a broken tool would. One child process (``_ckpt_load_child.py``) loads them all with
``from_pretrained``, each under a time limit; this module checks the error type and that the
message names the hostile file and tensor. For every altered safetensors file that the
``safetensors`` library itself refuses, we must refuse it too.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcore.serialization.atomic import JOURNAL_NAME, fsync_file, new_temp_file, write_journal
from tests.faults._ckpt_load_child import run_cases
from tests.tiny_models import tiny_llama

INDEX = "model.safetensors.index.json"
Q_PROJ, O_PROJ = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"


# ------------------------------------------------------------------ raw safetensors editing
def read_raw(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_raw(path: Path, header: dict | bytes, data: bytes) -> None:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def shard_of(directory: Path, tensor: str) -> Path:
    return directory / json.loads((directory / INDEX).read_text())["weight_map"][tensor]


def edit_entry(tensor: str, **changes) -> Callable[[Path], Path]:
    """A case that sets fields of one tensor's header entry (the data stays as it is)."""

    def build(directory: Path) -> Path:
        shard = shard_of(directory, tensor)
        header, data = read_raw(shard)
        header[tensor] = changes.pop("entry") if "entry" in changes else {**header[tensor], **changes}
        write_raw(shard, header, data)
        return shard

    return build


def replace_tensor(tensor: str, dtype: str, shape: list[int], data: bytes) -> Callable[[Path], Path]:
    """A case that replaces one tensor's entry and bytes (later offsets moved): a well-formed file."""

    def build(directory: Path) -> Path:
        shard = shard_of(directory, tensor)
        header, old = read_raw(shard)
        begin, end = header[tensor]["data_offsets"]
        for entry in (e for k, e in header.items() if k != "__metadata__"):
            if entry["data_offsets"][0] >= end:
                entry["data_offsets"] = [o - (end - begin) + len(data) for o in entry["data_offsets"]]
        header[tensor] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, begin + len(data)]}
        write_raw(shard, header, old[:begin] + data + old[end:])
        return shard

    return build


def stray_bytes_after_header(directory: Path) -> Path:
    shard = shard_of(directory, Q_PROJ)
    header, data = read_raw(shard)
    write_raw(shard, header, b"\0" * 8 + data)  # every tensor would be read 8 bytes off
    return shard


def overlapping_offsets(directory: Path) -> Path:
    """o_proj (same shape as q_proj) made to read q_proj's bytes; its own bytes cut out, later offsets moved."""
    shard = shard_of(directory, Q_PROJ)
    header, data = read_raw(shard)
    begin, end = header[O_PROJ]["data_offsets"]
    for entry in (e for k, e in header.items() if k != "__metadata__"):
        if entry["data_offsets"][0] >= end:
            entry["data_offsets"] = [o - (end - begin) for o in entry["data_offsets"]]
    header[O_PROJ]["data_offsets"] = list(header[Q_PROJ]["data_offsets"])
    write_raw(shard, header, data[:begin] + data[end:])
    return shard


def gap_between_tensors(directory: Path) -> Path:
    shard = shard_of(directory, Q_PROJ)
    header, data = read_raw(shard)
    first_end = min(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
    for entry in (e for k, e in header.items() if k != "__metadata__"):
        if entry["data_offsets"][0] >= first_end:
            entry["data_offsets"] = [o + 8 for o in entry["data_offsets"]]
    write_raw(shard, header, data[:first_end] + b"\0" * 8 + data[first_end:])
    return shard


def trailing_bytes(directory: Path) -> Path:
    shard = shard_of(directory, Q_PROJ)
    shard.write_bytes(shard.read_bytes() + b"\0" * 16)
    return shard


def duplicate_header_key(directory: Path) -> Path:
    shard = shard_of(directory, Q_PROJ)
    header, data = read_raw(shard)
    entry = json.dumps({Q_PROJ: header[Q_PROJ]})[1:-1]
    text = json.dumps(header).encode()
    write_raw(shard, text[:-1] + b"," + entry.encode() + b"}", data)  # q_proj twice, JSON-wise valid
    return shard


def metadata_not_strings(directory: Path) -> Path:
    shard = shard_of(directory, Q_PROJ)
    header, data = read_raw(shard)
    header["__metadata__"]["format"] = 1
    write_raw(shard, header, data)
    return shard


def shard_from_another_save(directory: Path) -> Path:
    other = directory.parent / f"{directory.name}-other-save"
    tiny_llama(seed=1).save_pretrained(other, max_shard_size=40_000)
    shard = shard_of(directory, Q_PROJ)
    shutil.copyfile(other / shard.name, shard)  # same name, same tensors, another save: a mix
    return shard


def symlinked_shard_outside(directory: Path) -> Path:
    shard = shard_of(directory, Q_PROJ)
    outside = directory.parent / f"{directory.name}-outside.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    return directory / INDEX


def symlinked_single_file_outside(directory: Path) -> Path:
    for path in directory.glob("model*"):
        path.unlink()
    outside = directory.parent / f"{directory.name}-outside.safetensors"
    tiny_llama().save_pretrained(outside.with_suffix(""))
    (outside.with_suffix("") / "model.safetensors").rename(outside)
    (directory / "model.safetensors").symlink_to(outside)
    return directory / "model.safetensors"


def symlinked_index_outside(directory: Path) -> Path:
    outside = directory.parent / f"{directory.name}-outside.json"
    (directory / INDEX).rename(outside)
    (directory / INDEX).symlink_to(outside)
    return directory / INDEX


def edit_index(change: Callable[[dict], object]) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        index = json.loads((directory / INDEX).read_text())
        change(index)
        (directory / INDEX).write_text(json.dumps(index))
        return directory / INDEX

    return build


def index_duplicate_key(directory: Path) -> Path:
    text = (directory / INDEX).read_text()
    first = text.index(f'"{Q_PROJ}"')
    line = text[first : text.index("\n", first)].rstrip(",")
    (directory / INDEX).write_text(text.replace(f"{line}", f"{line},\n    {line}", 1))
    return directory / INDEX


def index_invalid_utf8(directory: Path) -> Path:
    (directory / INDEX).write_bytes((directory / INDEX).read_bytes().replace(b"model.norm", b"model.\xffnorm", 1))
    return directory / INDEX


def foreign_journal(directory: Path) -> Path:
    (directory / JOURNAL_NAME).write_text(json.dumps({"format": "x", "renames": [["../../etc/passwd", "a"]]}))
    return directory / JOURNAL_NAME


# id -> (how to build it, error type, what else the message must name)
CASES: dict[str, tuple[Callable[[Path], Path], str, list[str]]] = {
    "stray bytes after the header": (stray_bytes_after_header, "SafetensorsError", ["8 bytes that no tensor covers"]),
    "overlapping offsets": (overlapping_offsets, "SafetensorsError", [O_PROJ, Q_PROJ, "overlaps"]),
    "gap between tensors": (gap_between_tensors, "SafetensorsError", ["gap of 8 bytes"]),
    "bytes after the last tensor": (trailing_bytes, "SafetensorsError", ["16 bytes that no tensor covers"]),
    "duplicate header key": (duplicate_header_key, "SafetensorsError", [Q_PROJ, "twice"]),
    "boolean in shape": (edit_entry(Q_PROJ, shape=[True, 32]), "SafetensorsError", [Q_PROJ, "shape"]),
    "float in shape": (edit_entry(Q_PROJ, shape=[32.0, 32]), "SafetensorsError", [Q_PROJ, "shape"]),
    "negative shape": (edit_entry(Q_PROJ, shape=[-32, -32]), "SafetensorsError", [Q_PROJ, "shape"]),
    "string in shape": (edit_entry(Q_PROJ, shape=["32", 32]), "SafetensorsError", [Q_PROJ, "shape"]),
    "float offsets": (edit_entry(Q_PROJ, data_offsets=[0.0, 4096]), "SafetensorsError", [Q_PROJ, "data_offsets"]),
    "negative offsets": (edit_entry(Q_PROJ, data_offsets=[-4096, 0]), "SafetensorsError", [Q_PROJ, "data_offsets"]),
    "unknown dtype": (edit_entry(Q_PROJ, dtype="F31"), "SafetensorsError", [Q_PROJ, "'F31'"]),
    "entry not an object": (edit_entry(Q_PROJ, entry=[1, 2]), "SafetensorsError", [Q_PROJ, "object"]),
    "metadata not strings": (metadata_not_strings, "SafetensorsError", ["__metadata__", "'format'"]),
    "integer tensor for a float weight": (
        edit_entry(Q_PROJ, dtype="I32"),
        "CheckpointError",
        [Q_PROJ, "torch.int32", "float32"],
    ),
    "boolean tensor for a float weight": (
        replace_tensor(Q_PROJ, "BOOL", [32, 32], b"\x01" * 1024),
        "CheckpointError",
        [Q_PROJ, "torch.bool", "float32"],
    ),
    "shard from another save": (shard_from_another_save, "CheckpointError", [INDEX, "another save"]),
    "shard symlinked outside": (
        symlinked_shard_outside,
        "CheckpointError",
        ["model-00001-of-00003.safetensors", "outside the checkpoint directory"],
    ),
    "single file symlinked outside": (symlinked_single_file_outside, "CheckpointError", ["outside the checkpoint"]),
    "index symlinked outside": (symlinked_index_outside, "CheckpointError", ["outside the checkpoint directory"]),
    "index duplicate key": (index_duplicate_key, "CheckpointError", [Q_PROJ, "twice"]),
    "index invalid UTF-8": (index_invalid_utf8, "CheckpointError", ["not valid UTF-8"]),
    "index entry not a string": (
        edit_index(lambda i: i["weight_map"].update({Q_PROJ: 3})),
        "CheckpointError",
        [Q_PROJ, "non-empty string"],
    ),
    "index total_size a float": (
        edit_index(lambda i: i["metadata"].update(total_size=1.5)),
        "CheckpointError",
        ["total_size"],
    ),
    "index weight_map a list": (edit_index(lambda i: i.update(weight_map=[1])), "CheckpointError", ["weight_map"]),
    "index empty weight_map": (edit_index(lambda i: i.update(weight_map={})), "CheckpointError", ["empty"]),
    "index entry to a missing shard": (
        edit_index(lambda i: i["weight_map"].update({Q_PROJ: "model-00009-of-00009.safetensors"})),
        "FileNotFoundError",
        [Q_PROJ, "model-00009-of-00009.safetensors"],
    ),
    "commit record not ours": (foreign_journal, "CheckpointError", ["not a valid commit record"]),
}


# Valid safetensors files that only we refuse: the library keeps the last of two identical keys; the
# dtype (or the save) is wrong only for the model the file is loaded into; the file is fine, where it lies is not.
REFERENCE_ACCEPTS = {
    "duplicate header key",
    "single file symlinked outside",
    "integer tensor for a float weight",
    "boolean tensor for a float weight",
    "shard from another save",
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("reference")
    tiny_llama().save_pretrained(directory, max_shard_size=40_000)
    assert len(list(directory.glob("model-*.safetensors"))) >= 3
    return directory


@pytest.fixture(scope="module")
def outcomes(reference, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Build every case, run them all in one child process; case id -> (hostile file, result)."""
    work = tmp_path_factory.mktemp("hostile")
    cases, hostile = [], {}
    for i, (case_id, (build, _, _)) in enumerate(CASES.items()):
        directory = work / f"case{i:02d}"
        shutil.copytree(reference, directory)
        hostile[case_id] = build(directory)
        shard = hostile[case_id] if hostile[case_id].suffix == ".safetensors" else None
        cases.append({"id": case_id, "dir": str(directory), "shard": str(shard) if shard else None})
    results = run_cases(reference, cases, work)
    return {case_id: (hostile[case_id], results[case_id]) for case_id in CASES}


@pytest.mark.parametrize("case_id", list(CASES))
def test_hostile_checkpoint_is_refused_naming_the_file(outcomes, case_id):
    _, error_type, names = CASES[case_id]
    path, result = outcomes[case_id]
    assert result["outcome"] == "error", result
    assert result["type"] == error_type, result
    assert str(path) in result["message"], result["message"]
    for name in names:
        assert name in result["message"], result["message"]
    if result.get("reference_refuses") is not None:  # the case altered a safetensors file
        assert result["reference_refuses"] == (case_id not in REFERENCE_ACCEPTS), case_id


def hf_cache_snapshot(root: Path, reference: Path, link_to: Path | None = None) -> Path:
    """``root`` laid out as a Hugging Face cache repo: snapshots/<rev>/<file> -> ../../blobs/<sha>."""
    blobs, snapshot = root / "blobs", root / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted(reference.iterdir())):
        (blobs / f"{i:040x}").write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(f"../../blobs/{i:040x}")
    if link_to is not None:  # one shard linked into another repo's blobs instead
        shard = shard_of(snapshot, Q_PROJ)
        target = link_to / "blobs" / "stolen"
        target.parent.mkdir(parents=True)
        target.write_bytes(shard.read_bytes())
        shard.unlink()
        shard.symlink_to(Path("../../..") / link_to.name / "blobs" / "stolen")
    return snapshot


def test_hf_cache_snapshot_loads_but_not_links_into_another_repo(reference, tmp_path):
    cache = tmp_path / "hub"
    good = hf_cache_snapshot(cache / "models--org--tiny", reference)
    bad = hf_cache_snapshot(cache / "models--org--victim", reference, link_to=cache / "models--org--other")
    results = run_cases(reference, [{"id": "good", "dir": str(good)}, {"id": "bad", "dir": str(bad)}], tmp_path)
    assert results["good"]["outcome"] == "loaded" and results["good"]["equal"], results["good"]
    assert not results["good"]["missing"] and not results["good"]["unexpected"]
    assert results["bad"]["type"] == "CheckpointError", results["bad"]
    assert str(bad / INDEX) in results["bad"]["message"] and "models--org--other" in results["bad"]["message"]


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_interrupted_save_in_read_only_directory_is_refused_naming_the_record(reference, small_tmpfs, tmp_path):
    """A save killed after its commit point, in a directory this process cannot write: refused, not read mixed."""
    directory = small_tmpfs / "ckpt"
    shutil.copytree(reference, directory)
    shard = shard_of(directory, Q_PROJ)
    tmp = new_temp_file(shard)  # the state a save leaves when killed right after its commit point
    tiny_llama(seed=1).save_pretrained(tmp_path / "new", max_shard_size=40_000)
    shutil.copyfile(tmp_path / "new" / shard.name, tmp)
    fsync_file(tmp)
    write_journal(directory, "test", [(tmp, shard.name)], [])
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    try:
        result = run_cases(reference, [{"id": "ro", "dir": str(directory)}], tmp_path)["ro"]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    assert result["type"] == "CheckpointError", result
    assert str(directory / JOURNAL_NAME) in result["message"] and "not writable" in result["message"]
    assert "recover_interrupted_commit" in result["message"]
