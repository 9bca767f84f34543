"""The parent side of the fault children: run a case script in a fresh, time-bounded process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_child(script: str, job: dict[str, Any], work: Path, total_timeout_s: float) -> dict[str, dict[str, Any]]:
    """Run ``python script job.json`` (killed past ``total_timeout_s``); its JSON result lines by case id.

    ``job["cases"]`` is a list of dicts with an ``id``; the script prints one JSON line per case.

    Raises:
        AssertionError: with the child's output, when it hung, crashed or skipped a case.
    """
    path = work / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, script, str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=total_timeout_s, env=env)
    except subprocess.TimeoutExpired as err:  # subprocess.run kills the child before raising
        raise AssertionError(
            f"{Path(script).name} ran past {total_timeout_s} s; last lines: {str(err.stdout)[-2000:]}"
        ) from err
    results = {r["id"]: r for r in map(json.loads, done.stdout.splitlines())}
    if done.returncode != 0 or len(results) != len(job["cases"]):
        crashed = next((c for c in job["cases"] if c["id"] not in results), None)
        raise AssertionError(
            f"{Path(script).name} exited with {done.returncode} at case {crashed!r}; stderr: {done.stderr[-3000:]}"
        )
    return results
