"""The fine-tuned MiniLM sentiment model that the quantization and export benchmarks convert.

MiniLM-L6 fine-tuned with our Trainer on the Rotten Tomatoes asset with the Trainer issue's
settings (80/20 split after ``random.Random(0).shuffle``, 1 epoch, max_length 64, batch 32,
lr 5e-5, fp32, seed 0). Trained once and cached under ``$MODELCORE_CACHE/bench/``; later
calls return the cached checkpoint.

    python -m benchmarks.sentiment_model        # trains it if missing, prints its path and accuracy
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

logger = logging.getLogger("benchmarks.sentiment_model")

MAX_LENGTH = 64
SEED = 0
NAME = "minilm-rt-sentiment"


def heldout_split() -> tuple[list[str], list[int]]:
    """The held-out 20% of the shuffled Rotten Tomatoes snippets: (texts, labels)."""
    from modelcore import assets

    rows = assets.load_rotten_tomatoes()
    random.Random(0).shuffle(rows)
    cut = int(0.8 * len(rows))
    return [r["text"] for r in rows[cut:]], [r["label"] for r in rows[cut:]]


def train_split() -> tuple[list[str], list[int]]:
    from modelcore import assets

    rows = assets.load_rotten_tomatoes()
    random.Random(0).shuffle(rows)
    cut = int(0.8 * len(rows))
    return [r["text"] for r in rows[:cut]], [r["label"] for r in rows[:cut]]


def fine_tuned_minilm() -> Path:
    """The checkpoint directory (config.json, model.safetensors, tokenizer files), trained on first call."""
    import torch

    from modelcore import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, assets
    from modelcore.assets import ROTTEN_TOMATOES_LABELS

    target = assets.cache_dir() / "bench" / NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import datasets

    base = assets.fetch("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(base)
    texts, labels = train_split()
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    train = datasets.Dataset.from_dict({**{k: list(map(list, enc[k])) for k in enc.keys()}, "label": labels})
    torch.manual_seed(SEED)  # the new head's init is seeded too
    id2label = dict(enumerate(ROTTEN_TOMATOES_LABELS))
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    work = target.with_name(target.name + ".train")
    shutil.rmtree(work, ignore_errors=True)
    args = TrainingArguments(
        output_dir=str(work),
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=5e-5,
        seed=SEED,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to=[],
    )
    Trainer(model, args, train_dataset=train, processing_class=tokenizer).train()
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def accuracy(checkpoint: Path, batch_size: int = 64) -> float:
    import torch

    from modelcore import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    texts, labels = heldout_split()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[i : i + batch_size], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
            )
            pred = model(**enc).logits.argmax(-1)
            correct += int((pred == torch.tensor(labels[i : i + batch_size])).sum())
    return correct / len(texts)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    path = fine_tuned_minilm()
    print(json.dumps({"checkpoint": str(path), "heldout_accuracy": round(accuracy(path), 4)}))
