"""Turn what a user passes to ``from_pretrained`` into a local checkpoint directory (or GGUF file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from modelcore.configuration_utils import CONFIG_NAME
from modelcore.serialization.atomic import recover_interrupted_commit

GGUF_SUFFIX = ".gguf"
SCHEME_GROUP = "modelcore.sources"  # entry points: scheme name -> "module:resolver"
_SCHEMES: dict[str, Callable[[str], os.PathLike | str]] = {}


def is_gguf_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file named ``*.gguf`` (what :func:`resolve_source` returns for a GGUF source)."""
    path = Path(path)
    return path.suffix.lower() == GGUF_SUFFIX and path.is_file()


def register_source_scheme(scheme: str, resolver: Callable[[str], os.PathLike | str]) -> None:
    """Resolve references ``<scheme>:/...`` with ``resolver`` (reference -> local directory or GGUF file).

    Integrations declare their schemes as entry points of the group ``modelcore.sources`` (the MLflow one:
    ``models`` and ``runs``), found on first use, so this module never imports them; code can also register a
    scheme at run time with this function.
    """
    _SCHEMES[scheme] = resolver


def scheme_resolver(source: str) -> Callable[[str], os.PathLike | str] | None:
    """The resolver of ``source``'s scheme (``models`` for ``models:/NAME@ALIAS``), or None for a plain path/name."""
    scheme, separator, _ = source.partition(":/")
    if not separator or not scheme.isidentifier():
        return None
    if scheme not in _SCHEMES:
        for entry in entry_points(group=SCHEME_GROUP, name=scheme):
            _SCHEMES[scheme] = entry.load()
            break
    if scheme not in _SCHEMES:
        return None
    return _SCHEMES[scheme]


def resolve_source(source: str | os.PathLike) -> Path:
    """Resolve a checkpoint reference to a local directory, or to a GGUF file.

    Args:
        source: a local directory, the name of an asset in ``modelcore.assets``'s catalog
            (fetched on first use), an MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/3``,
            ``runs:/RUN_ID/PATH``; the registry is ``MLFLOW_TRACKING_URI``'s), or a ``.gguf`` file
            (also named by an asset, or the only ``.gguf`` file of a directory without ``config.json``).

    Returns:
        The directory that holds ``config.json`` / weights / tokenizer files, or the ``.gguf`` file
        (test with :func:`is_gguf_file`; it holds config, weights and tokenizer in one). A save into
        the directory that was killed after its commit point is finished first, so config.json and
        the weights read afterwards belong to the same save.

    Raises:
        FileNotFoundError: naming the source when it is neither a directory nor a known asset.
        ValueError: a directory without ``config.json`` holds several ``.gguf`` files.
        CheckpointError: an interrupted save cannot be finished here (read-only directory).
    """
    resolver = scheme_resolver(source) if isinstance(source, str) else None
    if resolver is not None:
        resolved = Path(resolver(source))
        if resolved.is_dir():
            recover_interrupted_commit(resolved)
        return resolved
    path = Path(source).expanduser()
    if path.is_dir():
        recover_interrupted_commit(path)
        return _single_gguf(path) or path
    if is_gguf_file(path):
        return path
    name = str(source)
    from modelcore import assets  # local import: assets pulls in nothing heavy, but keep import light

    if name in assets.CATALOG:
        fetched = assets.fetch(name)
        return (_single_gguf(fetched) or fetched) if fetched.is_dir() else fetched
    if path.exists():
        raise NotADirectoryError(f"{path}: expected a checkpoint directory or a {GGUF_SUFFIX} file, got a file")
    raise FileNotFoundError(
        f"{name!r} is neither a local directory nor an asset name "
        f"(known assets: {', '.join(sorted(assets.CATALOG))}); model hubs are not queried"
    )


def _single_gguf(directory: Path) -> Path | None:
    """The one ``.gguf`` file of a directory that has no ``config.json`` (a Hugging Face layout wins)."""
    if (directory / CONFIG_NAME).is_file():
        return None
    found = sorted(p for p in directory.iterdir() if is_gguf_file(p))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"{directory}: holds several GGUF files ({names}); pass the path of the one to load")
    return found[0] if found else None
