"""Child process for the hostile-checkpoint and fuzz tests: load each case directory, report what happened.

    python _ckpt_load_child.py JOB.json

JOB: ``{"reference": DIR, "timeout_s": S, "cases": [{"id": ID, "dir": DIR, "shard": PATH or null}]}``.
Each case directory is loaded with ``LlamaForCausalLM.from_pretrained`` under a per-case time
limit (SIGALRM); one JSON line per case is printed (and flushed) as soon as it is done, so a case
that crashes the process is known by the line missing after the last one:

    {"id", "outcome": "loaded" | "error" | "timeout", "type", "ours", "message",
     "equal", "missing", "unexpected", "reference_refuses"}

``equal``: every tensor loaded from the checkpoint has the reference's dtype, shape and bytes.
``reference_refuses``: whether the ``safetensors`` library refuses the case's ``shard`` (when given).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import torch

from modelcore import LlamaForCausalLM
from modelcore.errors import ModelcoreError


class CaseTimeout(BaseException):  # noqa: N818 - a BaseException, so no `except Exception` in the library swallows it
    """The case ran past its time limit."""


def _on_alarm(signum, frame):
    raise CaseTimeout


def load_case(directory: str, reference: dict[str, torch.Tensor]) -> dict:
    try:
        model, info = LlamaForCausalLM.from_pretrained(directory, output_loading_info=True)
    except CaseTimeout:
        raise
    except BaseException as err:  # noqa: BLE001 - the point is to report any kind of failure
        return {
            "outcome": "error",
            "type": type(err).__name__,
            "ours": isinstance(err, (ModelcoreError, FileNotFoundError)),
            "message": str(err),
        }
    state = model.state_dict()
    missing = set(info["missing_keys"])
    equal = all(
        name in missing
        or (
            state[name].dtype == tensor.dtype and state[name].shape == tensor.shape and torch.equal(state[name], tensor)
        )
        for name, tensor in reference.items()
    )
    return {"outcome": "loaded", "equal": equal, "missing": sorted(missing), "unexpected": info["unexpected_keys"]}


def reference_refuses(shard: str) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(shard, "pt") as f:
            for name in f.keys():
                f.get_tensor(name)
    except Exception:  # noqa: BLE001 - any refusal counts
        return True
    return False


def run_cases(
    reference: Path, cases: list[dict], work: Path, case_timeout_s: float = 5.0, total_timeout_s: float = 120.0
) -> dict[str, dict]:
    """Run this script over ``cases`` in a fresh process (killed past ``total_timeout_s``); results by case id.

    Used by the tests (the parent side). Fails with the child's output when it crashed or hung.
    """
    from tests.faults._children import run_child  # the parent's import: the child runs as a plain script

    return run_child(
        __file__, {"reference": str(reference), "timeout_s": case_timeout_s, "cases": cases}, work, total_timeout_s
    )


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    torch.set_num_threads(1)
    reference = LlamaForCausalLM.from_pretrained(job["reference"]).state_dict()
    signal.signal(signal.SIGALRM, _on_alarm)
    for case in job["cases"]:
        signal.setitimer(signal.ITIMER_REAL, job["timeout_s"])
        try:
            result = load_case(case["dir"], reference)
            if case.get("shard"):
                result["reference_refuses"] = reference_refuses(case["shard"])
        except CaseTimeout:
            result = {"outcome": "timeout"}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(json.dumps({"id": case["id"], **result}), flush=True)


if __name__ == "__main__":
    main()
