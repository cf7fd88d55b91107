"""Logout tokens to the registered agents when a session ends (OpenID Connect Back-Channel Logout 1.0).

A client with ``backchannel_logout_uri`` in the clients file is told of every session that ends here,
whichever client the session's tokens were issued to: the agents are resource servers of every
clinician's session, not relying parties of one. A session ends on logout or revocation (RFC 7009, a
refresh token replayed, :mod:`hial_mock.state`); every session of a user ends when the account is
locked (disabled or removed from the users file, on reload). Failed logins do not end sessions: their
lockout is per (user, source) and per source, and letting anyone's wrong passwords log a clinician
out mid-reading would hand that lever to an attacker. Each token (section 2.4): ``iss``, ``aud`` = that
client, ``iat``, ``exp``, ``jti``, ``sub``, ``sid``, the ``events`` member, header ``typ`` logout+jwt,
signed with the current signing key; POSTed form-encoded (section 2.5) by one worker thread so that
the revocation request is not held up; a bounded queue, ``ATTEMPTS`` tries each with a short timeout,
and a failure logged (the agents fall back to the token's lifetime and introspection).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import httpx
from joserfc import jwt

from .config import ClientConfig
from .keys import ALGORITHM, Issuer

log = logging.getLogger("hial_mock.logout")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LIFETIME = 120  # seconds a logout token is valid
TIMEOUT = 2.0
ATTEMPTS = 3
MAX_QUEUED = 1000


class LogoutSender:
    """Signs and delivers the logout tokens of ended sessions."""

    def __init__(self, signer: Issuer, clients: Callable[[], Mapping[str, ClientConfig]]) -> None:
        self._signer = signer
        self._clients = clients
        self._queue: queue.Queue[tuple[str, str, str]] = queue.Queue(MAX_QUEUED)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def token(self, audience: str, sid: str | None, sub: str | None) -> str:
        """Section 2.4: ``sid`` for one session, ``sub`` alone for every session of that user."""
        now = int(time.time())
        claims = {"iss": self._signer.issuer, "aud": audience, "iat": now, "exp": now + LIFETIME,
                  "jti": secrets.token_urlsafe(16), "events": {BACKCHANNEL_EVENT: {}}}
        claims.update({k: v for k, v in (("sid", sid), ("sub", sub)) if v})
        key = self._signer.signing_key()
        return jwt.encode({"alg": ALGORITHM, "typ": "logout+jwt", "kid": key.kid}, claims, key)

    def user_locked(self, username: str) -> None:
        """An account disabled or removed (a reload): every session of that user ends (``sub`` only)."""
        self.session_ended(None, username)

    def session_ended(self, sid: str | None, sub: str | None) -> None:
        """Queue a logout token for each registered client (never blocks the request that ended it)."""
        for client in self._registered():
            try:
                self._queue.put_nowait((client.client_id, str(client.backchannel_logout_uri),
                                        self.token(client.client_id, sid, sub)))
            except queue.Full:
                log.error("back-channel logout queue full: %s not told of a session's end", client.client_id)
        self._start()

    def _registered(self) -> Iterable[ClientConfig]:
        return [c for c in self._clients().values() if c.backchannel_logout_uri]

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="backchannel-logout", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http:  # section 2.5: no redirects
            while True:
                client_id, uri, token = self._queue.get()
                self._deliver(http, client_id, uri, token)

    @staticmethod
    def _deliver(http: httpx.Client, client_id: str, uri: str, token: str) -> bool:
        for attempt in range(ATTEMPTS):
            try:
                answer = http.post(uri, data={"logout_token": token},
                                   headers={"Cache-Control": "no-store"})
            except httpx.HTTPError as error:
                problem = type(error).__name__
            else:
                if answer.status_code == 200:
                    log.info("back-channel logout delivered to %s", client_id)
                    return True
                problem = f"HTTP {answer.status_code}"
                if answer.status_code == 400:
                    break  # the agent refused the token: sending it again changes nothing
            time.sleep(0.2 * (attempt + 1))
        log.error("back-channel logout to %s failed (%s)", client_id, problem)
        return False


__all__ = ["BACKCHANNEL_EVENT", "LogoutSender"]
