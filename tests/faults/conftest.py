"""Fault tests: real processes killed, hostile files, full disks, concurrent clients.

Every test under tests/faults/ is marked ``faults`` (CI runs them with the rest of ``make test``;
``pytest -m faults`` runs them alone). Each case is bounded in time: a hung child is killed.
"""

from __future__ import annotations

import pytest

from tests.pipeline_fixtures import pipeline_home, real_csv, tiny_checkpoint  # noqa: F401


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/faults/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("faults/"):
            item.add_marker(pytest.mark.faults)
