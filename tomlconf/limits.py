"""``[limits]`` of both agents: every bound of :class:`dicomwire.limits.RelayLimits`, configurable.

The schema is made from the dataclass itself, so each bound is defined once (its default and the reason
for it are in :mod:`dicomwire.limits`); every bound must be above 0. ``configs/demo/*.toml`` list them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, create_model

from dicomwire.limits import RelayLimits

from .schema import Schema


def _fields() -> dict[str, Any]:
    hints = typing.get_type_hints(RelayLimits)
    return {f.name: (Annotated[hints[f.name], Field(gt=0)], f.default) for f in dataclasses.fields(RelayLimits)}


if TYPE_CHECKING:
    class _Bounds(Schema):
        pass
else:
    _Bounds = create_model("_Bounds", __base__=Schema, **_fields())


class Limits(_Bounds):
    """The bounds of one agent's relays (every listener of that agent)."""

    def relay(self) -> RelayLimits:
        return RelayLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RelayLimits)})


__all__ = ["Limits"]
