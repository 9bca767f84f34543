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
    import gzip

    import numpy as np

    from modelcore import assets

    with gzip.open(assets.fetch("mnist-5k"), "rt") as file:
        rows = np.loadtxt(file, delimiter=",", dtype=np.int64)  # 784 pixels then the label, sorted by label
    picked = np.concatenate([np.flatnonzero(rows[:, -1] == label)[:3] for label in range(10)])
    return rows[picked, :784].reshape(-1, 28, 28).astype(np.uint8), rows[picked, -1]
