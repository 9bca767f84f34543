"""Turn what a user passes to ``from_pretrained`` into a local checkpoint directory."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_source(source: str | os.PathLike) -> Path:
    """Resolve a checkpoint reference to a local directory.

    Args:
        source: a local directory, or the name of an asset in ``modelcore.assets``'s catalog
            (fetched on first use).

    Returns:
        The directory that holds ``config.json`` / weights / tokenizer files.

    Raises:
        FileNotFoundError: naming the source when it is neither a directory nor a known asset.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    name = str(source)
    from modelcore import assets  # local import: assets pulls in nothing heavy, but keep import light

    if name in assets.CATALOG:
        return assets.fetch(name)
    if path.exists():
        raise NotADirectoryError(f"{path}: expected a checkpoint directory, got a file")
    raise FileNotFoundError(
        f"{name!r} is neither a local directory nor an asset name "
        f"(known assets: {', '.join(sorted(assets.CATALOG))}); model hubs are not queried"
    )
