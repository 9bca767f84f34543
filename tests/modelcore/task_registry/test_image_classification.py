"""image-classification's optional train-time augmentation: off by default, seeded, the benchmark's moves."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import modelcore
from modelcore.task_registry.image_classification import RandomAffine, black_pixel, collator


@pytest.fixture(scope="module")
def processor():
    return modelcore.create_image_processor("vit_mnist_patch4_28")


@pytest.fixture(scope="module")
def rows(mnist_digits):
    digits, labels = mnist_digits

    def png(digit: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(digit, mode="L").save(buffer, format="PNG")
        return buffer.getvalue()

    return [{"image": png(d), "label": int(y)} for d, y in zip(digits, labels, strict=True)]


def test_off_by_default(processor, rows):
    batch = collator(processor)(rows)
    expected = processor([r["image"] for r in rows], return_tensors="pt")["pixel_values"]
    assert torch.equal(batch["pixel_values"], expected)
    assert batch["labels"].tolist() == [r["label"] for r in rows]


def test_moves_each_image_from_the_global_seed(processor, rows):
    collate = collator(processor, augment=RandomAffine())
    plain = collator(processor)(rows)["pixel_values"]
    torch.manual_seed(0)
    first = collate(rows)
    torch.manual_seed(0)
    again = collate(rows)
    assert torch.equal(first["pixel_values"], again["pixel_values"])  # seeded: resume replays the same moves
    assert first["labels"].tolist() == [r["label"] for r in rows]
    moved = (first["pixel_values"] - plain).abs().flatten(1).amax(1)  # (B,) per image
    assert bool((moved > 0.1).all())  # every image moved
    assert not torch.equal(collate(rows)["pixel_values"], first["pixel_values"])  # the next batch draws anew
    low, high = float(plain.min()), float(plain.max())
    assert low - 1e-5 <= float(first["pixel_values"].min()) and float(first["pixel_values"].max()) <= high + 1e-5


def test_no_move_is_the_identity_and_the_border_is_black(processor, rows):
    plain = collator(processor)(rows)["pixel_values"]
    still = RandomAffine(degrees=0.0, scale=0.0, translate=0.0)
    torch.testing.assert_close(still(plain, black_pixel(processor, 3)), plain, atol=1e-5, rtol=0)
    white = torch.ones(1, 3, 28, 28)  # the processed value of a 255 pixel
    shifted = RandomAffine(degrees=0.0, scale=0.0, translate=4.0)(white, black_pixel(processor, 3))
    assert float(shifted.min()) == pytest.approx(-1.0)  # uncovered border: black (0 -> -1 with mean = std = 0.5)


def test_the_moves_are_the_benchmarks(processor, rows):
    from benchmarks.bench_vit_mnist import with_augmented_copies

    plain = collator(processor)(rows)["pixel_values"]
    torch.manual_seed(3)
    ours = RandomAffine()(plain, black_pixel(processor, 3))
    gray, _ = with_augmented_copies(plain[:, :1], torch.zeros(len(rows), dtype=torch.long), copies=1, seed=3)
    torch.testing.assert_close(ours, gray[len(rows) :].expand_as(ours), atol=1e-4, rtol=0)  # shifts rounded apart
