"""Associations bound to the user's OpenID Connect session, ended by OpenID Connect Back-Channel Logout 1.0.

With ``[sessions] logout_listen`` set, an association whose access token names a session (``sid``,
OIDC Back-Channel Logout 1.0 section 2.1; OIDC Core section 2 for the claim) lives while that session
lives, up to ``max_lifetime`` seconds, instead of ending when the access token expires: a reading
that lasts longer than the token is not interrupted while the user is logged in. The session's end
reaches this agent as a logout token (section 2.4) POSTed to the endpoint (:mod:`server_agent.logout`);
:meth:`Sessions.end` then aborts every association of that session at once and refuses every later
association and request made with a token of it.

A token without ``sid``, or an agent without the endpoint, keeps token lifetimes: the association's
requests are refused from the token's ``exp`` on, and revocation is seen by RFC 7662 introspection
(``[identity] introspect``), the fallback for providers without back-channel logout.

Bounded memory: ended sessions and ended subjects are remembered ``remember`` seconds (longer than any
access token the provider issues lives), at most ``max_ended`` of each; logout token ids (``jti``)
are remembered until their token expires, at most ``MAX_JTIS``, to refuse replays (section 2.6 step 10).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from .authn import Authenticator, Subject
from .config import IdentityConfig, SessionsSection
from .failures import AuthenticationFailed

log = logging.getLogger("server_agent.sessions")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"  # section 2.4
LOGOUT_TYPES = frozenset({"logout+jwt", "application/logout+jwt"})  # section 2.4: the explicit type
MAX_JTIS = 10_000


class LogoutRejected(Exception):
    """A logout token that fails a check of section 2.6: answered HTTP 400 ``invalid_request`` (section 2.8)."""

    status = 400


@dataclass(frozen=True, slots=True, kw_only=True)
class Logout:
    """What a verified logout token ends: the session ``sid``, or every session of ``sub``."""

    sid: str
    sub: str
    issued_at: float


def session_claims(subject: Subject) -> dict[str, Any]:
    """``sid`` and ``iat`` of the subject's token. The token was verified at association time (this same
    string, :meth:`Authenticator.verify_jwt`); here it is only read again."""
    if not subject.token:
        return {}
    try:
        claims: dict[str, Any] = jwt.decode(subject.token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


class LogoutVerifier:
    """OpenID Connect Back-Channel Logout 1.0 section 2.6: a logout token validated like an ID token."""

    def __init__(self, identity: IdentityConfig, authn: Authenticator, max_age: float,
                 audiences: tuple[str, ...] = (), clock: Callable[[], float] = time.time) -> None:
        self._identity = identity
        self._authn = authn
        self._max_age = max_age
        self._audiences = [identity.client_id, *audiences]
        self._clock = clock
        self._jtis: OrderedDict[str, float] = OrderedDict()  # jti -> until when a replay is possible

    async def verify(self, token: str) -> Logout:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise LogoutRejected(f"not a JWT: {error}") from None
        if header.get("alg") not in self._identity.algorithms:  # step 2 (never "none", never a shared secret)
            raise LogoutRejected(f"algorithm {str(header.get('alg'))[:20]!r} is not allowed")
        typ = str(header.get("typ", "logout+jwt")).lower()
        if typ not in LOGOUT_TYPES and typ != "jwt":  # RFC 8725 3.11: no access or ID token in its place
            raise LogoutRejected(f"token type {typ[:30]!r} is not a logout token")
        try:
            key = await self._authn.jwks.key(str(header.get("kid", "")), str(header["alg"]))
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=list(self._identity.algorithms), audience=self._audiences,
                issuer=self._identity.issuer, leeway=self._identity.leeway,
                options={"require": ["iat", "iss", "aud", "jti"]})  # exp: checked when present
        except AuthenticationFailed as error:
            raise LogoutRejected(error.detail) from None
        except jwt.PyJWTError as error:  # steps 3 and 4: signature, iss, aud, iat, exp
            raise LogoutRejected(f"logout token rejected: {error}") from None
        return self._checked(claims)

    def _checked(self, claims: dict[str, Any]) -> Logout:
        now = self._clock()
        issued = claims["iat"]
        if not isinstance(issued, int | float) or now - issued > self._max_age + self._identity.leeway:
            raise LogoutRejected("logout token too old (iat)")  # step 4: the iat window
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
            raise LogoutRejected("no back-channel logout event in the token")  # step 5
        sid, sub = claims.get("sid", ""), claims.get("sub", "")
        if not isinstance(sid, str) or not isinstance(sub, str) or not (sid or sub):
            raise LogoutRejected("the token names neither a session (sid) nor a subject (sub)")  # step 6
        if "nonce" in claims:
            raise LogoutRejected("a logout token carries no nonce")  # step 8
        jti = str(claims["jti"])[:256]
        while self._jtis and (len(self._jtis) >= MAX_JTIS or next(iter(self._jtis.values())) < now):
            self._jtis.popitem(last=False)
        if jti in self._jtis:
            raise LogoutRejected("logout token replayed (jti seen)")  # step 10
        self._jtis[jti] = max(float(claims.get("exp", 0)), issued + self._max_age) + self._identity.leeway
        return Logout(sid=sid[:256], sub=sub[:256], issued_at=float(issued))


@dataclass(eq=False, slots=True, kw_only=True)
class Binding:
    """One association's tie to its user's session: what ends it, and until when it may live."""

    owner: object  # the association's policy object (what the listener ends)
    sid: str
    sub: str
    token_expires_at: float  # the token's own bound (exp plus leeway)
    until: float  # its start plus max_lifetime
    ended: str = field(default="")  # why, once ended


class Sessions:
    """The associations of each live session, and the sessions and subjects that ended."""

    def __init__(self, config: SessionsSection, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.enabled = config.logout_listen is not None
        self._clock = clock
        self._by_sid: dict[str, set[Binding]] = {}
        self._by_sub: dict[str, set[Binding]] = {}
        self._ended_sids: OrderedDict[str, float] = OrderedDict()  # sid -> when forgotten
        self._ended_subs: OrderedDict[str, tuple[float, float]] = OrderedDict()  # sub -> (logout iat, forgotten)
        self.end_association: Callable[[object], bool] = lambda owner: False  # the listeners' hook

    def refusal(self, subject: Subject) -> str | None:
        """Why a new association with this subject's token is refused: its session already ended."""
        claims = session_claims(subject)
        self._forget_old()
        sid = claims.get("sid")
        if isinstance(sid, str) and sid in self._ended_sids:
            return "session ended (logout or revocation)"
        ended = self._ended_subs.get(subject.id)
        if ended is not None and float(claims.get("iat", 0)) <= ended[0]:
            return "sessions ended (logout or revocation)"
        return None

    def bind(self, owner: object, subject: Subject) -> tuple[Subject, Binding | None]:
        """The subject as the association keeps it, and its binding. With a session (``sid``) it lives
        until ``max_lifetime`` (the token's ``exp`` no longer ends it); a user token without one stays
        bound by its ``exp``, but a logout of its subject still ends it. Unbound without the endpoint."""
        if not self.enabled or subject.kind != "user" or not subject.token:
            return subject, None
        sid = session_claims(subject).get("sid")
        sid = sid if isinstance(sid, str) else ""
        until = self._clock() + self.config.max_lifetime if sid else subject.expires_at
        binding = Binding(owner=owner, sid=sid, sub=subject.id, token_expires_at=subject.expires_at, until=until)
        if sid:
            self._by_sid.setdefault(sid, set()).add(binding)
        self._by_sub.setdefault(subject.id, set()).add(binding)
        return dataclasses.replace(subject, expires_at=until), binding

    def release(self, binding: Binding | None) -> None:
        if binding is None:
            return
        for index, key in ((self._by_sid, binding.sid), (self._by_sub, binding.sub)):
            bound = index.get(key)
            if bound is not None:
                bound.discard(binding)
                if not bound:
                    del index[key]

    def check(self, binding: Binding | None) -> str | None:
        """Why the association may not act any more (its session ended, its maximum reached), or None."""
        if binding is None:
            return None
        if binding.ended:
            return binding.ended
        if binding.sid and self._clock() >= binding.until:  # without sid, the token's exp (checked as ever)
            return "association reached [sessions] max_lifetime"
        return None

    def end(self, logout: Logout) -> int:
        """Section 2.7: end the session (or every session of the subject); returns how many associations
        were ended. Later tokens of it are refused for ``remember`` seconds."""
        now = self._clock()
        forget_at = now + self.config.remember
        bindings: set[Binding] = set()
        if logout.sid:
            self._remember(self._ended_sids, logout.sid, forget_at)
            bindings |= self._by_sid.get(logout.sid, set())
        else:
            self._remember(self._ended_subs, logout.sub, (logout.issued_at, forget_at))
            bindings |= self._by_sub.get(logout.sub, set())
        for binding in bindings:
            binding.ended = "session ended (logout or revocation)"
            if not self.end_association(binding.owner):
                log.warning("session ended, but its association was no longer found on a listener")
        log.info("back-channel logout: session ended, %d association(s) ended", len(bindings))
        return len(bindings)

    def _remember(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        self._forget_old()
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.config.max_ended:  # full: the oldest end is forgotten first (logged)
            table.popitem(last=False)
            log.warning("ended-session table full ([sessions] max_ended): forgetting the oldest")

    def _forget_old(self) -> None:
        now = self._clock()
        while self._ended_sids and next(iter(self._ended_sids.values())) < now:
            self._ended_sids.popitem(last=False)
        while self._ended_subs and next(iter(self._ended_subs.values()))[1] < now:
            self._ended_subs.popitem(last=False)


__all__ = ["BACKCHANNEL_EVENT", "Binding", "Logout", "LogoutRejected", "LogoutVerifier", "Sessions", "session_claims"]
