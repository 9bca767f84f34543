"""atomic_directory: a whole directory appears or nothing does, and two writers never share a staging folder."""

from __future__ import annotations

import threading

import pytest

from modelcore.serialization.atomic import atomic_directory


def test_replaces_the_target_whole_and_leaves_no_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as staging:
        assert staging != target and staging.parent == tmp_path
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # readers still see the old directory until the rename
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_error_keeps_the_old_target_and_removes_the_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_concurrent_writers_each_fill_their_own_staging(tmp_path):
    target = tmp_path / "cache" / "key"
    barrier = threading.Barrier(4)
    stagings, errors = [], []

    def write(index: int) -> None:
        try:
            with atomic_directory(target) as staging:
                stagings.append(staging)
                barrier.wait(timeout=10)  # all four are inside at once
                (staging / "owner").write_text(str(index))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and len(set(stagings)) == 4
    assert (target / "owner").read_text() in {"0", "1", "2", "3"}
    assert [p.name for p in target.parent.iterdir()] == ["key"]
