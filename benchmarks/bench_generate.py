"""Generation benchmark: greedy ``generate`` tokens/s of modelcore against transformers on a ~100M fp32 Llama.

One checkpoint (random weights, seeded) is written once by transformers' ``save_pretrained``; both
libraries load the same files (modelcore through ``AutoModelForCausalLM``). Both run in this process
with ``torch.set_num_threads(2)``, alternating, a warm-up call each, then the median of ``--repeats``.
Batch 1 is also compared with the weight-read limit: this machine's memory read bandwidth (best of
several ``torch.sum`` over a 1.5 GB fp32 tensor) divided by the weight bytes, the fastest a decoder can
go when every token reads every weight once. The bandwidth is measured again right before every timed call
(a VM's moves between minutes), and the table gives the median of the calls' fractions of their own moment's
limit. Both libraries must produce the same greedy tokens.

    python -m benchmarks.bench_generate [--batch-sizes 1 8] [--new-tokens 64] [--repeats 3]
                                        [--bf16] [--static] [--assisted] [--workdir DIR]

``--static``: ``cache_implementation="static"`` with ``forward`` compiled by ``torch.compile(dynamic=False)``
(both libraries). ``--assisted``: batch 1 with ``assistant_model=`` a 2-layer draft that copies the
target's embeddings, first 2 layers, final norm and head (both libraries, same draft files).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmarks.bench_generate")

CONFIG = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    tie_word_embeddings=False,
    max_position_embeddings=2048,
)
DRAFT_LAYERS = 2
PROMPT_LENGTH = 32


def make_checkpoints(directory: Path) -> tuple[Path, Path]:
    """Write the target and the draft checkpoints with transformers (the peer's own layout), once.

    Args:
        directory: where ``target/`` and ``draft/`` go.

    Returns:
        (target directory, draft directory).
    """
    import transformers

    target_dir, draft_dir = directory / "target", directory / "draft"
    if (target_dir / "model.safetensors").exists() and (draft_dir / "model.safetensors").exists():
        return target_dir, draft_dir
    torch.manual_seed(0)
    target = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    target.save_pretrained(target_dir)
    draft = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**CONFIG, "num_hidden_layers": DRAFT_LAYERS}))
    draft.load_state_dict({k: v for k, v in target.state_dict().items() if k in draft.state_dict()})
    draft.save_pretrained(draft_dir)
    return target_dir, draft_dir


class ReadBandwidth:
    """Memory read bandwidth (bytes/s): the best of a few ``torch.sum`` over a large fp32 tensor, with the
    benchmark's threads. Called again next to every timed call, because a VM's bandwidth can move by half
    between minutes (35 to 57 GB/s on one Zen 4 VM): a limit is only comparable with speeds of the same moment."""

    def __init__(self, gigabytes: float = 1.5) -> None:
        self.data = torch.ones(int(gigabytes * 1e9 / 4), dtype=torch.float32)
        self.seen: list[float] = []

    def __call__(self, repeats: int = 3) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            self.data.sum()
            best = min(best, time.perf_counter() - start)
        self.seen.append(self.data.numel() * 4 / best)
        return self.seen[-1]


def load(which: str, path: Path, dtype: torch.dtype) -> Any:
    """The model of ``which`` library from ``path``, in eval mode."""
    if which == "modelcore":
        from modelcore import AutoModelForCausalLM
    else:
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.logging.set_verbosity_error()
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def generate_call(model: Any, ids: torch.Tensor, new_tokens: int, **options: Any) -> Callable[[], torch.Tensor]:
    """A greedy ``generate`` of exactly ``new_tokens`` tokens (no EOS stop), as a thunk."""

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
                **options,
            )

    return call


def compiled(model: Any) -> Any:
    """``model`` with its forward compiled for fixed shapes (the static-cache path)."""
    model.forward = torch.compile(model.forward, dynamic=False)
    return model


def run_case(
    name: str,
    models: dict[str, Any],
    ids: torch.Tensor,
    new_tokens: int,
    repeats: int,
    bandwidth: ReadBandwidth,
    weight_bytes: int,
    **options: Any,
) -> dict:
    """Time both libraries on one case, alternating the timed calls; check the tokens agree. Right before each
    timed call the read bandwidth is measured again, and that call's fraction of the weight-read limit uses it."""
    calls = {which: generate_call(model, ids, new_tokens, **options) for which, model in models.items()}
    outputs, warmup = {}, {}
    for which, call in calls.items():
        start = time.perf_counter()
        outputs[which] = call()
        warmup[which] = time.perf_counter() - start
    times: dict[str, list[float]] = {which: [] for which in calls}
    fractions: dict[str, list[float]] = {which: [] for which in calls}
    moments: dict[str, list[list[float]]] = {which: [] for which in calls}  # [GB/s just before, tokens/s] per call
    produced = ids.shape[0] * new_tokens
    for _ in range(repeats):
        for which, call in calls.items():
            limit = bandwidth() / weight_bytes  # tokens/s, right before the call
            start = time.perf_counter()
            outputs[which] = call()
            times[which].append(time.perf_counter() - start)
            fractions[which].append(produced / times[which][-1] / limit)
            moments[which].append([round(limit * weight_bytes / 1e9, 1), round(produced / times[which][-1], 1)])
    row: dict[str, Any] = {"case": name, "batch": ids.shape[0], "new_tokens": new_tokens}
    for which in calls:
        row[which] = {
            "median_s": round(statistics.median(times[which]), 3),
            "tokens_per_s": round(produced / statistics.median(times[which]), 1),
            "first_call_s": round(warmup[which], 2),
        }
        if ids.shape[0] == 1:
            row[which]["fraction_of_limit"] = round(statistics.median(fractions[which]), 3)
            row[which]["bandwidth_gb_s_and_tokens_per_s"] = moments[which]
    if len(outputs) == 2:
        row["identical_tokens"] = bool(torch.equal(outputs["modelcore"], outputs["transformers"]))
        row["speedup"] = round(row["modelcore"]["tokens_per_s"] / row["transformers"]["tokens_per_s"], 3)
    row["_output"] = next(iter(outputs.values()))
    return row


def main(argv: list[str] | None = None) -> dict:
    """Run the cases the flags ask for; print a table and a JSON summary line.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        the summary printed as JSON.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="weights in bf16 for both libraries")
    parser.add_argument("--static", action="store_true", help="static cache + compiled forward (batch sizes given)")
    parser.add_argument("--assisted", action="store_true", help="batch 1 with a 2-layer draft (assistant_model=)")
    parser.add_argument(
        "--assistant-tokens", type=int, default=None, help="num_assistant_tokens for both (default: each library's)"
    )
    parser.add_argument("--libraries", nargs="+", default=["modelcore", "transformers"])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "modelcore-bench-generate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    target_dir, draft_dir = make_checkpoints(args.workdir)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    models = {which: load(which, target_dir, dtype) for which in args.libraries}
    n_params = sum(p.numel() for p in models[args.libraries[0]].parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in models[args.libraries[0]].parameters())
    # The input embedding table is read one row per token, not whole: the bytes a token really reads are fewer.
    embed = models[args.libraries[0]].get_input_embeddings().weight
    read_per_token = weight_bytes - embed.numel() * embed.element_size()
    read_bandwidth = ReadBandwidth()
    bandwidth = read_bandwidth(repeats=7)
    limit = bandwidth / weight_bytes
    logger.info(
        "%.1fM parameters, %.1f MB of %s weights; read bandwidth %.2f GB/s -> weight-read limit %.1f tokens/s",
        n_params / 1e6,
        weight_bytes / 1e6,
        str(dtype).removeprefix("torch."),
        bandwidth / 1e9,
        limit,
    )
    summary: dict[str, Any] = {
        "params": n_params,
        "weight_bytes": weight_bytes,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": args.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "read_bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "weight_read_limit_tokens_per_s": round(limit, 1),
        "bytes_read_per_token": read_per_token,
        "limit_without_embedding_table_tokens_per_s": round(bandwidth / read_per_token, 1),
        "rows": [],
    }
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, CONFIG["vocab_size"], (max(args.batch_sizes), PROMPT_LENGTH), generator=generator)
    rows = []
    for batch in args.batch_sizes:
        rows.append(
            run_case("eager", models, prompts[:batch], args.new_tokens, args.repeats, read_bandwidth, weight_bytes)
        )
    if args.static:
        static_models = {which: compiled(load(which, target_dir, dtype)) for which in args.libraries}
        for batch in args.batch_sizes:
            rows.append(
                run_case(
                    "static+compile",
                    static_models,
                    prompts[:batch],
                    args.new_tokens,
                    args.repeats,
                    read_bandwidth,
                    weight_bytes,
                    cache_implementation="static",
                )
            )
    if args.assisted:
        drafts = {which: load(which, draft_dir, dtype) for which in args.libraries}
        plain = rows[0]["_output"] if rows[0]["batch"] == 1 else None
        for which in args.libraries:
            row = run_case(
                "assisted",
                {which: models[which]},
                prompts[:1],
                args.new_tokens,
                args.repeats,
                read_bandwidth,
                weight_bytes,
                assistant_model=drafts[which],
                **({} if args.assistant_tokens is None else {"num_assistant_tokens": args.assistant_tokens}),
            )
            if plain is not None:
                row["equals_plain_greedy"] = bool(torch.equal(row["_output"], plain))
            row["draft_agreement"] = draft_agreement(drafts[which], row["_output"])
            rows.append(row)
    for row in rows:
        row.pop("_output")
        for which in args.libraries:
            if row["batch"] == 1 and which in row:
                row[which]["fraction_of_limit_without_embedding_table"] = round(
                    row[which]["fraction_of_limit"] * read_per_token / weight_bytes, 3
                )
    seen = read_bandwidth.seen
    summary["read_bandwidth_seen_gb_s"] = [round(min(seen) / 1e9, 2), round(max(seen) / 1e9, 2)]
    summary["rows"] = rows
    print_table(rows, args.libraries)
    print(json.dumps(summary))
    return summary


def draft_agreement(draft: Any, sequence: torch.Tensor) -> float:
    """Fraction of the generated tokens that the draft's own greedy choice (given the same prefix) matches."""
    with torch.inference_mode():
        logits = draft(sequence).logits[0, PROMPT_LENGTH - 1 : -1]
    return round(float((logits.argmax(-1) == sequence[0, PROMPT_LENGTH:]).float().mean()), 3)


def print_table(rows: list[dict], libraries: list[str]) -> None:
    """Markdown table of the rows (one line per case and library)."""
    print(
        "| case | batch | library | tokens/s | median (s) | first call (s) | of limit | vs transformers | same tokens |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for which in libraries:
            if which not in row:
                continue
            cell = row[which]
            same = row.get("identical_tokens", row.get("equals_plain_greedy", ""))
            print(
                f"| {row['case']} | {row['batch']} | {which} | {cell['tokens_per_s']} | {cell['median_s']} |"
                f" {cell['first_call_s']} | {cell.get('fraction_of_limit', '')} |"
                f" {row.get('speedup', '') if which == 'modelcore' else ''} | {same} |"
            )


if __name__ == "__main__":
    main()
