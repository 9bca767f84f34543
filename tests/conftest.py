"""Shared fixtures: real assets (fetched once per session into the modelcore cache)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def minilm_dir():
    """The real all-MiniLM-L6-v2 checkpoint (BERT, 22.7M parameters) as a Hugging Face folder."""
    from modelcore import assets

    return assets.fetch("minilm-l6")


@pytest.fixture(scope="session")
def rotten_tomatoes():
    """Real Rotten Tomatoes review snippets: a list of {"text": str, "label": int} (1 = fresh)."""
    from modelcore import assets

    return assets.load_rotten_tomatoes()


@pytest.fixture(scope="session")
def mnist_digits():
    """30 real MNIST digits (3 of each class) from the MNIST-5k asset: (30, 28, 28) uint8 and their labels."""
    import numpy as np

    from modelcore import assets

    pixels, labels = assets.load_mnist()  # sorted by label
    images, labels = np.frombuffer(pixels, np.uint8).reshape(-1, 28, 28), np.asarray(labels)
    picked = np.concatenate([np.flatnonzero(labels == label)[:3] for label in range(10)])
    return images[picked].copy(), labels[picked]
