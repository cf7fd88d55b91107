"""RFC 7662 introspection of the tokens the agent accepted, for revocation seen within seconds.

Answers are cached ``ttl`` seconds under the token's SHA-256 (no token kept as a key), at most
``MAX_ENTRIES`` of them, least recently used forgotten first. A failure to ask is
``introspection_failed`` and the caller denies (fail closed).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from audit.events import Reason
from oauthclient import AsyncOAuthClient, IntrospectionRequest, OAuthClientError

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
