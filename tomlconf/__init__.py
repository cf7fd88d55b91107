"""Configuration read once at the edge (house rule 7): a TOML file validated by a declarative schema.

Each service declares its file as :class:`~tomlconf.schema.Schema` models (pydantic v2). :func:`load`
reads a file and validates it; every error names the file, the dotted key and what is wrong, and
unknown keys are errors too (a typo must not silently fall back to a default). :func:`dumps` writes a
model back as TOML (tests and devtools build configuration objects and write them with it, so that a
renamed key is an error where the object is built, not a silent default where it is read).
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .schema import PROBLEM, Schema

M = TypeVar("M", bound=BaseModel)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


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
    except OSError as error:
        raise ConfigError(path, "(file)", str(error)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "(syntax)", str(error)) from None


def load(path: Path, model: type[M], **context: Any) -> M:
    """``path`` read and validated as ``model``; relative paths in it are relative to its folder."""
    return validate(read(path), model, path, **context)


def validate(data: Mapping[str, Any], model: type[M], path: Path, **context: Any) -> M:
    """``data`` (read from ``path``) validated as ``model``, or the first problem as a ConfigError."""
    try:
        return model.model_validate(data, context={"base": path.parent, "path": path, **context})
    except ValidationError as error:
        raise config_error(path, error.errors(include_url=False), model) from None


def dumps(config: BaseModel | Mapping[str, Any]) -> str:
    """A configuration object as TOML text that :func:`load` reads back to an equal object (derived
    fields, unset optional values and defaults left out). A plain mapping is written as it is: for
    tests that need a file the schema refuses."""
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    return tomli_w.dumps(dict(config))


def write(path: Path, config: BaseModel | Mapping[str, Any]) -> Path:
    path.write_text(dumps(config))
    return path


def config_error(path: Path, errors: list[ErrorDetails], model: type[BaseModel]) -> ConfigError:
    """The first validation error, as the file, the dotted key and what is wrong."""
    error = errors[0]
    loc = list(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == PROBLEM:
        loc += list(ctx["key"])
    item = ""
    while loc and isinstance(loc[-1], int):  # an item of a list of values: the key is the list's
        item = f"item {loc.pop()}: "
    loc = [part for part in loc if not _is_wrapper(part)]
    return ConfigError(path, _dotted(loc) or "(file)", item + _message(error, model, loc))


def _is_wrapper(part: str | int) -> bool:
    # pydantic's names for the branch of a union or a validator function it tried ("function-after[...]")
    return isinstance(part, str) and ("[" in part and part.endswith("]")) and not part.startswith('"')


def _dotted(loc: list[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{text}" if out else text
    return out


KINDS = {"int_type": "an integer", "int_parsing": "an integer", "float_type": "a number",
         "bool_type": "true or false", "string_type": "a string", "dict_type": "a table", "model_type": "a table",
         "model_attributes_type": "a table", "tuple_type": "a list", "list_type": "a list", "frozen_set_type": "a list",
         "is_instance_of": "a path (a string)", "datetime_type": "a date-time", "datetime_parsing": "a date-time"}


def _message(error: ErrorDetails, model: type[BaseModel], loc: list[str | int]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        return f"unknown key (known: {', '.join(known)})" if known else "unknown key"
    if kind == "missing":
        return "is required"
    if kind in KINDS:
        return f"must be {KINDS[kind]}, not {_toml_type(value)}"
    if kind == "greater_than":
        bound = ctx["gt"]
        return f"must be above {int(bound) if float(bound).is_integer() else bound}"
    if kind in ("greater_than_equal", "less_than_equal", "less_than"):
        return str(error["msg"]).replace("Input should be", "must be")
    if kind == "literal_error":
        return f"{value!r} is none of {ctx['expected']}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _known_keys(model: type[BaseModel], loc: list[str | int]) -> list[str]:
    """The keys the table at ``loc`` may hold (for "unknown key" errors), or [] if it cannot be told."""
    current: Any = model
    for part in loc:
        current = _table_model(current, part)
        if current is None:
            return []
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    fields = current.model_fields.items()
    return sorted(info.alias or name for name, info in fields
                  if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("derived")))


def _table_model(current: Any, part: str | int) -> Any:
    if isinstance(current, type) and issubclass(current, BaseModel):
        for name, info in current.model_fields.items():
            if part in (name, info.alias):
                return _unwrap(info.annotation)
        return None
    origin = typing.get_origin(current)
    if origin in (dict, Mapping) or (origin is not None and getattr(origin, "__name__", "") == "Mapping"):
        return _unwrap(typing.get_args(current)[1])
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else annotation
            if len(options) != 1:
                return annotation
        else:
            return annotation


__all__ = ["ConfigError", "Schema", "config_error", "dumps", "load", "read", "validate", "write"]
