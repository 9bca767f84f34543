"""A full disk, for real: saves into a small tmpfs raise DiskFullError and leave the directory as it was.

The tmpfs is mounted per test (this suite runs as root, here and in CI) and unmounted afterwards.
Out of bytes: the save is refused up front. Out of inodes: the save fails part-way, at each of
its files in turn, and must remove every temporary file it made.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from modelcore import LlamaForCausalLM
from modelcore.errors import DiskFullError, ModelcoreError, is_disk_full
from modelcore.serialization.atomic import atomic_write_text
from modelcore.serialization.checkpoint import save_state_dict
from tests.tiny_models import tiny_llama as shared_tiny_llama


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs with the given options at a fresh folder; unmounted afterwards."""
    mounts = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt{len(mounts)}"
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
        mounts.append(target)
        return target

    yield mount
    for target in mounts:
        subprocess.run(["umount", str(target)], check=True)


def tiny_llama(seed: int, layers: int = 2) -> LlamaForCausalLM:
    return shared_tiny_llama(seed, vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def assert_loads_as(directory: Path, model: LlamaForCausalLM) -> None:
    loaded = LlamaForCausalLM.from_pretrained(directory).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_save_that_cannot_fit_is_refused_up_front_and_changes_nothing(tmpfs):
    directory = tmpfs("size=4m") / "ckpt"
    old = tiny_llama(0)
    old.save_pretrained(directory)
    before = snapshot(directory)
    big = tiny_llama(1, layers=40)  # about 11 MB of weights
    with pytest.raises(DiskFullError) as err:
        big.save_pretrained(directory, max_shard_size="1MB")
    needed = sum(t.numel() * t.element_size() for t in big.state_dict().values())
    assert err.value.needed >= needed and err.value.free < needed
    assert str(directory) in str(err.value) and f"{err.value.needed:,} bytes" in str(err.value)
    assert is_disk_full(err.value) and isinstance(err.value, ModelcoreError)
    assert snapshot(directory) == before
    assert_loads_as(directory, old)


NEW_FILES = [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)] + [
    "model.safetensors.index.json",
    "config.json",
    ".modelcore-commit.json",
]


@pytest.mark.parametrize("fail_at", NEW_FILES)
def test_out_of_space_part_way_through_a_save_removes_every_temporary(tmpfs, tmp_path, fail_at):
    """The save cannot create its k-th new file (no inode left): it fails naming it, and nothing of it remains."""
    # inodes: the root, config.json and model.safetensors of the old save, then room for k - 1 new files
    mount = tmpfs(f"size=8m,nr_inodes={2 + NEW_FILES.index(fail_at) + 1}")
    old = tiny_llama(0)
    old.save_pretrained(tmp_path / "old")  # saved elsewhere: a save needs inodes for its temporaries too
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(tmp_path / "old" / name, mount / name)
    before = snapshot(mount)
    new = tiny_llama(1)
    state = new._state_dict_for_saving()
    with pytest.raises(DiskFullError) as err:
        save_state_dict(state, mount, max_shard_size=100_000, extra_files={"config.json": new.config.to_json_string()})
    assert str(mount / fail_at) in str(err.value) and "no space left" in str(err.value)
    assert is_disk_full(err.value.__cause__)
    assert snapshot(mount) == before
    assert_loads_as(mount, old)


def test_atomic_write_out_of_space_names_path_and_bytes_and_keeps_old_file(tmpfs):
    mount = tmpfs("size=1m")
    path = mount / "report.json"
    atomic_write_text(path, "old\n")
    text = "x" * 2_000_000
    with pytest.raises(DiskFullError) as err:
        atomic_write_text(path, text)
    assert err.value.needed == len(text) and err.value.path == str(path)
    assert str(path) in str(err.value) and "2,000,000 bytes" in str(err.value)
    assert isinstance(err.value.__cause__, OSError) and is_disk_full(err.value.__cause__)
    assert sorted(p.name for p in mount.iterdir()) == ["report.json"]
    assert path.read_text() == "old\n"
