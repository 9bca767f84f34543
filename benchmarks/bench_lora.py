"""LoRA fine-tuning benchmark: SmolLM2-135M on Wikipedia summaries, our Trainer + ``add_lora`` against transformers'
Trainer + peft.

The workload of ``python -m flows.retrain --task causal-lm``, run side by side with the same everything:

* model: the SmolLM2-135M-Instruct asset (``smollm2-135m-gguf``, GGUF Q4_1). Ours loads the GGUF with
  ``AutoModelForCausalLM.from_pretrained(gguf, dtype="float32")`` (dequantized, as the flow does); the parent
  saves that model once with ``save_pretrained`` (the Hugging Face layout) and transformers loads
  ``LlamaForCausalLM`` from there, so both start from the same fp32 weights (the base perplexity checks it);
* data: the ``wikipedia-summaries`` asset read by the flow's ``tasks.text_data.read_texts``, empty rows dropped,
  shuffled with ``random.Random(seed)``, the first ``--docs`` documents, the last 20% held out (whole
  documents, as the flow splits). The parent packs the training documents into ``--block``-token blocks with
  the task registry's ``get_task("causal-lm").function("prepare")`` (our tokenizer) and saves them as one
  ``datasets.Dataset``: both libraries train on the same token ids;
* batches: random, batch ``--batch``, both Trainers seeded with ``seed``; our sampler draws transformers'
  order for a seed. Each run records a hash of every batch it trains on and the parent checks both libraries
  saw the same batches in the same order (``same_batches`` in the summary). Labels are the input ids (no
  padding anywhere: every block is full); each library uses its own collator (ours: the task's collator;
  transformers: ``default_data_collator`` over rows whose ``labels`` are a copy of the ids, as its ``run_clm``
  example packs text; its ``DataCollatorForLanguageModeling`` would mask the EOS between documents out of the
  loss, because this tokenizer's pad token is its EOS), and the parent checks both give the same tensors on the
  first batch;
* LoRA: r=8, alpha=16, dropout 0.0 (so both runs are deterministic), on q/k/v/o/gate/up/down projections;
  ``torch.manual_seed(seed)`` right before the adapters are made, so their initial weights are equal (checked
  by a checksum). Ours: ``modelcore.integrations.lora.add_lora`` on ``modelcore.LlamaForCausalLM``; theirs:
  ``peft.get_peft_model`` on ``transformers.LlamaForCausalLM``;
* training: ``--steps`` optimizer steps, lr 1e-3, linear schedule with 10% warmup, weight decay 0, clipping at
  1.0, fused AdamW (both defaults), fp32, no checkpoints, no evaluation during training, 2 torch threads.

Measured per run, each library in a fresh subprocess (so one library's peak memory cannot hide the other's):
held-out perplexity before and after training (the task registry's ``evaluate``, i.e.
``modelcore.quantization.evaluation.perplexity`` with our tokenizer, windows of ``--block`` tokens, on the
same held-out texts, for both models), train samples/s over steps 2..N (the first step's warm-up left out),
final train loss (the mean over the last logging window and over the run), peak RSS of the process
(``ru_maxrss``; loading, evaluation and training), and the CPU time other processes took meanwhile.

    python -m benchmarks.bench_lora [--steps 30] [--repeats 1] [--docs 600] [--block 128] [--batch 8]
                                    [--libraries modelcore transformers] [--profile N] [--workdir DIR]

``--profile N`` runs, instead of the measurement, N steps after one warm-up step under ``torch.profiler`` in
each library and writes the operators by self CPU time to ``<workdir>/profile-<library>.txt``.
The libraries alternate; summaries are medians over repeats. Everything is in ``<workdir>/summary.json``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.bench_lora")

LIBRARIES = ("modelcore", "transformers")
THREADS = 2
ASSET = "smollm2-135m-gguf"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
HELDOUT_SHARE = 0.2


# ---------------------------------------------------------------------------------------------- data
def split_documents(docs: int, seed: int) -> tuple[list[str], list[str]]:
    """The flow's split of the Wikipedia summaries: non-empty documents shuffled with ``seed``, the first ``docs``,
    the last 20% held out (whole documents)."""
    from tasks.text_data import read_texts

    values, _ = read_texts("wikipedia-summaries", "text")
    texts = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    random.Random(seed).shuffle(texts)
    texts = texts[:docs]
    cut = len(texts) - math.ceil(HELDOUT_SHARE * len(texts))
    return texts[:cut], texts[cut:]


def prepare_data(workdir: Path, docs: int, block: int, batch: int, seed: int) -> dict[str, Any]:
    """Save the base model (HF layout), the packed training blocks and the held-out texts under ``workdir``."""
    import datasets
    import torch
    import transformers

    from modelcore import AutoModelForCausalLM, AutoTokenizer, assets
    from modelcore.task_registry import get_task

    gguf = assets.fetch(ASSET)
    tokenizer = AutoTokenizer.from_pretrained(gguf)
    model = AutoModelForCausalLM.from_pretrained(gguf, dtype="float32")
    base = workdir / "base"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    del model

    train_texts, heldout = split_documents(docs, seed)
    spec = get_task("causal-lm")
    columns = spec.function("prepare")(tokenizer, {"text": train_texts}, block)
    datasets.Dataset.from_dict(columns).save_to_disk(str(workdir / "train"))
    (workdir / "heldout.json").write_text(json.dumps(heldout))

    # each library batches with its own collator: they must give the same tensors
    rows = [{k: columns[k][i] for k in columns} for i in range(batch)]
    ours = spec.function("collator")(tokenizer)(rows)
    theirs = transformers.default_data_collator([row | {"labels": row["input_ids"]} for row in rows])
    same = all(torch.equal(torch.as_tensor(ours[k]), torch.as_tensor(theirs[k])) for k in ("input_ids", "labels"))
    if not same:
        raise RuntimeError("the two collators batch the same rows differently")
    heldout_tokens = sum(len(ids) for ids in tokenizer(heldout, add_special_tokens=False)["input_ids"])
    return {
        "gguf": str(gguf),
        "base_dir": str(base),
        "documents": {"train": len(train_texts), "heldout": len(heldout)},
        "train_blocks": len(columns["input_ids"]),
        "block_tokens": block,
        "heldout_tokens": heldout_tokens,
        "collators_equal_on_first_batch": same,
    }


# ---------------------------------------------------------------------------------------------- one run
def run_child(library: str, workdir: Path, settings: dict[str, Any], profile_steps: int = 0) -> dict[str, Any]:
    """One run in this (fresh) process: load, add LoRA, evaluate, train, evaluate; returns the measurements."""
    import datasets
    import torch

    from modelcore import AutoTokenizer
    from modelcore.task_registry import get_task

    torch.set_num_threads(THREADS)
    info = json.loads((workdir / "data.json").read_text())
    train = datasets.load_from_disk(str(workdir / "train"))
    heldout = {"text": json.loads((workdir / "heldout.json").read_text())}
    tokenizer = AutoTokenizer.from_pretrained(info["base_dir"])  # ours, for perplexity in both runs
    evaluate = get_task("causal-lm").function("evaluate")
    seed, block = settings["seed"], settings["block"]
    output_dir = tempfile.mkdtemp(prefix=f"bench-lora-{library}-", dir=workdir)
    steps = 1 + profile_steps if profile_steps else settings["steps"]
    args = {
        "output_dir": output_dir,
        "max_steps": steps,
        "per_device_train_batch_size": settings["batch"],
        "learning_rate": settings["lr"],
        "lr_scheduler_type": "linear",
        "warmup_steps": max(1, settings["steps"] // 10),
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "seed": seed,
        "logging_steps": 5,
        "save_strategy": "no",
        "eval_strategy": "no",
        "disable_tqdm": True,
    }
    clock = None
    if library == "modelcore":
        from modelcore import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments
        from modelcore.integrations.lora import add_lora

        model = AutoModelForCausalLM.from_pretrained(info["gguf"], dtype="float32")
        torch.manual_seed(seed)  # the adapters' init
        add_lora(model, TARGETS, LORA["r"], LORA["alpha"], LORA["dropout"])
        collator = _Recording(get_task("causal-lm").function("collator")(tokenizer))
        clock = _callbacks(TrainerCallback, profile_steps)
        trainer = Trainer(
            model,
            TrainingArguments(**args),
            train_dataset=train,
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=[clock],
        )
    else:
        import peft
        import transformers

        transformers.logging.set_verbosity_error()
        model = transformers.LlamaForCausalLM.from_pretrained(info["base_dir"], dtype=torch.float32)
        config = peft.LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=TARGETS,
            task_type="CAUSAL_LM",
        )
        torch.manual_seed(seed)  # the adapters' init
        model = peft.get_peft_model(model, config)
        # run_clm's way for packed blocks: labels are a copy of the ids, batches stacked by default_data_collator
        # (DataCollatorForLanguageModeling would drop the EOS between documents from the loss: pad == eos here)
        train = train.map(lambda block: {"labels": block["input_ids"]}, batched=True)
        collator = _Recording(transformers.default_data_collator)
        clock = _callbacks(transformers.TrainerCallback, profile_steps)
        trainer = transformers.Trainer(
            model=model,
            args=transformers.TrainingArguments(use_cpu=True, report_to="none", **args),
            train_dataset=train,
            data_collator=collator,
            callbacks=[clock],
        )

    lora_a_checksum = sum(float(p.detach().double().sum()) for n, p in model.named_parameters() if "lora_A" in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result: dict[str, Any] = {"library": library, "trainable_parameters": trainable, "lora_A_sum": lora_a_checksum}
    if not profile_steps:
        model.eval()
        start = time.perf_counter()
        result["perplexity_before"] = evaluate(model, tokenizer, heldout, block)["perplexity"]
        result["eval_s"] = round(time.perf_counter() - start, 2)

    cpu_before, own_before = _cpu_times(), _own_cpu_s()
    start = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - start
    cpu_after, own_after = _cpu_times(), _own_cpu_s()
    if profile_steps:
        table = clock.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        (workdir / f"profile-{library}.txt").write_text(table)
        return result | {"profiled_steps": profile_steps, "profile": str(workdir / f"profile-{library}.txt")}

    model.eval()
    result["perplexity_after"] = evaluate(model, tokenizer, heldout, block)["perplexity"]
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]  # steps 2..N
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps transformers'
    own = own_after - own_before
    result |= {
        "steps": out.global_step,
        "train_s": round(train_s, 2),
        "samples_per_s": round(len(gaps) * settings["batch"] / sum(gaps), 3),  # the first step left out
        "first_step_s": round(clock.ends[0] - start, 2),
        "step_ms_median": round(1000 * statistics.median(gaps), 1),
        "step_s": [round(x, 2) for x in gaps],
        "train_loss": round(float(out.training_loss), 4),
        "last_logged_loss": round(float(losses[-1]), 4) if losses else None,
        "logged_losses": [round(float(x), 4) for x in losses],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "optimizer": f"{type(optimizer).__name__}(fused={optimizer.defaults.get('fused')})",
        "batch_hashes": collator.hashes[: out.global_step],
        "train_cpu_own_s": round(own, 1),
        "train_cpu_others_s": round(max(0.0, cpu_after[0] - cpu_before[0] - own), 1),
        "torch_threads": torch.get_num_threads(),
    }
    # other processes took more than 5% of this run's CPU time: its timing is not comparable
    result["disturbed"] = result["train_cpu_others_s"] > 0.05 * own
    return result


class _Recording:
    """A collator that keeps a hash of every batch's input ids (to check both libraries train on the same ones)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hashes: list[str] = []

    def __call__(self, rows: list[dict[str, Any]]) -> Any:
        batch = self.inner(rows)
        self.hashes.append(hashlib.sha1(batch["input_ids"].numpy().tobytes()).hexdigest()[:12])
        return batch


