"""ViT from scratch on MNIST-5k: our Trainer against transformers', the same recipe and the same tensors.

Issue 17: a ViT trained from scratch on the 5,000 digits of ``modelcore.assets.load_mnist()`` with 20% held
out must reach 95% held-out accuracy, and at least transformers' ViT trained with the same recipe and budget.

* data: a seeded stratified split (``--split-seed``, default 0): each class is shuffled, the classes are laid
  end to end and every 5th digit is held out, so 4,000 train / 1,000 held-out with each class at 20% (+-1).
  The parent preprocesses once with modelcore's ``vit_mnist_patch4_28`` image processor (gray to 3 channels,
  rescale, normalize with mean = std = 0.5) and checks that transformers' ``ViTImageProcessor`` with the same
  settings (plus ``do_convert_rgb=True``, which ours does not need for gray images) gives the same pixels.
* augmentation, the same tensors for both: the train set is the 4,000 digits and ``--augment-copies`` (9)
  moved copies of each (rotation +-10 degrees, scale 0.9-1.1, shift +-2 px), drawn once from the split seed:
  40,000 rows. Without it the recipe below (20 epochs over the 4,000) overfits to 92-93.5% held out.
* model: ``vit_mnist_patch4_28`` (image 28, patch 4: 49 patches + CLS; hidden 128, 6 layers, 4 heads,
  intermediate 256, no dropout: ``MODEL_CONFIG``, ``--dropout``; 0.81M parameters), ours from
  ``modelcore.create_model`` and transformers' ``ViTForImageClassification(ViTConfig(...same sizes...))``. Each
  library initializes its own way under ``torch.manual_seed(seed)``: the same distributions (truncated normal,
  std 0.02), not the same weights.
* recipe (``RECIPE``): AdamW (fused), lr 5e-4 (``--lr``), weight decay 0.05 on matrices, batch 64, 4 epochs over the
  40,000 rows (``--epochs``; 160,000 examples, 2,500 steps), label smoothing 0.1 (``--label-smoothing``; each
  library's own ``label_smoothing_factor``), cosine schedule after a 10% linear warmup (250 steps), clipping at
  1.0, fp32, the training seed as init and data-order seed, 2 threads; each library's own ``Trainer`` with these
  arguments and nothing else changed. The probes that chose it are in benchmarks/README.md.
* measured per run, each in a fresh subprocess, the libraries alternating: wall time of ``trainer.train()``,
  samples/s (train examples x epochs / that time), held-out accuracy and loss from each library's own
  ``predict``, peak RSS (``ru_maxrss``), the median step time and the CPU time other processes took.

The bar: modelcore's mean held-out accuracy over the seeds >= 0.95, and >= transformers' mean minus
``tolerance`` = max(0.005, 2 x the standard error of the difference of the two means over the seeds); with one
seed the tolerance is 0.01. The process exits 1 when the bar is missed (never with ``--quick``).

One workaround, for a modelcore Trainer limitation: its dataset check requires an ``input_ids`` (or
``inputs_embeds``) column and its ``predict`` sorts by the length of ``input_ids``, so a dataset of
``pixel_values`` alone is refused. Our rows carry a one-element ``input_ids`` and a ``length`` of 1 that the
shared collator drops; the model never sees them.

    python -m benchmarks.bench_vit_mnist [--seeds 0 1 2] [--lr LR] [--epochs N] [--label-smoothing F] [--dropout P]
                                         [--augment-copies N] [--json] [--quick] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_train import _cpu_times, _cross_entropy, _machine, _own_cpu_s, _step_clock, _version

logger = logging.getLogger("benchmarks.bench_vit_mnist")

LIBRARIES = ("modelcore", "transformers")
MODEL_NAME = "vit_mnist_patch4_28"
THREADS = 2
ACCURACY_BAR = 0.95
HELDOUT_EVERY = 5  # every 5th digit of the class-ordered shuffle is held out: 20%
AUGMENT_COPIES = 9  # the train set: 4,000 digits and 9 moved copies of each (40,000 rows)
RECIPE = dict(
    num_train_epochs=4,  # 4 epochs over 40,000 rows: each digit seen 40 times, 160,000 examples
    per_device_train_batch_size=64,
    per_device_eval_batch_size=256,
    learning_rate=5e-4,  # the lr, budget and smoothing probes are in benchmarks/README.md
    weight_decay=0.05,
    label_smoothing_factor=0.1,
    lr_scheduler_type="cosine",
    warmup_ratio=0.1,  # resolved to warmup_steps (the same integer for both libraries) in training_arguments()
    max_grad_norm=1.0,
    optim="adamw_torch_fused",
    eval_strategy="no",
    save_strategy="no",
    logging_steps=50,
    disable_tqdm=True,
)
MODEL_CONFIG = dict(hidden_dropout_prob=0.0)  # config fields both ViTConfigs have, on top of the sizes


# ---------------------------------------------------------------------------------------------- data
def stratified_split(labels: list[int], seed: int) -> tuple[list[int], list[int]]:
    """Train and held-out indices: each class shuffled with ``seed``, classes end to end, every 5th held out."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    ordered = np.concatenate([rng.permutation(np.flatnonzero(labels_array == c)) for c in range(10)])
    held = np.arange(len(ordered)) % HELDOUT_EVERY == 0
    return sorted(ordered[~held].tolist()), sorted(ordered[held].tolist())


