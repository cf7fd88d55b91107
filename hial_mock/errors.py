"""Configuration errors that name the file, the key and what is wrong (house rule 7)."""

from __future__ import annotations

from tomlconf import ConfigError

__all__ = ["ConfigError"]
