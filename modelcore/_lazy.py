"""Lazy re-exports: a package names its public objects and imports their modules on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """Build a module's ``__getattr__`` and ``__dir__`` from {public name: submodule (relative)}.

    A name equal to its submodule's name exports the submodule itself. Resolved names are cached in
    ``namespace`` (the module's globals), so later lookups cost nothing.
    """

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{module_name}")
        value = module if name == module_name else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
