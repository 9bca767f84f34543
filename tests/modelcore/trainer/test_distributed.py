"""DDP on CPU (gloo): two processes with batch b each equal one process with batch 2b."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelcore.serialization.safetensors_io import load_file

SCRIPT = Path(__file__).with_name("ddp_train.py")


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path, minilm_dir, rotten_tomatoes):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "single"), "16"], check=True, env=env, timeout=300)
    subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tmp_path / "ddp"), "8"],
        check=True,
        env=env,
        timeout=300,
    )
    single = json.loads((tmp_path / "single" / "result.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert ddp["world"] == 2 and single["world"] == 1
    assert ddp["global_step"] == single["global_step"] == 24
    a = load_file(tmp_path / "single" / "final.safetensors")
    b = load_file(tmp_path / "ddp" / "final.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=2e-5, msg=name)
    assert any(not torch.equal(a[n], load_file_initial(n)) for n in ["classifier.weight"])  # it trained
    # Only rank 0 saved: one set of checkpoints, one log file with one line per log event.
    assert sorted(p.name for p in (tmp_path / "ddp").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-24"]
    lines = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "single" / "log.jsonl").read_text().splitlines())


def load_file_initial(name: str) -> torch.Tensor:
    from modelcore import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return BertForSequenceClassification(config).state_dict()[name]
