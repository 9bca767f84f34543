"""pipeline("image-classification"): real MNIST digits through a ViT, against transformers' pipeline on the same files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelcore import ViTConfig, ViTForImageClassification, ViTImageProcessor, pipeline
from modelcore.errors import DataError

LABELS = {i: f"digit-{i}" for i in range(10)}


@pytest.fixture(scope="module")
def digits(mnist_digits) -> np.ndarray:
    """20 real MNIST digits (2 of each class), (20, 28, 28) uint8."""
    images, labels = mnist_digits
    return np.concatenate([images[labels == label][:2] for label in range(10)])


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=28, patch_size=7, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_labels=10, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )  # fmt: skip
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(20)  # confident, distinct scores: the ranking means something
    directory = tmp_path_factory.mktemp("vit")
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        directory
    )
    return directory


def test_outputs_equal_transformers_pipeline_on_the_same_files(vit_dir, digits, tmp_path):
    import transformers
    from PIL import Image

    images = [Image.fromarray(d) for d in digits]
    ours = pipeline("image-classification", model=vit_dir)(images, top_k=3)
    theirs = transformers.pipeline("image-classification", model=str(vit_dir), device="cpu")(images, top_k=3)
    assert [[r["label"] for r in row] for row in ours] == [[r["label"] for r in row] for row in theirs]
    np.testing.assert_allclose(
        [[r["score"] for r in row] for row in ours], [[r["score"] for r in row] for row in theirs], atol=1e-5
    )


def test_paths_arrays_and_pil_images_give_the_same_labels(vit_dir, digits, tmp_path):
    from PIL import Image

    classify = pipeline("image-classification", model=vit_dir, batch_size=4)
    paths = []
    for i, digit in enumerate(digits[:5]):
        Image.fromarray(digit).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    from_paths = classify(paths, top_k=None)
    from_arrays = classify(list(digits[:5]), top_k=None)
    from_generator = classify(Image.fromarray(d) for d in digits[:5])
    assert [row[0]["label"] for row in from_paths] == [row[0]["label"] for row in from_arrays]
    assert all(len(row) == 10 and abs(sum(r["score"] for r in row) - 1) < 1e-5 for row in from_paths)
    assert [row[0] for row in from_generator] == [row[0] for row in from_arrays]
    one = classify(paths[0], top_k=2)  # a single image: one list, not a list of lists
    assert isinstance(one, list) and len(one) == 2 and one[0]["label"] in LABELS.values()
    files = [open(path, "rb").read() for path in paths]  # noqa: SIM115 - the files' bytes, as a request carries them
    assert classify(files[0], top_k=2) == one  # one file's bytes: one image
    np.testing.assert_allclose(classify.predict_proba(files), classify.predict_proba(paths), rtol=0, atol=0)


def test_bad_images_are_named(vit_dir, tmp_path):
    classify = pipeline("image-classification", model=vit_dir)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(DataError, match="broken.png"):
        classify([str(broken)])
    with pytest.raises(DataError, match=r"image 0 \(28 bytes\): cannot read the image"):
        classify([broken.read_bytes()])  # a request's damaged file: named by its place and size
    with pytest.raises(DataError, match="no images"):
        classify([])
    with pytest.raises(DataError, match="channel"):
        classify(np.zeros((28, 28, 5), dtype=np.uint8))
