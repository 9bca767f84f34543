"""The retraining flow with ``task="image-classification"``: a folder of real digits in, a served champion out.

400 real MNIST digits are written as PNG files into class folders; the flow trains a tiny ViT checkpoint (random
weights, 7-pixel patches, a 2-class head that the run replaces by a 10-class one) for 80 steps, registers it, and
the champion answers through MLflow with base64 image files and with pixel arrays, and refuses what is not an
image with a message naming the row. (The default, ``vit_mnist_patch4_28`` from scratch on all 5,000 digits, is
``make run ARGS="--task image-classification"``; ``tests/tasks`` trains it for two steps.)
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

NAME = "digits-flow-test"


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """40 real digits of each class as PNG files under ``digits/<digit>/``."""
    from PIL import Image

    from modelcore import assets

    pixels, labels = assets.load_mnist()
    images, labels = np.frombuffer(pixels, np.uint8).reshape(-1, 28, 28), np.asarray(labels)
    root = tmp_path_factory.mktemp("data") / "digits"
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        for i in np.flatnonzero(labels == digit)[:40]:
            Image.fromarray(images[i]).save(root / str(digit) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A randomly initialized ViT for 28-pixel images (16 patches, hidden 64, 2 layers) with a 2-class head."""
    import torch

    from modelcore import create_image_processor, create_model

    torch.manual_seed(0)
    sizes = dict(patch_size=7, hidden_size=64, num_hidden_layers=2, intermediate_size=128)
    directory = tmp_path_factory.mktemp("tiny-vit")
    create_model("vit_mnist_patch4_28", num_classes=2, **sizes).save_pretrained(directory)
    create_image_processor("vit_mnist_patch4_28").save_pretrained(directory)
    return directory


def test_an_image_run_trains_registers_and_serves_images(
    prefect_server, pipeline_home, digit_folder, tiny_vit, monkeypatch
):
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from PIL import Image

    from flows.params import RetrainParams
    from flows.retrain import retrain
    from modelcore import AutoImageProcessor, pipeline

    params = RetrainParams.model_validate(
        {
            "task": "image-classification",
            "base_model": str(tiny_vit),
            "dataset": str(digit_folder),
            "registered_model_name": NAME,
            # 80 steps learn unmoved digits; the task's moved digits and label smoothing pay at its default budget
            # (tests/tasks/test_image_data.py trains with them, benchmarks/bench_vit_mnist.py measures them)
            "training": {
                "num_train_epochs": 8,
                "per_device_train_batch_size": 32,
                "learning_rate": 3e-3,
                "augment": False,
                "label_smoothing_factor": 0.0,
            },
        }
    )
    assert params.export_formats == ["safetensors"] and params.training.lr_scheduler_type == "cosine"  # task defaults
    summary = retrain(params)
    metrics = summary["metrics"]
    assert summary["task"] == "image-classification" and summary["data"]["labels"] == [str(d) for d in range(10)]
    assert metrics["accuracy"] > metrics["baseline_accuracy"] + 0.2  # learned, from random weights, in 80 steps
    assert str(summary["version"]) == "1" and "champion" in summary["aliases"]
    assert summary["export_checks"]["safetensors"]["max_abs_logit_diff"] <= 1e-5
    assert AutoImageProcessor.from_pretrained(summary["checkpoint"]).size == {"height": 28, "width": 28}
    artifacts = _artifacts()  # the run page: the summary and the evaluation's tables
    assert f"**{NAME}** version 1" in artifacts["retrain-summary"].data
    per_class = json.loads(artifacts["evaluation-per-class"].data)  # a table artifact's rows, as JSON
    assert [row["class"] for row in per_class] == [str(d) for d in range(10)]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", summary["tracking_uri"])  # as a consumer of the registry sets it
    uri = f"models:/{NAME}@champion"
    files = sorted(digit_folder.glob("*/*.png"))[::40][:4]  # one file of each of four digits
    encoded = [base64.b64encode(path.read_bytes()).decode() for path in files]
    served = mlflow.pyfunc.load_model(uri)
    frame = served.predict(pd.DataFrame({"image": encoded}))
    assert list(frame.columns) == ["label", "score"] + [f"prob_{d}" for d in range(10)] and len(frame) == 4
    arrays = served.predict({"image": [np.asarray(Image.open(path)).tolist() for path in files]})
    assert frame["label"].tolist() == arrays["label"].tolist()  # a file and its pixels: the same answer
    np.testing.assert_allclose(frame["score"], arrays["score"], rtol=1e-5)
    direct = pipeline("image-classification", model=uri)([str(path) for path in files], top_k=1)
    assert [row[0]["label"] for row in direct] == frame["label"].tolist()

    with pytest.raises(MlflowException, match=r"'image' of row 1 must be an image file in base64"):
        served.predict(pd.DataFrame({"image": [encoded[0], "not an image"]}))
    two_channels = np.zeros((28, 28, 2), np.uint8).tolist()
    with pytest.raises(MlflowException, match=r"image 0.*2 channels|image 0.*channel"):
        served.predict({"image": [two_channels]})
    truncated = base64.b64encode(files[0].read_bytes()[:60]).decode()
    with pytest.raises(MlflowException, match=r"image 0 \(60 bytes\): cannot read the image"):
        served.predict(pd.DataFrame({"image": [truncated]}))
    buffer = io.BytesIO()
    Image.open(files[0]).convert("RGB").save(buffer, format="JPEG")  # another format, three channels: served alike
    rgb = served.predict(pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode()]}))
    assert rgb["label"][0] == frame["label"][0]


def _artifacts() -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key: a for a in client.read_latest_artifacts()}


def test_an_empty_class_folder_fails_the_run_before_training(prefect_server, pipeline_home, digit_folder, tmp_path):
    import shutil

    from flows.params import RetrainParams
    from flows.retrain import retrain
    from tasks.readers import DatasetError

    data = tmp_path / "digits"
    shutil.copytree(digit_folder, data)
    (data / "x").mkdir()
    params = RetrainParams.model_validate({"task": "image-classification", "dataset": str(data)})
    with pytest.raises(DatasetError, match=r"class folder .*digits/x holds no images"):
        retrain(params)
    assert not (pipeline_home / "runs").exists() or not any((pipeline_home / "runs").iterdir())  # nothing trained
