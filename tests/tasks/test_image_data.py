"""Image datasets: the MNIST asset, a folder of class sub-folders, a table with an image column; and what they refuse.

The images are real MNIST digits written as PNG (and JPEG) files; the damaged ones are real files cut short or
overwritten.
"""

from __future__ import annotations

import base64
import csv
import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tasks.image_data import load_image_dataset
from tasks.readers import DatasetError

load = load_image_dataset.fn


def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def digit_folder(tmp_path, mnist_digits):
    """30 real digits in class folders named by word (``zero/``...), with a README and a hidden file beside them."""
    digits, labels = mnist_digits
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    root = tmp_path / "digits"
    for i, (pixels, label) in enumerate(zip(digits, labels, strict=True)):
        folder = root / words[label] / ("scans" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.{'png' if i % 3 else 'jpg'}").write_bytes(_png(pixels, "PNG" if i % 3 else "JPEG"))
    (root / "one" / "notes.txt").write_text("collected 2026\n")
    (root / "two" / ".DS_Store").write_bytes(b"\0\1")
    return root


def _stored(ref) -> tuple[datasets.Dataset, datasets.Dataset]:
    return tuple(datasets.load_from_disk(f"{ref.path}/{split}") for split in ("train", "test"))


def test_the_mnist_asset_splits_5000_digits_with_their_names(pipeline_home):
    ref = load("mnist-5k")
    assert (ref.num_train, ref.num_test, ref.rows_read) == (4000, 1000, 5000)
    assert ref.labels == tuple(str(d) for d in range(10))
    assert sum(ref.train_label_counts) == 4000 and min(ref.test_label_counts) > 60  # every digit held out
    train, test = _stored(ref)
    image = Image.open(io.BytesIO(train[0]["image"]))
    assert image.size == (28, 28) and image.format == "PNG"
    assert load("mnist-5k").fingerprint == ref.fingerprint  # the same data and seed: the same split
    assert load("mnist-5k", seed=1).fingerprint != ref.fingerprint


def test_a_folder_of_class_folders_labels_by_folder_and_skips_what_is_no_image(pipeline_home, digit_folder, caplog):
    caplog.set_level("INFO")
    ref = load(str(digit_folder), test_size=0.3)
    assert ref.labels == tuple(sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]))
    assert (ref.num_train, ref.num_test) == (21, 9)
    train, test = _stored(ref)
    rows = list(train) + list(test)
    assert {row["source"] for row in rows} >= {"zero/0.jpg", "one/scans/3.jpg", "nine/scans/29.png"}
    for row in rows:  # each image's label is its folder's
        assert ref.labels[row["label"]] == row["source"].split("/")[0]
    assert "skipped 1 files that are not images: {'.txt': 1}" in caplog.text


def test_an_empty_class_folder_is_refused_by_name(pipeline_home, digit_folder):
    (digit_folder / "ten").mkdir()
    (digit_folder / "ten" / "README.md").write_text("to do\n")
    with pytest.raises(DatasetError, match=r"class folder .*digits/ten holds no images"):
        load(str(digit_folder))


def test_damaged_images_are_all_named_before_any_training(pipeline_home, digit_folder):
    whole = (digit_folder / "one" / "4.png").read_bytes()
    (digit_folder / "one" / "4.png").write_bytes(whole[: len(whole) // 2])  # cut short
    (digit_folder / "six" / "18.jpg").write_text("not a jpeg at all")  # text under an image's name
    with pytest.raises(DatasetError) as caught:
        load(str(digit_folder))
    message = str(caught.value)
    assert "2 of 30 images cannot be read" in message
    assert "one/4.png" in message and "six/18.jpg" in message


def test_images_outside_the_class_folders_are_refused(pipeline_home, digit_folder, mnist_digits):
    (digit_folder / "stray.png").write_bytes(_png(mnist_digits[0][0]))
    with pytest.raises(DatasetError, match=r"1 image\(s\) outside any class folder \(stray.png\)"):
        load(str(digit_folder))
    flat = digit_folder.parent / "flat"
    flat.mkdir()
    (flat / "0.png").write_bytes(_png(mnist_digits[0][0]))
    with pytest.raises(DatasetError, match=r"no class folders; put each class's images in a sub-folder"):
        load(str(flat))  # images with no class folders at all


def test_a_csv_of_relative_paths_with_named_labels(pipeline_home, digit_folder, tmp_path):
    table = digit_folder / "labels.csv"
    files = sorted(p for p in digit_folder.rglob("*") if p.suffix in (".png", ".jpg"))
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "digit"])
        for path in files:
            writer.writerow([path.relative_to(digit_folder), path.relative_to(digit_folder).parts[0]])
        writer.writerow(["", "one"])  # a row without an image: dropped and counted
    ref = load(str(table), image_column="file", label_column="digit")
    assert ref.rows_read == 31 and dict(ref.dropped) == {"missing image": 1}
    assert ref.num_train + ref.num_test == 30 and len(ref.labels) == 10
    with open(table, "a", newline="") as f:
        csv.writer(f).writerow(["seven/missing.png", "seven"])
    with pytest.raises(DatasetError, match=r"row 32, column 'file': no such image file 'seven/missing.png'"):
        load(str(table), image_column="file", label_column="digit")
    with pytest.raises(DatasetError, match=r"no column 'image'; columns are \['file', 'digit'\]"):
        load(str(table), label_column="digit")


