"""Child process for the hostile-file and fuzz tests of config.json and the tokenizer files.

    python _config_tokenizer_child.py JOB.json

JOB: ``{"timeout_s": S, "cases": [{"id": ID, "kind": "config" | "tokenizer" | "model", "dir": DIR}]}``.
Each case directory is loaded (``AutoConfig`` / ``AutoTokenizer`` / ``AutoModel.from_pretrained``) under a
per-case time limit (SIGALRM); what was loaded is then used: a config builds its model (for real, with a
forward pass, when it is small; on the meta device otherwise), a tokenizer encodes and decodes a batch.
``rss_growth`` is how much the process's resident memory grew during the case.
One JSON line per case is printed (and flushed) as soon as it is done, so a case that crashes the process
is known by the line missing after the last one:

    {"id", "outcome": "loaded" | "error" | "timeout", "type", "ours", "message",
     "use": "forward" | "meta" | "encoded" | "error", "use_type", "use_ours", "use_message", "finite",
     "rss_growth"}
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import torch

from modelcore import AutoConfig, AutoModel, AutoTokenizer
from modelcore.errors import ModelcoreError
from modelcore.modeling_utils import init_empty_weights

# Models up to this size are built for real and run; larger ones only on the meta device (no memory).
FORWARD_MAX_PARAMETERS = 3_000_000


class CaseTimeout(BaseException):  # noqa: N818 - a BaseException, so no `except Exception` in the library swallows it
    """The case ran past its time limit."""


def _on_alarm(signum, frame):
    raise CaseTimeout


def _failure(err: BaseException, prefix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}type": f"{type(err).__module__}.{type(err).__qualname__}",
        f"{prefix}ours": isinstance(err, ModelcoreError),
        f"{prefix}message": str(err)[:2000],
    }


def use_config(config: Any) -> dict[str, Any]:
    """Build the config's bare model and run it on a short batch (on the meta device when it is large)."""
    estimate = sum(config.parameter_estimate().values())
    if estimate > FORWARD_MAX_PARAMETERS:
        with init_empty_weights():
            model = AutoModel.from_config(config)
        return {"use": "meta", "meta": all(p.is_meta for p in model.parameters())}
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    length = min(6, config.max_position_embeddings)
    ids = torch.randint(0, config.vocab_size, (2, length))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length // 2 :] = 0
    kwargs: dict[str, Any] = {"attention_mask": mask}
    if config.model_type == "bert":
        kwargs["token_type_ids"] = torch.randint(0, config.type_vocab_size, (2, length))
    with torch.inference_mode():
        hidden = model(ids, **kwargs).last_hidden_state
    return {"use": "forward", "finite": bool(torch.isfinite(hidden).all())}


def use_tokenizer(tokenizer: Any) -> dict[str, Any]:
    """Encode (padded, truncated; single texts and pairs) and decode a small batch."""
    for pair in (None, ["second part", "b c"]):
        batch = tokenizer(["Hello, world!", "a"], pair, padding=True, truncation=True, max_length=16)
        tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    return {"use": "encoded"}


LOADERS = {"config": (AutoConfig, use_config), "tokenizer": (AutoTokenizer, use_tokenizer)}
LOADERS["model"] = (AutoModel, lambda model: {"use": "none"})


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    loader, use = LOADERS[case["kind"]]
    try:
        loaded = loader.from_pretrained(case["dir"])
    except CaseTimeout:
        raise
    except BaseException as err:  # noqa: BLE001 - the point is to report any kind of failure, panics included
        return {"outcome": "error", **_failure(err)}
    try:
        return {"outcome": "loaded", **use(loaded)}
    except CaseTimeout:
        raise
    except BaseException as err:  # noqa: BLE001
        return {"outcome": "loaded", "use": "error", **_failure(err, "use_")}


def run_cases(
    cases: list[dict[str, Any]], work: Path, case_timeout_s: float = 5.0, total_timeout_s: float = 120.0
) -> dict[str, dict[str, Any]]:
    """Run this script over ``cases`` in a fresh process (killed past ``total_timeout_s``); results by case id.

    Used by the tests (the parent side). Fails with the child's output when it crashed or hung.
    """
    from tests.faults._children import run_child  # the parent's import: the child runs as a plain script

    return run_child(__file__, {"timeout_s": case_timeout_s, "cases": cases}, work, total_timeout_s)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _on_alarm)
    process = psutil.Process()
    for case in job["cases"]:
        rss_before = process.memory_info().rss
        signal.setitimer(signal.ITIMER_REAL, job["timeout_s"])
        try:
            result = run_case(case)
        except CaseTimeout:
            result = {"outcome": "timeout"}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result["rss_growth"] = process.memory_info().rss - rss_before
        print(json.dumps({"id": case["id"], **result}), flush=True)


if __name__ == "__main__":
    main()