def _callbacks(base: type, profile_steps: int) -> Any:
    """A callback (of either library's ``TrainerCallback`` class) noting when each step ends; with
    ``profile_steps``, it profiles steps 2..1+profile_steps."""

    class StepClock(base):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.profiler: Any = None

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            if profile_steps and state.global_step == 1:
                import torch

                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.start()
            elif profile_steps and state.global_step == 1 + profile_steps:
                self.profiler.stop()

    return StepClock()


def _cpu_times() -> tuple[float, float]:
    """Machine-wide (busy, steal) CPU seconds from /proc/stat; busy excludes idle, iowait and steal."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except OSError:
        return 0.0, 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(library: str, workdir: Path, settings: dict[str, Any], timeout: float, profile_steps: int) -> dict:
    """One run in a fresh subprocess with 2 threads; its JSON result."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(THREADS),
        "MKL_NUM_THREADS": str(THREADS),
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [sys.executable, "-m", "benchmarks.bench_lora", "--child", library, "--workdir", str(workdir)]
    cmd += ["--settings", json.dumps(settings), "--profile", str(profile_steps)]
    log = workdir / f"{library}.log"
    with open(log, "a") as err:
        out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{library} run failed (exit {out.returncode}); {log}:\n{log.read_text()[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- summary
def summarize(runs: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Per library: medians of the timing over undisturbed runs (all runs when every one was disturbed)."""
    table: dict[str, dict[str, Any]] = {}
    for library, rows in runs.items():
        if not rows:
            continue
        quiet = [r for r in rows if not r["disturbed"]] or rows
        table[library] = {
            "runs": len(rows),
            "timed_runs": len(quiet),
            "samples_per_s": statistics.median(r["samples_per_s"] for r in quiet),
            "samples_per_s_all": [r["samples_per_s"] for r in rows],
            "step_ms_median": statistics.median(r["step_ms_median"] for r in quiet),
            "perplexity_before": rows[0]["perplexity_before"],
            "perplexity_after": rows[0]["perplexity_after"],
            "train_loss": rows[0]["train_loss"],
            "last_logged_loss": rows[0]["last_logged_loss"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        }
    if "modelcore" in table and "transformers" in table:
        ratio = table["modelcore"]["samples_per_s"] / table["transformers"]["samples_per_s"]
        table["modelcore"]["speed_vs_transformers"] = round(ratio, 3)
    return table


def markdown(table: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| library | perplexity before | perplexity after | train loss (run / last 5 steps) | samples/s "
        "(steps 2..N) | speed | median step (ms) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for library, row in table.items():
        lines.append(
            f"| {library} | {row['perplexity_before']:.3f} | {row['perplexity_after']:.3f} | "
            f"{row['train_loss']:.4f} / {_fmt(row['last_logged_loss'])} | {row['samples_per_s']:.3f} | "
            f"{row.get('speed_vs_transformers', 1):.2f}x | {row['step_ms_median']:.0f} | {row['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _machine() -> dict[str, Any]:
    import torch

    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "")
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--block", type=int, default=128, help="tokens per packed block and per perplexity window")
    parser.add_argument("--docs", type=int, default=600, help="documents used (the flow's max_examples)")
    parser.add_argument("--seed", type=int, default=0, help="document shuffle, batch order and adapter init")
    parser.add_argument("--repeats", type=int, default=1, help="runs per library (the libraries alternate)")
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument("--profile", type=int, default=0, help="profile N steps per library instead of measuring")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run")
    parser.add_argument("--child", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # inside one measured subprocess
        result = run_child(args.child, args.workdir, json.loads(args.settings), args.profile)
        print(json.dumps(result))
        return result

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelcore-bench-lora-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "block": args.block, "seed": args.seed}
    data = prepare_data(workdir, args.docs, args.block, args.batch, args.seed)
    (workdir / "data.json").write_text(json.dumps(data))
    logger.info("data in %s: %s", workdir, data)
    import peft
    import torch
    import transformers

    summary: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "commit": _commit(),
        "command": "python -m benchmarks.bench_lora " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "torch_threads": THREADS,
        "data": data,
        "settings": settings | {"lora": LORA, "targets": TARGETS},
        "runs": [],
    }
    runs: dict[str, list[dict]] = {lib: [] for lib in args.libraries}
    for i in range(args.repeats if not args.profile else 1):
        order = args.libraries if i % 2 == 0 else args.libraries[::-1]
        for library in order:
            row = measure(library, workdir, settings, args.timeout, args.profile)
            runs[library].append(row)
            summary["runs"].append(row)
            logger.info("%s: %s", library, {k: v for k, v in row.items() if k not in ("batch_hashes", "step_s")})
    summary["machine"]["load_average_after"] = os.getloadavg()
    if not args.profile:
        hashes = {lib: rows[0]["batch_hashes"] for lib, rows in runs.items() if rows}
        summary["same_batches"] = len({json.dumps(h) for h in hashes.values()}) == 1
        checksums = {lib: rows[0]["lora_A_sum"] for lib, rows in runs.items() if rows}
        summary["same_adapter_init"] = len(set(checksums.values())) == 1
        summary["table"] = summarize(runs)
        print(markdown(summary["table"]))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("summary: %s", workdir / "summary.json")
    return summary


if __name__ == "__main__":
    main()
