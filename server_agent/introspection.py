"""RFC 7662 introspection of the tokens the agent accepted, for revocation seen within seconds.

Answers are cached ``ttl`` seconds under the token's SHA-256 (no token kept as a key), at most
``MAX_ENTRIES`` of them, least recently used forgotten first. A failure to ask (no answer, an HTTP or
OAuth error, an answer without a boolean ``active``) is ``introspection_failed``, never a revocation,
and the caller denies (fail closed); it is not cached, so the next request asks again.

:func:`probe` (for ``check-config``) tells whether the provider can introspect the JWT access tokens
it issues at all: some cannot (panva's ``oidc-provider`` answers HTTP 400), and with ``introspect =
true`` every association would then fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from audit.events import Reason
from oauthclient import (
    AsyncOAuthClient,
    ClientCredentialsGrant,
    IntrospectionRequest,
    OAuthClient,
    OAuthClientError,
)

from .failures import AuthenticationFailed

MAX_ENTRIES = 10_000  # one per token in use: far above the associations one agent holds


class IntrospectionCache:
    def __init__(self, oauth: AsyncOAuthClient, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._oauth = oauth
        self._ttl = ttl
        self._clock = clock
        self._answers: OrderedDict[bytes, tuple[float, bool]] = OrderedDict()

    async def active(self, token: str) -> bool:
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._answers.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            self._answers.move_to_end(key)
            return cached[1]
        try:
            answer = await self._oauth.run(IntrospectionRequest(token=token))
        except OAuthClientError as error:
            raise AuthenticationFailed(Reason.INTROSPECTION_FAILED, f"introspection: {error}") from None
        self._answers[key] = (now, answer.active)
        self._answers.move_to_end(key)
        while len(self._answers) > MAX_ENTRIES:
            self._answers.popitem(last=False)
        return answer.active


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    ok: bool  # False: introspection cannot work with this provider, and check-config exits non-zero
    text: str  # what was found, for the operator


def probe(client: OAuthClient, scope: str) -> ProbeResult:
    """Can the provider introspect JWT access tokens (RFC 7662 section 2 for RFC 9068 tokens)?

    Two questions: (1) a JWT it never issued must be answered ``{"active": false}`` (section 2.2),
    not refused; (2) a JWT access token it issues to this client (client credentials with
    ``scope``) a moment ago must be answered ``active``. (2) is skipped, not failed, when the
    provider gives this client no JWT (the grant is refused, or the token is opaque).
    """
    try:
        unknown = client.run(IntrospectionRequest(token=_never_issued()))
    except OAuthClientError as error:
        return ProbeResult(ok=False, text=f"cannot introspect JWT access tokens: {error}")
    if unknown.active:
        return ProbeResult(ok=False, text="answers active for a JWT it never issued")
    try:
        own = client.run(ClientCredentialsGrant(scope=scope)).access_token
    except OAuthClientError as error:
        return ProbeResult(ok=True, text=f"answers a JWT it never issued as inactive; not tried with a token of "
                                         f"its own (client credentials: {error})")
    if own.count(".") != 2:
        return ProbeResult(ok=True, text="answers a JWT it never issued as inactive; its tokens for this client "
                                         "are opaque, so not tried with one")
    try:
        answer = client.run(IntrospectionRequest(token=own))
    except OAuthClientError as error:
        return ProbeResult(ok=False, text=f"cannot introspect the JWT access token it just issued: {error}")
    if not answer.active:
        return ProbeResult(ok=False, text="answers inactive for the JWT access token it just issued: it cannot "
                                          "introspect its JWT access tokens")
    return ProbeResult(ok=True, text="introspects its JWT access tokens")


def _never_issued() -> str:
    """A well-formed JWT no provider issued: random claims, a random 'signature'."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": "check-config"}).encode()
    claims = json.dumps({"jti": secrets.token_hex(16), "sub": "check-config", "exp": int(time.time()) + 60}).encode()
    return ".".join((part(header), part(claims), part(secrets.token_bytes(256))))
