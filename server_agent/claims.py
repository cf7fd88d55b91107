"""Where a verified access token says who the user is and what they may do: ``[identity.claims]``.

Providers put the same facts in different places (RFC 9068 section 2.2 names ``scope``, ``roles``,
``groups`` and leaves the rest to them): Keycloak nests roles (``realm_access.roles``,
``resource_access.CLIENT.roles``), Microsoft Entra ID and Okta put scopes in ``scp`` (a string at
Entra, an array at Okta), IHE IUA (ITI-71) nests everything under ``extensions.ihe_iua`` as FHIR
Codings. Each fact is configured as a list of claim paths; docs/identity-providers.md has recipes.

A path is dotted, ``realm_access.roles``; a member whose name holds a dot (Auth0-style namespaced
claims, a client id like ``api://dicom.example``) is quoted: ``resource_access."dicom.example".roles``,
``"https://hospital.example/roles"``.

* ``username``, ``organization``, ``purpose_of_use``, ``client_id``: the first path present wins.
* ``roles`` and ``scopes``: every path adds (Keycloak realm roles and client roles together).

A value may be a string (scopes: space-separated, RFC 6749 section 3.3), an array of strings, or a
FHIR Coding (its ``code``; IUA ``subject_role``, ``purpose_of_use``) or an array of those. A present
value of another shape, or one beyond the bounds below, refuses the token (``token_rejected``): a
claim that is there but cannot be read is an error to see, not fewer roles granted quietly, and a
purpose of use that cannot be read must not quietly become ``TREAT``. An absent path reads as nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

from audit.events import Reason
from tomlconf.schema import AS_TUPLE, Schema

from .failures import AuthenticationFailed

MAX_VALUES = 256  # roles or scopes one token may carry (Entra ID stops listing groups at 200)
MAX_TEXT = 256  # characters of one name, role, scope, organization or purpose
MAX_DEPTH = 8  # members in one path
DEFAULT_PURPOSE = "TREAT"  # HL7 v3 ActReason: a token that states no purpose is for treatment
# One path segment: a bare name (no dot, no quote, no space) or a double-quoted one (no quote inside).
_SEGMENT = re.compile(r'(?:"([^"]+)"|([^".\s]+))(?:\.|$)')


def parse_path(text: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ``("a", "b.c", "d")``; ValueError names what is wrong."""
    parts: list[str] = []
    position = 0
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if match is None or (match.end() == len(text) and text.endswith(".")):
            raise ValueError(f"{text!r} is not a claim path (names joined by dots, a name with a dot in quotes)")
        parts.append(match.group(1) or match.group(2))
        position = match.end()
    if not parts or len(parts) > MAX_DEPTH:
        raise ValueError(f"{text!r}: a claim path has 1 to {MAX_DEPTH} names")
    return tuple(parts)


def _paths(value: tuple[str, ...]) -> tuple[str, ...]:
    for text in value:
        parse_path(text)
    return value


ClaimPaths = Annotated[tuple[str, ...], AS_TUPLE, AfterValidator(_paths)]


class ClaimMapping(Schema):
    """``[identity.claims]``: the claim paths of each fact; the defaults read RFC 9068 and the HIAL's tokens."""

    username: ClaimPaths = ("preferred_username",)  # none present: ``sub``
    roles: ClaimPaths = ("roles",)
    scopes: ClaimPaths = ("scope", "scp")
    organization: ClaimPaths = ("organization",)
    purpose_of_use: ClaimPaths = ("purpose_of_use",)
    # The OAuth client the token was issued to: tells a client's own token (no person behind it) from a
    # user's (authn.acting_client), and goes to the PDP. Okta says ``cid``, Entra ID ``azp``/``appid``.
    client_id: ClaimPaths = ("client_id", "azp")
    # Claims only a client's own token carries, for providers whose ``sub`` is then not the client id:
    # Keycloak's service-account tokens (``client_id``, older versions ``clientId``). Any present marks it.
    client_token: ClaimPaths = ()
    # Claims every person's token carries, for providers that mark only those: a token with none of them
    # is a client's own. Entra ID: ``scp`` (delegated scopes; an application's own token has none).
    user_token: ClaimPaths = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MappedClaims:
    username: str
    roles: tuple[str, ...]
    scopes: frozenset[str]
    organization: str
    purpose_of_use: str
    client_id: str
    client_token: bool  # a ``client_token`` claim present, or no ``user_token`` claim: no person behind it


def read_claims(claims: Mapping[str, Any], mapping: ClaimMapping) -> MappedClaims:
    """The facts ``mapping`` finds in verified ``claims``, or :class:`AuthenticationFailed` (token_rejected)."""
    roles: list[str] = []
    for path in mapping.roles:
        roles += _names(_at(claims, path), path, "roles", split=False)
    scopes: list[str] = []
    for path in mapping.scopes:
        scopes += _names(_at(claims, path), path, "scopes", split=True)
    for what, found in (("roles", roles), ("scopes", scopes)):
        if len(found) > MAX_VALUES:
            raise _refused(f"more than {MAX_VALUES} {what}", what)
    return MappedClaims(username=_first(claims, mapping.username, "username") or str(claims["sub"]),
                        roles=tuple(dict.fromkeys(roles)), scopes=frozenset(scopes),
                        organization=_first(claims, mapping.organization, "organization"),
                        purpose_of_use=_first(claims, mapping.purpose_of_use, "purpose_of_use") or DEFAULT_PURPOSE,
                        client_id=_first(claims, mapping.client_id, "client_id"),
                        client_token=_client_token(claims, mapping))


def _client_token(claims: Mapping[str, Any], mapping: ClaimMapping) -> bool:
    if any(_at(claims, path) is not None for path in mapping.client_token):
        return True
    return bool(mapping.user_token) and all(_at(claims, path) is None for path in mapping.user_token)


def _at(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for name in parse_path(path):
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _first(claims: Mapping[str, Any], paths: tuple[str, ...], key: str) -> str:
    """The one value of the first path present: a string, a Coding, or an array of exactly one of those
    (IUA examples wrap Codings in arrays; two organizations or purposes have no one reading)."""
    for path in paths:
        names = _names(_at(claims, path), path, key, split=False)
        if not names:
            continue
        if len(names) != 1:
            raise _refused(f"claim {path!r} holds {len(names)} values where one is expected", key)
        return names[0]
    return ""


def _names(value: Any, path: str, key: str, *, split: bool) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_VALUES:
        raise _refused(f"claim {path!r} holds more than {MAX_VALUES} values", key)
    names: list[str] = []
    for item in items:
        if isinstance(item, Mapping):  # a FHIR Coding: {"system": ..., "code": ...}
            item = item.get("code")
        if not isinstance(item, str):
            raise _refused(f"claim {path!r} is not a string, an array of strings or a Coding", key)
        if item.strip():  # an empty value says nothing (the HIAL's users without organization)
            names += item.split() if split else [item]
    if any(len(name) > MAX_TEXT for name in names):
        raise _refused(f"claim {path!r} holds a value longer than {MAX_TEXT} characters", key)
    return names


def _refused(text: str, key: str) -> AuthenticationFailed:
    return AuthenticationFailed(Reason.TOKEN_REJECTED, f"{text} ([identity.claims] {key})")


__all__ = ["ClaimMapping", "MappedClaims", "parse_path", "read_claims"]
