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
