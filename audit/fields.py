"""Values of a stored record, read defensively: a value of the wrong type reads as absent.

A decision log may have been edited (that is what ``decision-log verify`` finds out), so a reader
takes nothing in a record for granted: JSON gives any type anywhere, and ``true`` is an ``int`` to
Python. These never raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: Any) -> str:
    """A string field; a number (association ids were integers before 2026-12) as its digits."""
    if type(value) is str:  # nearly always (a str subclass takes the longer way below)
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def strings(value: Any) -> tuple[str, ...]:
    return tuple(text(item) for item in value) if isinstance(value, list | tuple) else ()


def mapping(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}
