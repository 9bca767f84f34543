"""A small runtime check of the annotation kinds our dataclasses use (configs, training arguments)."""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Union


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint``: unions, None, int/float (bool is not a number), list/tuple, dict, classes."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(matches(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def as_float_if_wanted(value: Any, hint: Any) -> Any:
    """An int where ``hint`` asks for a float (and not an int) as a float; anything else unchanged.

    JSON writes ``1e30`` and ``1000000000000000000000000000000`` alike for a float field; the int would reach
    torch as an int64 (and overflow there). An int too large for a float becomes ``inf`` (refused as not finite).
    """
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if float not in options or int in options:
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def type_name(hint: Any) -> str:
    """``int | None`` -> "int or None", for error messages."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))


def non_finite_path(value: Any, name: str) -> tuple[str, float] | None:
    """The first NaN or infinite float in ``value`` (nested in dicts and lists too), or None.

    JSON files can hold ``NaN`` and ``Infinity`` (Python's json reads them), and a NaN passes every range
    check written as a comparison, so fields are checked for them once, here, before any range check.

    Args:
        value: a field's value.
        name: the field's name, the root of the returned path.

    Returns:
        ``(path, value)``, e.g. ``("LlamaConfig.rope_scaling['factor']", nan)``, or None when all are finite.
    """
    stack = [(name, value)]  # iterative: a nested value may be as deep as the JSON parser allows
    while stack:
        path, current = stack.pop()
        if isinstance(current, float) and not math.isfinite(current):
            return path, current
        if isinstance(current, dict):
            stack.extend((f"{path}[{key!r}]", item) for key, item in reversed(list(current.items())))
        elif isinstance(current, (list, tuple)):
            stack.extend((f"{path}[{index}]", item) for index, item in reversed(list(enumerate(current))))
    return None
