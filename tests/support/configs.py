"""Configuration tables for tests that need a file the schema refuses (written with :func:`tomlconf.write`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def merged(base: Mapping[str, Any], patch: Mapping[str, Any], **names: Path) -> dict[str, Any]:
    """``base`` with ``patch`` merged in, table by table (None removes a key); ``{pki}`` and the like
    in strings replaced by ``names``."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return {k: _named(v, names) for k, v in out.items()} if names else out


def _named(value: Any, names: Mapping[str, Path]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, Mapping):
        return {k: _named(v, names) for k, v in value.items()}
    return value