def test_parquet_bytes_and_json_base64_give_the_same_images(pipeline_home, mnist_digits, tmp_path):
    import pandas as pd

    digits, labels = mnist_digits
    files = [_png(pixels) for pixels in digits]
    parquet = tmp_path / "digits.parquet"
    pd.DataFrame({"image": [{"bytes": f, "path": None} for f in files], "label": labels.tolist()}).to_parquet(parquet)
    as_json = tmp_path / "digits.jsonl"
    as_json.write_text(
        "".join(
            json.dumps({"image": "data:image/png;base64," + base64.b64encode(f).decode(), "label": int(label)}) + "\n"
            for f, label in zip(files, labels, strict=True)
        )
    )
    a, b = load(str(parquet)), load(str(as_json))
    assert a.labels == b.labels == tuple(f"LABEL_{d}" for d in range(10))  # int labels, as a text dataset's
    assert sorted(_stored(a)[0]["image"]) == sorted(_stored(b)[0]["image"])


def test_a_single_class_is_refused(pipeline_home, digit_folder):
    import shutil

    for folder in digit_folder.iterdir():
        if folder.is_dir() and folder.name != "three":
            shutil.rmtree(folder)
    with pytest.raises(DatasetError, match=r"a single class \['three'\]"):
        load(str(digit_folder))


def test_look_alike_class_folders_are_refused_unless_allowed(pipeline_home, digit_folder):
    (digit_folder / "seven").rename(digit_folder / "Seven ")
    (digit_folder / "eight").rename(digit_folder / "seven")
    with pytest.raises(DatasetError, match="look"):
        load(str(digit_folder))
    assert len(load(str(digit_folder), allow_similar_labels=True).labels) == 10


def test_a_factory_size_trains_from_scratch_and_is_evaluated_on_the_held_out_images(
    pipeline_home, digit_folder, tmp_path
):
    import json

    from modelcore import AutoImageProcessor, AutoModelForImageClassification
    from tasks.evaluation import PREDICTIONS_FILE, evaluate
    from tasks.training import fine_tune, is_architecture

    assert is_architecture("vit_mnist_patch4_28") and not is_architecture(str(digit_folder))
    ref = load(str(digit_folder))
    training = {"max_steps": 2, "per_device_train_batch_size": 8, "save_steps": 1, "disable_tqdm": True}
    trained = fine_tune.fn(
        "vit_mnist_patch4_28", ref.path, list(ref.labels), training, str(tmp_path / "train"),
        task_name="image-classification",
    )  # fmt: skip
    assert trained.global_step == 2
    model = AutoModelForImageClassification.from_pretrained(trained.checkpoint)
    assert model.config.id2label == dict(enumerate(ref.labels)) and model.config.patch_size == 4
    assert AutoImageProcessor.from_pretrained(trained.checkpoint).size == {"height": 28, "width": 28}

    result = evaluate.fn(
        trained.checkpoint, ref.path, list(ref.labels), 0, str(tmp_path / "eval"), task_name="image-classification"
    )
    assert 0 <= result.metrics["accuracy"] <= 1 and "baseline_accuracy" in result.metrics
    lines = [json.loads(line) for line in (tmp_path / "eval" / PREDICTIONS_FILE).read_text().splitlines()]
    assert len(lines) == ref.num_test and {"source", "label", "predicted", "probs"} == set(lines[0])
    assert lines[0]["source"].split("/")[0] in ref.labels  # a prediction names its image's file


def test_augmented_training_moves_the_images_reproducibly_and_only_for_images(pipeline_home, digit_folder, tmp_path):
    """``training["augment"]``: the collator moves each image (other weights than unmoved images give), the same
    moves for the same seed; a text task refuses it."""
    from modelcore.serialization.safetensors_io import load_file
    from tasks.training import fine_tune

    ref = load(str(digit_folder))
    training = {"max_steps": 3, "per_device_train_batch_size": 8, "save_steps": 3, "disable_tqdm": True}

    def weights(name: str, **extra) -> dict:
        trained = fine_tune.fn(
            "vit_mnist_patch4_28", ref.path, list(ref.labels), {**training, **extra}, str(tmp_path / name),
            task_name="image-classification",
        )  # fmt: skip
        return load_file(f"{trained.checkpoint}/model.safetensors")

    plain, moved, again = weights("plain"), weights("moved", augment=True), weights("again", augment=True)
    assert any(not torch.equal(plain[k], moved[k]) for k in plain)
    assert all(torch.equal(moved[k], again[k]) for k in moved)
    with pytest.raises(ValueError, match="training.augment moves images; task text-classification takes text"):
        fine_tune.fn("minilm-l6", ref.path, [], {**training, "augment": True}, str(tmp_path / "text"))
