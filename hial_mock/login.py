"""Resource owners: who they are (the directory) and how they log in (password, one-time code, lockout).

One login serves the password grant (RFC 6749 section 4.3.2) and the sign-in forms of the
authorization endpoint (section 3.1) and of the RFC 8628 verification page (section 3.3). Passwords
are scrypt hashes (:mod:`hial_mock.passwords`); users flagged for MFA also give an RFC 6238 TOTP code,
each code good once. Failures are counted per user and source by :mod:`hial_mock.lockout`, never per
client. Every outcome is one audit line naming user, client, source and why; never the password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import pyotp
from authlib.oauth2.rfc6749.errors import InvalidGrantError

from .config import ClientConfig, User
from .forwarded import Source
from .lockout import Lockout, Refusal, Ticket
from .oauth.errors import LockedError, MfaRequiredError, utc
from .oauth.models import Authenticated, Client, new_session
from .passwords import DUMMY_HASH, verify_password

audit = logging.getLogger("hial_mock.auth")

OTP_REUSE_WINDOW = 120.0  # RFC 6238 5.2: a code is good for its step (30 s) and one either side
MAX_USED_OTPS = 100_000
_PLAIN_NAME = frozenset("abcdefghijklmnopqrstuvwxyz" "ABCDEFGHIJKLMNOPQRSTUVWXYZ" "0123456789" "._@+-")


class Directory:
    """The configured users and clients, replaced together on reload (SIGHUP)."""

    def __init__(self, users: Mapping[str, User], clients: Mapping[str, ClientConfig], *,
                 check_password: Callable[[str, str], bool] = verify_password) -> None:
        self._users, self._clients = users, clients
        self._check_password = check_password  # client secrets are scrypt hashes too

    def replace(self, users: Mapping[str, User], clients: Mapping[str, ClientConfig]) -> None:
        self._users, self._clients = users, clients

    def user(self, username: str) -> User | None:
        return self._users.get(username)

    def active(self, username: str) -> User | None:
        user = self._users.get(username)
        return None if user is None or user.disabled else user

    def client(self, client_id: str) -> Client | None:
        config = self._clients.get(client_id)
        return None if config is None else Client(config, self._check_password)


class Authenticator:
    """The ``Users`` collaborator of the OAuth server. ``check_password`` is a
    :class:`~hial_mock.passwords.Verifier` in service (bounded concurrency), a fake in tests."""

    def __init__(self, directory: Directory, lockout: Lockout, *,
                 check_password: Callable[[str, str], bool] = verify_password, dummy_hash: str = DUMMY_HASH,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.lockout = lockout
        self._check_password = check_password
        self._dummy_hash = dummy_hash
        self._sleep = sleep
        self._clock = clock
        self._used_otps: OrderedDict[str, float] = OrderedDict()
        self._otp_lock = threading.Lock()

    def active(self, username: str) -> User | None:
        return self.directory.active(username)

    def login(self, username: str, password: str, otp: str | None, *, client: ClientConfig, source: Source,
              how: str) -> Authenticated:
        """The user, or invalid_grant (wrong credentials, locked: with until when) or mfa_required."""
        context = f"user={shown(username)} client={client.client_id} source={source} via {how}"
        admitted = self.lockout.admit(username, source.address)
        if isinstance(admitted, Refusal):
            audit.warning("login refused %s: %s until %s", context, admitted.why, utc(admitted.until))
            raise LockedError(admitted.why, admitted.until)
        try:
            return self._check(admitted, username, password, otp, context)
        finally:
            self.lockout.abandoned(admitted)  # nothing if the attempt was concluded (failed or succeeded)

    def _check(self, ticket: Ticket, username: str, password: str, otp: str | None, context: str) -> Authenticated:
        if ticket.delay:
            self._sleep(ticket.delay)  # this user is being guessed at: slowed, never locked (lockout doc)
        user = self.directory.user(username)
        # An unknown user costs the same check as a known one: no user enumeration by timing.
        good = self._check_password(password, user.password_hash if user else self._dummy_hash)
        if not good or user is None or user.disabled:
            why = "unknown user" if user is None else "account disabled" if good else "wrong password"
            self._failed(ticket, context, why)
            raise InvalidGrantError("invalid username or password")
        amr = ["pwd"]
        if user.totp_secret:
            if not otp:
                audit.info("login needs a one-time password %s", context)
                raise MfaRequiredError("this user must also give a one-time password (otp)")
            if not pyotp.TOTP(user.totp_secret).verify(otp, valid_window=1) or not self._fresh_otp(username, otp):
                self._failed(ticket, context, "wrong one-time password")
                raise InvalidGrantError("invalid one-time password")
            amr += ["otp", "mfa"]
        self.lockout.succeeded(ticket)
        audit.info("login ok %s amr=%s", context, ",".join(amr))
        return Authenticated(user=user, amr=tuple(amr), auth_time=int(self._clock()), session=new_session())

    def _failed(self, ticket: Ticket, context: str, why: str) -> None:
        started = self.lockout.failed(ticket)
        locks = "; ".join(f"{lock.why} until {utc(lock.until)}" for lock in started)
        audit.warning("login failed %s: %s%s", context, why, f"; now locked: {locks}" if locks else "")

    def _fresh_otp(self, username: str, code: str) -> bool:
        """Refuse a TOTP code already used (RFC 6238 section 5.2: one use per time step)."""
        key = f"{username}\0{code}"
        now = self._clock()
        with self._otp_lock:
            used = self._used_otps
            while used and (next(iter(used.values())) < now - OTP_REUSE_WINDOW or len(used) > MAX_USED_OTPS):
                used.popitem(last=False)
            if key in used:
                return False
            used[key] = now
            return True


def shown(username: str) -> str:
    """A user name as the log may show it: the peer chose it, so no control characters, no field forgery."""
    if username and len(username) <= 64 and set(username) <= _PLAIN_NAME:
        return username
    return repr(username[:64]) + (f"...({len(username)} characters)" if len(username) > 64 else "")