def prepare_data(workdir: Path, split_seed: int, augment_copies: int) -> dict:
    """Split, preprocess once (checked against transformers' processor) and save the tensors to ``workdir``."""
    import numpy as np
    import torch
    import transformers
    from PIL import Image

    import modelcore
    from modelcore import assets

    pixels, labels = assets.load_mnist()
    images = np.frombuffer(pixels, np.uint8).reshape(-1, 28, 28)
    train_idx, heldout_idx = stratified_split(labels, split_seed)
    processor = modelcore.create_image_processor(MODEL_NAME)
    settings = {k: v for k, v in processor.to_dict().items() if k != "image_processor_type"}
    # ours turns a gray image into 3 equal channels by itself; transformers' needs do_convert_rgb=True for that
    peer = transformers.ViTImageProcessor(**{**settings, "do_convert_rgb": True})
    tensors, info = {}, {"split_seed": split_seed, "processor": settings}
    for name, idx in (("train", train_idx), ("heldout", heldout_idx)):
        batch = [Image.fromarray(images[i], mode="L") for i in idx]  # gray PIL images, as a user has them
        ours = processor(batch, return_tensors="pt")["pixel_values"]
        theirs = peer(batch, return_tensors="pt")["pixel_values"]
        if ours.shape != theirs.shape or not torch.equal(ours, theirs):
            diff = (ours - theirs).abs().max().item() if ours.shape == theirs.shape else "shapes differ"
            raise RuntimeError(f"{name}: modelcore and transformers preprocess differently (max diff {diff})")
        if not torch.equal(ours[:, :1].expand_as(ours), ours):
            raise RuntimeError(f"{name}: the processor's 3 channels differ; this benchmark stores one")
        gray, digits = ours[:, :1].contiguous(), torch.tensor([labels[i] for i in idx])  # (N, 1, 28, 28), (N,)
        if name == "train" and augment_copies:
            gray, digits = with_augmented_copies(gray, digits, augment_copies, seed=split_seed)
        tensors[f"{name}_pixel_values"], tensors[f"{name}_labels"] = gray, digits
        counts = torch.bincount(tensors[f"{name}_labels"], minlength=10).tolist()
        info[name] = {"images": len(idx), "examples": len(digits), "per_class": counts, "shape": list(ours.shape)}
    info["augment_copies"] = augment_copies
    torch.save(tensors, workdir / "tensors.pt")
    return info


