"""Trains a tiny BERT on real sentences; run alone or under torchrun. Used by test_distributed.py.

python ddp_train.py OUT_DIR PER_DEVICE_BATCH
torchrun --standalone --nproc_per_node 2 ddp_train.py OUT_DIR PER_DEVICE_BATCH
"""

from __future__ import annotations

import json
import sys

import torch

from modelcore import AutoTokenizer, BertConfig, BertForSequenceClassification, assets
from modelcore.serialization.safetensors_io import save_file
from modelcore.trainer import Trainer, TrainingArguments


def main(out_dir: str, per_device_batch: int) -> None:
    import datasets

    tokenizer = AutoTokenizer.from_pretrained(assets.fetch("minilm-l6"))
    rows = assets.load_rotten_tomatoes()[:192]
    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=32)
    data = datasets.Dataset.from_dict({**encoded, "label": [r["label"] for r in rows]})
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,  # dropout masks cannot match across different process counts
        attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config)
    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=per_device_batch,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=4,
        save_strategy="epoch",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model, args, train_dataset=data, processing_class=tokenizer)
    result = trainer.train()
    if trainer.accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{out_dir}/final.safetensors")
        with open(f"{out_dir}/result.json", "w") as f:
            json.dump({"global_step": result.global_step, "world": trainer.accelerator.num_processes}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
