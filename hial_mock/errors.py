"""Configuration errors that name the file, the key and what is wrong (house rule 7)."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path = str(path)
        self.key = key
        self.problem = problem
