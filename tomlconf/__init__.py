"""Configuration read once at the edge: TOML tables checked key by key (house rule 7).

Every error names the file, the key and what is wrong; unknown keys are errors too (a typo must not
silently fall back to a default). Shared by the HIAL and both agents.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path = str(path)
        self.key = key
        self.problem = problem


def read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "(syntax)", str(error)) from None


class Table:
    """One TOML table of a file, with typed getters that name ``prefix + key`` in their errors."""

    def __init__(self, data: Mapping[str, Any], path: Path, prefix: str = "") -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, prefix.rstrip(".") or "(file)", "must be a table")
        self.data = data
        self.path = path
        self.prefix = prefix

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, f"{self.prefix}{key}", problem)

    def allow(self, *keys: str) -> Table:
        for key in self.data:
            if key not in keys:
                raise self.error(key, f"unknown key (known: {', '.join(sorted(keys))})")
        return self

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(key, f"must be {names}, not {type(value).__name__}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, list(default))
        if not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of strings")
        return tuple(value)

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.error(key, "must be above 0")
        return value

    def path_value(self, key: str, default: Any = ...) -> Path | None:
        value = self.get(key, str, default)
        if value is None:
            return None
        return (self.path.parent / Path(value).expanduser()).resolve()

    def host_port(self, key: str, default: Any = ...) -> tuple[str, int]:
        value = self.get(key, str, default)
        host, sep, port = str(value).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise self.error(key, f"{value!r} is not HOST:PORT")
        return host.strip("[]"), int(port)

    def table(self, key: str, default: Any = ...) -> Table:
        value = self.get(key, dict, {} if default is ... else default)
        return Table(value, self.path, f"{self.prefix}{key}.")
