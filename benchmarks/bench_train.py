"""Training benchmark: fine-tune MiniLM-L6 on Rotten Tomatoes, our Trainer against transformers'.

The workload of the Trainer speed issue, run side by side with the same data and settings:

* data: ``modelcore.assets.load_rotten_tomatoes()`` (12,752 snippets), shuffled with
  ``random.Random(0)``, split 80/20 into train / held-out, tokenized once (here, in the parent)
  with the MiniLM tokenizer (truncation at 64 tokens, no padding) and saved as two
  ``datasets.Dataset``; both libraries read the same files and pad per batch in their collator;
* model: the real all-MiniLM-L6-v2 checkpoint with a fresh 2-label head, ``torch.manual_seed(seed)``
  right before ``from_pretrained`` (the head init is seeded);
* settings: 1 epoch, batch 32, lr 5e-5, linear schedule, no warmup, weight decay 0, seed 0
  (``--seeds`` runs more seeds; the data split stays the same),
  logging every 50 steps, no evaluation during training, no checkpoints, 2 torch threads;
* peer: ``transformers.Trainer`` as a user runs it (``use_cpu=True``, ``bf16`` for the bf16 run,
  ``DataCollatorWithPadding``, HF defaults otherwise: random batches, fused AdamW, clipping at 1.0);
* ours: ``modelcore.Trainer`` with our defaults (random batches in transformers' order, padding-free BERT
  training with ``fast_dropout`` masks, fused AdamW, clipping at 1.0) and our tokenizer's padding collator.
  ``--exact`` turns padding-free training off: the same epoch order, dropout stream and arithmetic as
  transformers' Trainer, so each seed reproduces transformers' run (same loss and accuracy).
  ``--group-by-length`` draws length-grouped batches instead of random ones.

Each run is a fresh subprocess (no accelerate state or thread pool is shared); the libraries
alternate. Per run: wall time of ``trainer.train()``, train samples/s (train size / that time),
held-out accuracy (argmax of each library's own ``predict`` logits), peak RSS of the process.

    python -m benchmarks.bench_train [--dtype bf16 fp32] [--seeds 0] [--repeats 1] [--exact] [--group-by-length]
                                     [--limit N] [--workdir DIR]

``--limit N`` keeps the first N shuffled examples (before the split), for a quick check.
Summaries are medians over seeds and repeats (worst case for RSS); every run is in ``runs``
of ``<workdir>/summary.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("benchmarks.bench_train")

LIBRARIES = ("modelcore", "transformers")
THREADS = 2
MAX_LENGTH = 64
SETTINGS = dict(
    num_train_epochs=1,
    per_device_train_batch_size=32,
    learning_rate=5e-5,
    seed=0,
    lr_scheduler_type="linear",
    warmup_steps=0,
    weight_decay=0.0,
    eval_strategy="no",
    save_strategy="no",
    logging_steps=50,
    disable_tqdm=True,
)


# ---------------------------------------------------------------------------------------------- data
def prepare_data(workdir: Path, limit: int | None) -> dict:
    """Shuffle, split 80/20, tokenize once and save both splits as ``datasets.Dataset`` under ``workdir``."""
    import datasets
    import transformers

    from modelcore import AutoTokenizer, assets

    minilm = assets.fetch("minilm-l6")
    rows = assets.load_rotten_tomatoes()
    random.Random(0).shuffle(rows)
    if limit:
        rows = rows[:limit]
    cut = int(0.8 * len(rows))
    splits = {"train": rows[:cut], "heldout": rows[cut:]}

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    peer = transformers.AutoTokenizer.from_pretrained(minilm)
    info: dict = {"minilm_dir": str(minilm), "max_length": MAX_LENGTH}
    for name, part in splits.items():
        texts = [r["text"] for r in part]
        enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
        # both libraries train on exactly these ids; check they are the ids transformers' tokenizer gives
        ref = peer(texts, truncation=True, max_length=MAX_LENGTH)
        if [list(x) for x in enc["input_ids"]] != [list(x) for x in ref["input_ids"]]:
            raise RuntimeError(f"{name}: modelcore and transformers tokenize differently")
        columns = {key: [list(v) for v in enc[key]] for key in ("input_ids", "token_type_ids", "attention_mask")}
        columns["label"] = [r["label"] for r in part]
        datasets.Dataset.from_dict(columns).save_to_disk(str(workdir / name))
        lengths = [len(ids) for ids in columns["input_ids"]]
        info[name] = {
            "examples": len(part),
            "fresh": sum(columns["label"]),
            "mean_tokens": round(statistics.mean(lengths), 2),
            "max_tokens": max(lengths),
        }
    return info


# ---------------------------------------------------------------------------------------------- one run
def run_child(
    library: str, dtype: str, seed: int, workdir: Path, minilm: str, exact: bool = False, grouped: bool = False
) -> dict:
    """One training run in this (fresh) process; returns its measurements.

    ``exact``: ours trains padded, as transformers' Trainer does, which reproduces its run.
    ``grouped``: ours draws length-grouped batches (``group_by_length=True``).
    """
    import resource

    import datasets
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    train = datasets.load_from_disk(str(workdir / "train"))
    heldout = datasets.load_from_disk(str(workdir / "heldout"))
    bf16 = dtype == "bf16"
    output_dir = tempfile.mkdtemp(prefix=f"bench-train-{library}-", dir=workdir)
    settings = {**SETTINGS, "seed": seed}

    if library == "modelcore":
        from modelcore import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            Trainer,
            TrainerCallback,
            TrainingArguments,
        )

        tokenizer = AutoTokenizer.from_pretrained(minilm)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2)
        model.bert.padding_free_training = not exact
        args = TrainingArguments(output_dir=output_dir, bf16=bf16, group_by_length=grouped, **settings)
        clock = _step_clock(TrainerCallback)
        trainer = Trainer(model, args, train_dataset=train, processing_class=tokenizer, callbacks=[clock])
    else:
        import transformers

        transformers.logging.set_verbosity_warning()
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)
        torch.manual_seed(seed)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2)
        args = transformers.TrainingArguments(
            output_dir=output_dir, bf16=bf16, use_cpu=True, report_to="none", **settings
        )
        trainer = transformers.Trainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=transformers.DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            callbacks=[clock := _step_clock(transformers.TrainerCallback)],
        )

    cpu_before, own_before = _cpu_times(), _own_cpu_s()
    start = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - start
    cpu_after, own_after = _cpu_times(), _own_cpu_s()
    start = time.perf_counter()
    pred = trainer.predict(heldout)
    predict_s = time.perf_counter() - start
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    labels = np.asarray(heldout["label"])
    if pred.label_ids is not None and not np.array_equal(np.asarray(pred.label_ids), labels):
        raise RuntimeError(f"{library}: predict returned labels out of dataset order")
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    steps_s = sorted(b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False))  # steps 2..N
    result = {
        "library": library,
        "dtype": dtype,
        "seed": seed,
        "train_s": round(train_s, 2),
        "train_samples_per_s": round(len(train) / train_s, 2),
        "steps": out.global_step,
        "train_loss": round(float(out.training_loss), 4),
        "heldout_accuracy": round(float((logits.argmax(-1) == labels).mean()), 4),
        # mean cross-entropy on the held-out set: a smoother quality figure than accuracy across seeds
        "heldout_loss": round(_cross_entropy(logits, labels), 4),
        "predict_s": round(predict_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        # a step more than 3x the median step is a sign of outside interference (steal, a noisy neighbour)
        "step_ms_median": round(1000 * statistics.median(steps_s), 1) if steps_s else None,
        "step_ms_p90": round(1000 * steps_s[int(0.9 * (len(steps_s) - 1))], 1) if steps_s else None,
        "steps_over_3x_median": sum(x > 3 * statistics.median(steps_s) for x in steps_s) if steps_s else 0,
        # machine-wide CPU seconds during train(): this process, everyone else, and hypervisor steal
        "train_cpu_own_s": round(own_after - own_before, 1),
        "train_cpu_others_s": round(max(0.0, cpu_after[0] - cpu_before[0] - (own_after - own_before)), 1),
        "train_cpu_steal_s": round(cpu_after[1] - cpu_before[1], 1),
        "loss_every_50_steps": losses,
    }
    # other processes took more than 5% of this run's CPU time: its timing is not comparable
    result["disturbed"] = result["train_cpu_others_s"] > 0.05 * result["train_cpu_own_s"]
    return result


def _cross_entropy(logits, labels) -> float:
    """Mean negative log-likelihood of ``labels`` under ``logits`` (computed in float64)."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def _step_clock(base: type) -> object:
    """A callback (of either library's ``TrainerCallback`` class) noting when each optimizer step ends."""

    class StepClock(base):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

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
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    library: str, dtype: str, seed: int, workdir: Path, minilm: str, timeout: float | None, ours: list[str]
) -> dict:
    """One run in a fresh subprocess; ``ours`` are the batching flags (``--exact``, ``--group-by-length``)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(THREADS),
        "MKL_NUM_THREADS": str(THREADS),
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [sys.executable, "-m", "benchmarks.bench_train", "--child", library, "--dtype", dtype, "--seeds", str(seed)]
    cmd += ["--workdir", str(workdir), "--minilm", minilm, *ours]
    log = workdir / f"{library}-{dtype}.log"
    with open(log, "a") as err:
        out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{library} {dtype} run failed (exit {out.returncode}); {log}:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (head init, order, dropout)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per library, dtype and seed (alternating)")
    parser.add_argument(
        "--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES), help="measure only these libraries"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="ours with padding-free training off: transformers' own run, bit for bit",
    )
    parser.add_argument(
        "--group-by-length", action="store_true", help="ours with length-grouped batches (faster, other batches)"
    )
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N shuffled examples")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run")
    parser.add_argument("--child", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--minilm", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # inside one measured subprocess
        result = run_child(
            args.child, args.dtype[0], args.seeds[0], args.workdir, args.minilm, args.exact, args.group_by_length
        )
        print(json.dumps(result))
        return result

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelcore-bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    import torch

    data = prepare_data(workdir, args.limit)
    logger.info("data in %s: %d train, %d held-out", workdir, data["train"]["examples"], data["heldout"]["examples"])
    summary: dict = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.bench_train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "accelerate": _version("accelerate"),
        "torch_threads": THREADS,
        "data": data,
        "settings": {**SETTINGS, "seed": args.seeds},
        "modelcore_batches": ("length-grouped" if args.group_by_length else "random")
        + (", padded (--exact)" if args.exact else ", padding-free"),
        "repeats": args.repeats,
        "runs": [],
    }
    ours = (["--exact"] if args.exact else []) + (["--group-by-length"] if args.group_by_length else [])
    for dtype in args.dtype:
        runs: dict[str, list[dict]] = {lib: [] for lib in args.libraries}
        turns = [seed for seed in args.seeds for _ in range(args.repeats)]
        for i, seed in enumerate(turns):
            order = args.libraries if i % 2 == 0 else args.libraries[::-1]
            for library in order:
                row = measure(library, dtype, seed, workdir, data["minilm_dir"], args.timeout, ours)
                runs[library].append(row)
                summary["runs"].append(row)
                logger.info(
                    "%s seed %d %-12s train %.1f s (%.1f samples/s), loss %.4f, held-out accuracy %.4f (loss %.4f),"
                    " peak RSS %.0f MB"
                    " [CPU s during train: own %.0f, others %.0f, steal %.0f; median step %.0f ms, %d steps > 3x]",
                    dtype,
                    seed,
                    library,
                    row["train_s"],
                    row["train_samples_per_s"],
                    row["train_loss"],
                    row["heldout_accuracy"],
                    row["heldout_loss"],
                    row["peak_rss_mb"],
                    row["train_cpu_own_s"],
                    row["train_cpu_others_s"],
                    row["train_cpu_steal_s"],
                    row["step_ms_median"],
                    row["steps_over_3x_median"],
                )
                if row["disturbed"]:
                    logger.warning("  ^ disturbed: other processes ran during it; left out of the medians")
        best = {lib: _summarize(rows) for lib, rows in runs.items()}
        summary[dtype] = best
        if len(best) == len(LIBRARIES):
            summary[dtype]["speed_ratio"] = round(
                best["modelcore"]["train_samples_per_s"] / best["transformers"]["train_samples_per_s"], 3
            )
            summary[dtype]["accuracy_delta"] = round(
                best["modelcore"]["heldout_accuracy_mean"] - best["transformers"]["heldout_accuracy_mean"], 4
            )
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    printed = {k: v for k, v in summary.items() if k != "runs"}
    print(json.dumps(printed, indent=2))
    for dtype in args.dtype:
        if "speed_ratio" in summary[dtype]:
            print(f"{dtype}: modelcore / transformers train samples/s = {summary[dtype]['speed_ratio']:.2f}x")
            print(
                f"{dtype}: held-out accuracy, mean over {len(args.seeds)} seed(s): modelcore - transformers = "
                f"{summary[dtype]['accuracy_delta']:+.4f} (a seed is one draw: compare means over several seeds)"
            )
    return summary


def _summarize(rows: list[dict]) -> dict:
    """Medians of times (over undisturbed runs, when there are any); worst peak RSS; quality over every run.

    Accuracy and held-out loss do not depend on timing (a seed's run is deterministic), so their means and
    per-seed values count disturbed runs too.
    """
    every = rows
    rows = [r for r in rows if not r["disturbed"]] or rows
    by_seed = {str(r["seed"]): r["heldout_accuracy"] for r in every}
    return {
        "train_s": round(statistics.median(r["train_s"] for r in rows), 2),
        "train_samples_per_s": round(statistics.median(r["train_samples_per_s"] for r in rows), 2),
        "train_loss": round(statistics.median(r["train_loss"] for r in rows), 4),
        "heldout_accuracy": round(statistics.median(r["heldout_accuracy"] for r in rows), 4),
        "heldout_accuracy_mean": round(statistics.fmean(r["heldout_accuracy"] for r in every), 4),
        # spread between seeds: a single seed's accuracy is one draw from it
        **({"heldout_accuracy_stdev": round(statistics.stdev(by_seed.values()), 4)} if len(by_seed) > 1 else {}),
        "heldout_loss_mean": round(statistics.fmean(r["heldout_loss"] for r in every), 4),
        "predict_s": round(statistics.median(r["predict_s"] for r in rows), 2),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "steps": rows[0]["steps"],
        "step_ms_median": round(statistics.median(r["step_ms_median"] for r in rows), 1),
        "train_cpu_others_s": max(r["train_cpu_others_s"] for r in rows),
        "train_cpu_steal_s": max(r["train_cpu_steal_s"] for r in rows),
        "steps_over_3x_median": max(r["steps_over_3x_median"] for r in rows),
        "runs": len(rows),
        **({"heldout_accuracy_by_seed": by_seed} if len(by_seed) > 1 else {}),
    }


def _machine() -> str:
    """CPU model, core count and the bf16 matrix units the kernel exposes (AMX makes bf16 much faster)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in flags] or ["no bf16 units"]
    return f"{model}, {os.cpu_count()} CPUs, {' '.join(units)}"


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
