"""Checkpoint references: schemes come from entry points or run-time registration; the core imports no integration."""

from __future__ import annotations

import subprocess
import sys

from modelcore import AutoModelForCausalLM
from modelcore.serialization.sources import register_source_scheme, resolve_source, scheme_resolver
from tests.tiny_models import tiny_llama


def test_a_registered_scheme_resolves_for_from_pretrained(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path / "ckpt")
    asked = []
    register_source_scheme("vault", lambda ref: asked.append(ref) or tmp_path / "ckpt")
    loaded = AutoModelForCausalLM.from_pretrained("vault:/team/llama@prod")
    assert asked == ["vault:/team/llama@prod"]  # resolved once, at the boundary
    assert type(loaded).__name__ == "LlamaForCausalLM"


def test_mlflow_schemes_come_from_the_installed_entry_points():
    from modelcore.integrations.mlflow_models import resolve_uri

    assert scheme_resolver("models:/name@champion") is resolve_uri
    assert scheme_resolver("runs:/0123/model") is resolve_uri
    assert scheme_resolver("relative/dir") is None and scheme_resolver("C:/Users/x") is None


def test_resolving_a_path_imports_no_integration(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "ckpt")
    code = (
        "import sys\n"
        "from modelcore import AutoConfig\n"
        f"AutoConfig.from_pretrained({str(tmp_path / 'ckpt')!r})\n"
        "from modelcore.serialization.sources import resolve_source\n"
        f"resolve_source({str(tmp_path / 'ckpt')!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('modelcore.integrations')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
    assert resolve_source(tmp_path / "ckpt") == tmp_path / "ckpt"
