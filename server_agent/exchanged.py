"""What an RFC 8693 token exchange at the HIAL adds to an access token, as the server agent reads it.

* ``act`` (RFC 8693 section 4.1): the client acting for the user (an AI node for a radiologist);
  nested ``act`` members are earlier hops, the outermost one acts now.
* ``btg_reason`` with ``purpose_of_use`` ``BTG``: the clinician's words when breaking the glass.

Both are chosen by whoever obtained the token: kept printable, on one line and bounded, as every
peer-chosen value that reaches the decision log, the audit stream and the report.
"""

from __future__ import annotations

from typing import Any

MAX_CLIENT = 128  # characters of an acting client's id
MAX_REASON = 200  # characters of a break-glass reason (what the HIAL accepts)


def _line(value: str, limit: int) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())[:limit]


def exchanged(claims: dict[str, Any]) -> dict[str, str]:
    """The :class:`~server_agent.authn.Subject` fields of an exchanged token (none for another)."""
    out: dict[str, str] = {}
    act = claims.get("act")
    if isinstance(act, dict) and isinstance(act.get("sub"), str) and _line(act["sub"], MAX_CLIENT):
        out["acting_client"] = _line(act["sub"], MAX_CLIENT)
    reason = claims.get("btg_reason")
    if isinstance(reason, str):
        out["break_glass_reason"] = _line(reason, MAX_REASON)
    return out
