"""The pieces every configuration schema is made of (pydantic v2 models), with the errors they raise.

A :class:`Schema` is frozen, keyword-only, refuses unknown keys and converts nothing silently (strict:
``"2762"`` is not a port, ``1`` is not ``true``; an integer is a number of seconds). Values that TOML
cannot say directly are annotated types: paths relative to the file that names them, ``HOST:PORT``,
AE titles (PS3.5 6.2), lists read as tuples. A check that spans keys raises :func:`problem` naming the
key, relative to the model that checks it, so that the error still names the file and the dotted key.

*Derived* fields (``derived()``) are what the code needs but no file says: the name of a ``[pacs.NAME]``
table, a default taken from another section. A file may not set them (they are unknown keys there);
code and tests may, and the model that owns them fills them in while it is validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from dicomwire.pdu import ae_title_problem

LOOPBACK = ("127.0.0.1", "::1", "localhost")
PROBLEM = "config_problem"  # the error type of problem(): its ctx names the key


def problem(key: str | tuple[str | int, ...], text: str) -> PydanticCustomError:
    """An error about ``key`` (relative to the model raising it: dotted, or a tuple of its parts when
    a part holds a dot, or is the index of an array item), to raise in a validator."""
    parts = tuple(key.split(".")) if isinstance(key, str) else key
    return PydanticCustomError(PROBLEM, "{text}", {"key": parts, "text": text})


def derived(default: Any = None, **kwargs: Any) -> Any:
    """A field no file may set (see the module docstring); not written back by :func:`tomlconf.dumps`."""
    if "default_factory" not in kwargs:
        kwargs["default"] = default
    return Field(exclude=True, json_schema_extra={"derived": True}, **kwargs)


def _is_derived(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("derived"))


class Schema(BaseModel):
    """The base of every configuration model (house rule 7: loaded once, frozen, passed down)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_by_alias=True,
                              validate_by_name=True, serialize_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _no_derived_keys(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, Mapping) and from_file(info):
            for name, field in cls.model_fields.items():
                if _is_derived(field) and (field.alias or name) in data:
                    raise problem(field.alias or name, "unknown key (it is not set in a file)")
        return data

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like the original (``dataclasses.replace`` for schemas)."""
        return self.model_validate({**dict(self), **changes})

    def _fill(self, **values: Any) -> Self:
        """Set derived fields while this model is validated (its own after-validator), frozen or not."""
        for name, value in values.items():
            object.__setattr__(self, name, value)
        return self


def from_file(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and "base" in info.context


def _base(info: ValidationInfo) -> Path:
    """The folder relative paths are read from: the configuration file's, or the working directory."""
    if from_file(info):
        return Path(info.context["base"])  # type: ignore[index]
    return Path.cwd()


def _path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, str) and value:
        value = Path(value)
    if not isinstance(value, Path):
        raise PydanticCustomError("path_type", "must be a path (a string)")
    return (_base(info) / value.expanduser()).resolve()


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise PydanticCustomError("file_missing", "file {path} not found", {"path": str(path)})
    return path


def _host_port(value: Any) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    if not isinstance(value, str):
        raise PydanticCustomError("host_port", "must be HOST:PORT (a string)")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise PydanticCustomError("host_port", "{value!r} is not HOST:PORT", {"value!r": repr(value)})
    return host.strip("[]"), int(port)


def _write_host_port(value: tuple[str, int]) -> str:
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listed(value: Any) -> Any:
    """TOML arrays are lists; the models hold tuples (frozen)."""
    return tuple(value) if isinstance(value, list) else value


def _as_set(value: Any) -> Any:
    return frozenset(value) if isinstance(value, list | tuple) else value


def _ae_title(value: str) -> str:
    problem_text = ae_title_problem(value.encode("ascii", "replace"))
    if problem_text:
        raise PydanticCustomError("ae_title", "{value!r} is not a valid AE title: {why}",
                                  {"value!r": repr(value), "why": problem_text})
    return value


def _issuer(value: str) -> str:
    # An issuer in clear text lets anyone on the path swap the provider's keys: https, or loopback.
    if not value.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise PydanticCustomError("issuer", "must be https (plain http only on loopback)")
    return value.rstrip("/")


# A path as written in the file, relative to that file; written back as a string.
RelPath = Annotated[Path, BeforeValidator(_path), PlainSerializer(str, return_type=str)]
# The same, for a file that must exist when the configuration is loaded (certificates, keys).
ExistingFile = Annotated[Path, BeforeValidator(_path), AfterValidator(_existing), PlainSerializer(str, return_type=str)]
HostPort = Annotated[tuple[str, int], BeforeValidator(_host_port), PlainSerializer(_write_host_port, return_type=str)]
AS_TUPLE = BeforeValidator(_listed)  # for tuple[X, ...] read from a TOML array: Annotated[tuple[X, ...], AS_TUPLE]
AS_FROZENSET = BeforeValidator(_as_set)  # the same for frozenset[X]
Strings = Annotated[tuple[str, ...], AS_TUPLE]
AeTitle = Annotated[str, AfterValidator(_ae_title)]
Issuer = Annotated[str, AfterValidator(_issuer)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


__all__ = ["AS_FROZENSET", "AS_TUPLE", "LOOPBACK", "PROBLEM", "AeTitle", "ExistingFile", "HostPort", "Issuer",
           "PositiveFloat", "PositiveInt", "RelPath", "Schema", "Strings", "derived", "from_file", "problem"]
