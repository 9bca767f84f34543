"""save_state_dict as one transaction, and what loading checks: save ids, commit records, temp files, paths, dtypes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from modelcore import LlamaForCausalLM
from modelcore.errors import CheckpointError
from modelcore.serialization import checkpoint
from modelcore.serialization.atomic import JOURNAL_NAME, new_temp_file, write_journal
from modelcore.serialization.checkpoint import SAVE_ID_KEY, CheckpointFiles, save_state_dict
from modelcore.serialization.loading import _check_dtype_kind
from modelcore.serialization.safetensors_io import SafetensorsFile, load_file, save_file
from tests.tiny_models import tiny_llama as shared_tiny_llama

INDEX = "model.safetensors.index.json"


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    return shared_tiny_llama(seed, **({"vocab_size": 128} | overrides))


def save(model: LlamaForCausalLM, directory: Path, max_shard_size: int | str = 40_000) -> list[Path]:
    """save_pretrained with config.json in the same transaction (what save_pretrained does with extra_files)."""
    state = model._state_dict_for_saving()
    return save_state_dict(state, directory, max_shard_size, extra_files={"config.json": model.config.to_json_string()})


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_shard_and_the_index_carry_the_same_new_save_id(tmp_path):
    files = save(tiny_llama(), tmp_path)
    assert len(files) >= 3
    index = json.loads((tmp_path / INDEX).read_text())
    save_id = index["metadata"][SAVE_ID_KEY]
    assert len(save_id) == 32 and isinstance(index["metadata"]["total_size"], int)
    for path in files:
        with SafetensorsFile(path) as f:
            assert f.metadata == {"format": "pt", SAVE_ID_KEY: save_id}
    save(tiny_llama(), tmp_path)
    assert json.loads((tmp_path / INDEX).read_text())["metadata"][SAVE_ID_KEY] != save_id


def test_extra_files_are_written_with_the_weights_and_odd_names_refused(tmp_path):
    model = tiny_llama(rms_norm_eps=1e-5)
    save(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["rms_norm_eps"] == 1e-5
    assert same_state(model, LlamaForCausalLM.from_pretrained(tmp_path))
    for name in ["../config.json", "sub/x.json", INDEX, "model.safetensors", JOURNAL_NAME, ".x.json.abcdefgh.tmp"]:
        with pytest.raises(ValueError, match="not a plain file name"):
            save_state_dict(model.state_dict(), tmp_path, extra_files={name: "{}"})


def test_leftover_temporaries_are_ignored_by_loads_and_removed_by_the_next_save(tmp_path):
    model = tiny_llama()
    save(model, tmp_path)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    leftovers = [new_temp_file(shard), new_temp_file(tmp_path / "config.json"), new_temp_file(tmp_path / INDEX)]
    leftovers[0].write_bytes(b"half a shard")  # what a save killed before its commit point leaves
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("mine")
    assert same_state(model, LlamaForCausalLM.from_pretrained(tmp_path))
    assert all(p.exists() for p in leftovers)
    save(model, tmp_path)
    assert not any(p.exists() for p in leftovers) and unrelated.read_text() == "mine"
    assert not list(tmp_path.glob(".*"))


def committed_not_applied(monkeypatch, model: LlamaForCausalLM, directory: Path) -> None:
    """Leave ``directory`` as a save killed right after its commit point leaves it."""
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "apply_journal", lambda directory: None)
        save(model, directory)
    assert (directory / JOURNAL_NAME).exists()


def test_a_committed_save_is_finished_by_the_next_load_config_included(tmp_path, monkeypatch):
    old, new = tiny_llama(0), tiny_llama(1, rms_norm_eps=1e-5)
    save(old, tmp_path)
    committed_not_applied(monkeypatch, new, tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert same_state(new, loaded) and loaded.config.rms_norm_eps == 1e-5  # config.json read after the finish
    assert not (tmp_path / JOURNAL_NAME).exists() and not list(tmp_path.glob(".*"))


def test_a_committed_save_is_finished_by_the_next_save(tmp_path, monkeypatch):
    save(tiny_llama(0), tmp_path, max_shard_size="1GB")  # one file
    committed_not_applied(monkeypatch, tiny_llama(1), tmp_path)  # shards: model.safetensors is stale
    third = tiny_llama(2)
    save(third, tmp_path)
    assert same_state(third, LlamaForCausalLM.from_pretrained(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("model-")) == ["config.json", INDEX]


def test_a_commit_record_whose_files_are_gone_is_refused(tmp_path):
    save(tiny_llama(), tmp_path)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    tmp = new_temp_file(shard)
    write_journal(tmp_path, "lost", [(tmp, shard.name)], [])
    tmp.unlink()
    shard.unlink()
    with pytest.raises(CheckpointError, match=rf"{JOURNAL_NAME}.*lost both"):
        CheckpointFiles.locate(tmp_path)


def test_index_without_save_id_loads_like_a_hub_checkpoint(tmp_path):
    model = tiny_llama()
    save(model, tmp_path)
    index = json.loads((tmp_path / INDEX).read_text())
    del index["metadata"][SAVE_ID_KEY]
    (tmp_path / INDEX).write_text(json.dumps(index))
    for shard in tmp_path.glob("model-*.safetensors"):  # as written by transformers: no save id at all
        save_file(load_file(shard), shard, metadata={"format": "pt"})
    assert same_state(model, LlamaForCausalLM.from_pretrained(tmp_path))


def test_concurrent_saves_into_one_directory_leave_one_whole_checkpoint(tmp_path):
    models = [tiny_llama(seed) for seed in range(4)]
    errors = []

    def saver(model):
        try:
            for _ in range(3):
                save(model, tmp_path)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=saver, args=(m,)) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert sum(same_state(m, loaded) for m in models) == 1
    assert not list(tmp_path.glob(".*"))


def test_hf_cache_repo_is_the_folder_holding_blobs_and_snapshots(tmp_path):
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    nested = repo / "snapshots" / "rev" / "sub"
    nested.mkdir(parents=True)
    assert checkpoint._hf_cache_repo(nested) == repo
    assert checkpoint._hf_cache_repo(repo / "snapshots") is None  # no revision below it
    lookalike = tmp_path / "plain" / "snapshots" / "rev"
    lookalike.mkdir(parents=True)
    assert checkpoint._hf_cache_repo(lookalike) is None  # no blobs/: an ordinary folder


@pytest.mark.parametrize(
    ("stored", "target"),
    [
        (torch.int64, torch.float32),
        (torch.bool, torch.float32),
        (torch.float32, torch.int64),
        (torch.float16, torch.bool),
    ],
)
def test_stored_dtype_of_another_kind_than_the_model_uses_is_refused(stored, target):
    with pytest.raises(CheckpointError) as err:
        _check_dtype_kind(
            Path("/ckpt/model.safetensors"), "w", stored, LlamaForCausalLM, "w", torch.empty(0, dtype=target)
        )
    assert all(s in str(err.value) for s in ["/ckpt/model.safetensors", "'w'", str(stored), str(target)])
    _check_dtype_kind(Path("x"), "w", torch.bfloat16, LlamaForCausalLM, "w", torch.empty(0))  # floats convert
    _check_dtype_kind(Path("x"), "w", torch.int32, LlamaForCausalLM, "w", torch.empty(0, dtype=torch.int64))