def with_augmented_copies(gray, labels, copies: int, seed: int) -> tuple:
    """The images followed by ``copies`` randomly moved versions of each: rotation +-10 degrees, scale 0.9-1.1,
    shift +-2 pixels (bilinear; the uncovered border is background). Drawn once from ``seed``, so both
    libraries train on the same tensors.

    Args:
        gray: (N, 1, 28, 28) normalized pixels (background -1).
        labels: (N,) digits.

    Returns:
        ((N x (1 + copies), 1, 28, 28) pixels, (N x (1 + copies),) labels).
    """
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    n = len(gray)
    out = [gray]
    for _ in range(copies):
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
        scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 / 14)  # +-2 px in [-1, 1] coordinates
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(gray.shape), align_corners=False)
        # sample (x + 1) with zero padding, then shift back: outside the image is background (-1)
        out.append(F.grid_sample(gray + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1)
    return torch.cat(out), labels.repeat(1 + copies)


class DigitRows:
    """Map-style dataset of ``{"pixel_values", "labels"}`` rows over preprocessed tensors.

    ``with_input_ids``: add a one-element ``input_ids`` and a ``length`` of 1, which modelcore's Trainer
    requires of every dataset (see the module docstring); :func:`collate` drops them.
    """

    def __init__(self, pixel_values, labels, with_input_ids: bool = False) -> None:
        import torch

        self.pixel_values, self.labels = pixel_values, labels
        self.placeholder = {"input_ids": torch.zeros(1, dtype=torch.long), "length": 1} if with_input_ids else {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        pixels = self.pixel_values[i].expand(3, -1, -1)  # gray (1, 28, 28) -> the 3 equal channels the model takes
        return {"pixel_values": pixels, "labels": self.labels[i], **self.placeholder}


def collate(rows: list[dict]) -> dict:
    """Stack pixel values and labels (what transformers' ``default_data_collator`` does for these rows)."""
    import torch

    return {
        "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
        "labels": torch.stack([r["labels"] for r in rows]),
    }


# ---------------------------------------------------------------------------------------------- one run
def training_arguments(recipe: dict, train_examples: int, seed: int) -> dict:
    """The recipe as keyword arguments both ``TrainingArguments`` take; warmup as an integer number of steps.

    transformers 5 has no ``warmup_ratio`` (a float ``warmup_steps`` is the ratio there): giving both libraries
    the same integer, ceil(ratio x total steps), keeps the schedules identical.
    """
    settings = {k: v for k, v in recipe.items() if k != "warmup_ratio"}
    steps = math.ceil(train_examples / recipe["per_device_train_batch_size"]) * recipe["num_train_epochs"]
    settings["warmup_steps"] = math.ceil(recipe["warmup_ratio"] * steps)
    settings["seed"] = seed
    return settings


def run_child(library: str, seed: int, workdir: Path, recipe: dict, model_config: dict) -> dict:
    """One training run in this (fresh) process; returns its measurements."""
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    tensors = torch.load(workdir / "tensors.pt", weights_only=True)  # our own file, still never unpickled
    ours = library == "modelcore"
    train = DigitRows(tensors["train_pixel_values"], tensors["train_labels"], with_input_ids=ours)
    heldout = DigitRows(tensors["heldout_pixel_values"], tensors["heldout_labels"], with_input_ids=ours)
    output_dir = tempfile.mkdtemp(prefix=f"bench-vit-{library}-", dir=workdir)
    settings = training_arguments(recipe, len(train), seed)

    if ours:
        import modelcore

        torch.manual_seed(seed)
        model = modelcore.create_model(MODEL_NAME, num_classes=10, **model_config)
        args = modelcore.TrainingArguments(output_dir=output_dir, **settings)
        clock = _step_clock(modelcore.TrainerCallback)
        trainer = modelcore.Trainer(model, args, train_dataset=train, data_collator=collate, callbacks=[clock])
    else:
        import transformers

        transformers.logging.set_verbosity_warning()
        sizes = modelcore_sizes()
        torch.manual_seed(seed)
        config = transformers.ViTConfig(**sizes, **model_config, num_labels=10)
        model = transformers.ViTForImageClassification(config)
        args = transformers.TrainingArguments(output_dir=output_dir, use_cpu=True, report_to="none", **settings)
        clock = _step_clock(transformers.TrainerCallback)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[clock]
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
    labels = tensors["heldout_labels"].numpy()
    if pred.label_ids is not None and not np.array_equal(np.asarray(pred.label_ids), labels):
        raise RuntimeError(f"{library}: predict returned labels out of dataset order")
    steps_s = sorted(b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False))  # steps 2..N
    epochs = recipe["num_train_epochs"]
    result = {
        "library": library,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_s": round(train_s, 2),
        "train_samples_per_s": round(len(train) * epochs / train_s, 1),
        "steps": out.global_step,
        "train_loss": round(float(out.training_loss), 4),
        "heldout_accuracy": round(float((logits.argmax(-1) == labels).mean()), 4),
        "heldout_loss": round(_cross_entropy(logits, labels), 4),
        "predict_s": round(predict_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        "step_ms_median": round(1000 * statistics.median(steps_s), 1) if steps_s else None,
        "train_cpu_own_s": round(own_after - own_before, 1),
        "train_cpu_others_s": round(max(0.0, cpu_after[0] - cpu_before[0] - (own_after - own_before)), 1),
        "train_cpu_steal_s": round(cpu_after[1] - cpu_before[1], 1),
        "loss_every_50_steps": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
    }
    # other processes took more than 5% of this run's CPU time: its timing is not comparable
    result["disturbed"] = result["train_cpu_others_s"] > 0.05 * result["train_cpu_own_s"]
    return result


def modelcore_sizes() -> dict:
    """The ViT sizes of our ``vit_mnist_patch4_28``, for transformers' ``ViTConfig``."""
    from modelcore.factory import MODEL_REGISTRY

    return dict(MODEL_REGISTRY[MODEL_NAME]().sizes)


def measure(library: str, seed: int, workdir: Path, recipe: dict, model_config: dict, timeout: float) -> dict:
    """One run in a fresh subprocess with 2 OpenMP threads; returns the child's JSON line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    cmd = [sys.executable, "-m", "benchmarks.bench_vit_mnist", "--child", library, "--seeds", str(seed)]
    cmd += ["--workdir", str(workdir), "--recipe-json", json.dumps(recipe), "--config-json", json.dumps(model_config)]
    log = workdir / f"{library}.log"
    with open(log, "a") as err:
        out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{library} seed {seed} failed (exit {out.returncode}); {log}:\n{log.read_text()[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- summary
def summarize(rows: list[dict]) -> dict:
    """Means over seeds (accuracy does not depend on timing); times over undisturbed runs when there are any."""
    timed = [r for r in rows if not r["disturbed"]] or rows
    accuracies = [r["heldout_accuracy"] for r in rows]
    return {
        "heldout_accuracy_mean": round(statistics.fmean(accuracies), 4),
        "heldout_accuracy_stdev": round(statistics.stdev(accuracies), 4) if len(rows) > 1 else None,
        "heldout_loss_mean": round(statistics.fmean(r["heldout_loss"] for r in rows), 4),
        "train_s_mean": round(statistics.fmean(r["train_s"] for r in timed), 1),
        "train_samples_per_s_mean": round(statistics.fmean(r["train_samples_per_s"] for r in timed), 1),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows),
        "runs": len(rows),
        "timed_runs": len(timed),
    }


def tolerance(runs: dict[str, list[dict]]) -> float:
    """max(0.005, 2 x the standard error of (mean ours - mean theirs)); 0.01 with a single seed."""
    spreads = []
    for rows in runs.values():
        if len(rows) < 2:
            return 0.01
        spreads.append(statistics.variance(r["heldout_accuracy"] for r in rows) / len(rows))
    return round(max(0.005, 2 * math.sqrt(sum(spreads))), 4)


def markdown_table(summary: dict) -> str:
    lines = [
        "| library | seed | held-out accuracy | held-out loss | train (s) | samples/s | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        flag = " (disturbed)" if r["disturbed"] else ""
        lines.append(
            f"| {r['library']} | {r['seed']} | {r['heldout_accuracy']:.4f} | {r['heldout_loss']:.4f} | "
            f"{r['train_s']:.1f}{flag} | {r['train_samples_per_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    for library in LIBRARIES:
        s = summary["summary"].get(library)
        if s:
            spread = f" +- {s['heldout_accuracy_stdev']:.4f}" if s["heldout_accuracy_stdev"] is not None else ""
            lines.append(
                f"| **{library}** | mean | **{s['heldout_accuracy_mean']:.4f}**{spread} | {s['heldout_loss_mean']:.4f} | "
                f"{s['train_s_mean']:.1f} | {s['train_samples_per_s_mean']:.1f} | {s['peak_rss_mb_max']:.0f} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="init and data-order seeds")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the stratified 80/20 split")
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument(
        "--augment-copies", type=int, default=AUGMENT_COPIES, help="moved copies of each train digit (0: none)"
    )
    parser.add_argument(
        "--epochs", type=float, default=None, help=f"override the recipe's {RECIPE['num_train_epochs']}"
    )
    parser.add_argument("--lr", type=float, default=None, help=f"override the recipe's {RECIPE['learning_rate']}")
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=None,
        help=f"override the recipe's label_smoothing_factor {RECIPE['label_smoothing_factor']}",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=f"override hidden_dropout_prob {MODEL_CONFIG['hidden_dropout_prob']}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 seed, 1 epoch over the 4,000 digits, no bar enforced"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run")
    parser.add_argument("--child", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--recipe-json", help=argparse.SUPPRESS)
    parser.add_argument("--config-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # inside one measured subprocess
        recipe, model_config = json.loads(args.recipe_json), json.loads(args.config_json)
        print(json.dumps(run_child(args.child, args.seeds[0], args.workdir, recipe, model_config)))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = dict(RECIPE)
    seeds = args.seeds
    copies = args.augment_copies
    if args.epochs is not None:
        recipe["num_train_epochs"] = args.epochs
    if args.lr is not None:
        recipe["learning_rate"] = args.lr
    if args.label_smoothing is not None:
        recipe["label_smoothing_factor"] = args.label_smoothing
    model_config = dict(MODEL_CONFIG)
    if args.dropout is not None:
        model_config["hidden_dropout_prob"] = args.dropout
    if args.quick:
        recipe["num_train_epochs"], seeds, copies = 1, seeds[:1], 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelcore-bench-vit-"))
    workdir.mkdir(parents=True, exist_ok=True)
    import torch

    data = prepare_data(workdir, args.split_seed, copies)
    logger.info("data in %s: %s train, %s held-out", workdir, data["train"]["per_class"], data["heldout"]["per_class"])
    summary: dict = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.bench_vit_mnist " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_before": Path("/proc/loadavg").read_text().split()[:3],
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "torch_threads": THREADS,
        "data": data,
        "recipe": recipe,
        "model_config": model_config,
        "training_arguments": training_arguments(recipe, data["train"]["examples"], seeds[0]),
        "runs": [],
    }
    runs: dict[str, list[dict]] = {lib: [] for lib in args.libraries}
    for i, seed in enumerate(seeds):
        for library in args.libraries if i % 2 == 0 else args.libraries[::-1]:  # alternate who goes first
            row = measure(library, seed, workdir, recipe, model_config, args.timeout)
            runs[library].append(row)
            summary["runs"].append(row)
            logger.info(
                "seed %d %-12s accuracy %.4f (loss %.4f), train %.1f s (%.0f samples/s, median step %.1f ms),"
                " peak RSS %.0f MB [CPU s others %.0f, steal %.0f]%s",
                seed,
                library,
                row["heldout_accuracy"],
                row["heldout_loss"],
                row["train_s"],
                row["train_samples_per_s"],
                row["step_ms_median"] or 0.0,
                row["peak_rss_mb"],
                row["train_cpu_others_s"],
                row["train_cpu_steal_s"],
                "  DISTURBED" if row["disturbed"] else "",
            )
    summary["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    summary["summary"] = {lib: summarize(rows) for lib, rows in runs.items()}
    failures = []
    if "modelcore" in runs:
        ours = summary["summary"]["modelcore"]["heldout_accuracy_mean"]
        if ours < ACCURACY_BAR:
            failures.append(f"modelcore mean accuracy {ours:.4f} < {ACCURACY_BAR}")
        if "transformers" in runs:
            theirs = summary["summary"]["transformers"]["heldout_accuracy_mean"]
            tol = tolerance(runs)
            summary["tolerance"] = tol
            summary["speed_ratio"] = round(
                summary["summary"]["modelcore"]["train_samples_per_s_mean"]
                / summary["summary"]["transformers"]["train_samples_per_s_mean"],
                3,
            )
            if ours < theirs - tol:
                failures.append(f"modelcore mean accuracy {ours:.4f} < transformers' {theirs:.4f} - {tol}")
    summary["failures"] = failures
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(markdown_table(summary))
        if "speed_ratio" in summary:
            print(
                f"\nmodelcore / transformers samples/s: {summary['speed_ratio']:.2f}x; tolerance {summary['tolerance']}"
            )
    for failure in failures:
        logger.error("bar missed: %s%s", failure, " (not enforced with --quick)" if args.quick else "")
    return 1 if failures and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
