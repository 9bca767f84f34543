"""The Kubernetes manifests under infra/production/ are valid resources and describe what runs here.

Every document is checked against the Kubernetes API schema (``kubernetes-validate``, strict: an unknown
field is an error), and so is the Job that Prefect's Kubernetes worker renders from the base job template.
The versions, settings and commands they name are compared with what the local cluster mode runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the test extra installs kubernetes-validate")

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ROOT / "infra" / "production"
KUBERNETES_VERSION = "1.33.0"  # the oldest minor version still supported upstream when this was written
MANIFESTS = sorted(p for p in PRODUCTION.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_a_valid_kubernetes_resource(path):
    documents = _documents(path)
    assert documents, f"{path.name} holds no resource"
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")


def test_a_broken_manifest_is_refused():
    """The check can fail: a field in the wrong place (a Job's ``parallelism`` under the pod spec) is refused."""
    job = _documents(PRODUCTION / "train-multigpu-job.yaml")[1]
    job["spec"]["template"]["spec"]["parallelism"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_long_running_manifest():
    kustomization = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert all((PRODUCTION / name).is_file() for name in listed), listed
    per_run_or_secret = {p.name for p in MANIFESTS if "job" in p.name or p.name.startswith("secrets")}
    assert listed == {p.name for p in MANIFESTS} - per_run_or_secret
    namespaces = {
        doc["metadata"].get("namespace") for p in MANIFESTS for doc in _documents(p) if doc["kind"] != "Namespace"
    }
    assert namespaces == {kustomization["namespace"]}


def _render(value: Any, variables: dict[str, Any]) -> Any:
    """Prefect's template rendering for the whole-value placeholders the base job template uses."""
    if isinstance(value, dict):
        return {k: _render(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables) for v in value]
    if isinstance(value, str) and (match := re.fullmatch(r"\{\{ (\w+) \}\}", value)):
        return variables[match.group(1)]
    return value


def test_the_kubernetes_work_pool_template_renders_a_valid_job():
    template = json.loads((PRODUCTION / "k8s-base-job-template.json").read_text(encoding="utf-8"))
    properties = template["variables"]["properties"]
    variables = {name: spec.get("default") for name, spec in properties.items()}
    variables.update(
        name="retrain-abc",
        env={},
        labels={"prefect.io/flow-run-id": "abc"},
        command="prefect flow-run execute",
        job_watch_timeout_seconds=None,
        cluster_config=None,
    )
    job = _render(template["job_configuration"]["job_manifest"], variables)
    job["metadata"]["name"] = "retrain-abc-1"  # the API server's generateName
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["prefect", "flow-run", "execute"]  # split by Prefect
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
