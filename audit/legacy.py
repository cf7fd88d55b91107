"""Reasons as earlier versions of the server agent wrote them, and the codes they stand for.

Until the decision events of :mod:`audit.events`, a record's ``reason`` was whatever the code at the
call site wrote: some codes with spaces (``"node policy"``), some fixed sentences, and for an
authentication failure the exception's prose (``"token rejected: Signature verification failed"``).
Those logs are evidence and stay readable: :func:`audit.stored.from_record` maps each onto a
:class:`audit.events.Reason` and keeps the prose in ``detail``. Codes are plain strings here so that
this table needs nothing from the events module (a test checks each one is a ``Reason``).

Only what those versions wrote is listed (``server_agent/policy.py`` and ``server_agent/authn.py``
before 2026-12); nothing new is ever written in these spellings.
"""

from __future__ import annotations

import functools

ALIASES: dict[str, str] = {
    # a code with spaces, or a fixed sentence that says no more than its code
    "node policy": "node_policy",
    "authorized move outstanding": "move_outstanding",
    "not a configured PACS": "not_a_pacs",
    "no authorized C-MOVE outstanding for this destination": "no_move_outstanding",
}

PROSE: tuple[tuple[str, str], ...] = (
    # (how the sentence begins, its code): the sentence names what failed, so it goes into ``detail``
    ("decision log unavailable", "decision_log_unavailable"),
    ("called AE title ", "called_ae_unknown"),
    ("calling AE title ", "workstation_unproven"),
    ("no user identity", "identity_missing"),
    # server_agent/authn.py's AuthenticationFailed messages
    ("unknown signing key ", "token_rejected"),
    ("signing key ", "token_rejected"),
    ("not a JWT", "token_rejected"),
    ("algorithm ", "token_rejected"),
    ("token type ", "token_rejected"),
    ("token rejected", "token_rejected"),
    ("ID token and access token name different subjects", "token_rejected"),
    ("the token is not active", "token_inactive"),
    ("identity provider unreachable", "provider_unavailable"),
    ("discovery issuer ", "provider_unavailable"),
    ("JWKS unreachable", "provider_unavailable"),
    ("the provider returned no ID token", "provider_unavailable"),
    ("the provider has no introspection endpoint", "introspection_failed"),
    ("introspection unreachable", "introspection_failed"),
    ("identity type ", "identity_type_refused"),
    ("unknown identity type ", "identity_type_refused"),
    ("password grant refused", "password_refused"),
)


@functools.lru_cache(maxsize=4096)  # reasons repeat (a PDP's few codes on every record): bounded, as a log is hostile
def code_for(text: str) -> tuple[str, bool] | None:
    """``(code, is_prose)`` for a reason an earlier version wrote, or None if it is not one of them."""
    alias = ALIASES.get(text)
    if alias is not None:
        return alias, False
    for start, code in PROSE:
        if text.startswith(start):
            return code, True
    return None
