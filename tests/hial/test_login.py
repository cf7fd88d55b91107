"""The login (password, TOTP, lockout, audit line) without HTTP: fakes through the constructor, a hand clock."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time

import pyotp
import pytest
from authlib.oauth2.rfc6749.errors import InvalidGrantError

from hial_mock.config import ClientConfig, LockoutConfig, User
from hial_mock.forwarded import Source
from hial_mock.lockout import Lockout
from hial_mock.login import Authenticator, Directory, shown
from hial_mock.oauth.errors import LockedError, MfaRequiredError
from hial_mock.passwords import Verifier

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
USERS = {name: User(username=name, password_hash=f"hash-of-{name}") for name in ("alice", "bob")}
USERS["mfa"] = User(username="mfa", password_hash="hash-of-mfa", totp_secret=SECRET)
SERVER_AGENT = ClientConfig(client_id="server-agent", secret_hash="x", grant_types=("password",), scopes=(),
                            forwards_source=True)
WORKSTATION = ClientConfig(client_id="workstation-agent", secret_hash=None, grant_types=("password",), scopes=(),
                           auth_method="none")
AGENT_HOST = ipaddress.ip_address("10.0.0.5")


def at(address: str, via: str | None = None) -> Source:
    peer = ipaddress.ip_address(via or address)
    return Source(address=ipaddress.ip_address(address), peer=peer)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def authenticator(clock: Clock, **lockout: float) -> Authenticator:
    config = LockoutConfig(**{"max_failures": 3, "source_max_failures": 10, "slow_after": 50,
                              **lockout})  # type: ignore[arg-type]
    return Authenticator(Directory(USERS, {}), Lockout(config, clock=clock),
                         check_password=lambda password, stored: stored == f"hash-of-{password}",
                         dummy_hash="hash-of-nobody-knows", sleep=clock.sleep, clock=clock)


def login(auth: Authenticator, user: str, password: str, source: Source, client: ClientConfig = SERVER_AGENT,
          otp: str | None = None) -> str:
    try:
        auth.login(user, password, otp, client=client, source=source, how="password grant")
    except InvalidGrantError as error:
        return str(error.description)
    return "ok"


def test_wrong_passwords_for_one_user_through_the_server_agent_stop_only_that_user_at_that_source() -> None:
    clock = Clock()
    auth = authenticator(clock)
    for _ in range(3):
        assert login(auth, "alice", "guess", at("203.0.113.66", via="10.0.0.5")) == "invalid username or password"
    assert login(auth, "alice", "alice", at("203.0.113.66", via="10.0.0.5")).startswith(
        "too many failed logins for this user from this address: locked until 2027-01-15T08:15:00Z")
    assert login(auth, "bob", "bob", at("203.0.113.66", via="10.0.0.5")) == "ok"
    assert login(auth, "bob", "bob", at("192.0.2.20", via="10.0.0.5")) == "ok"
    assert login(auth, "alice", "alice", at("192.0.2.10", via="10.0.0.5")) == "ok"


def test_the_public_workstation_client_is_never_locked_for_everyone() -> None:
    clock = Clock()
    auth = authenticator(clock)
    for i in range(30):
        login(auth, f"user{i % 3}", "guess", at(f"192.0.2.{i + 1}"), client=WORKSTATION)
    assert login(auth, "bob", "bob", at("192.0.2.200"), client=WORKSTATION) == "ok"


def test_a_thousand_fake_names_do_not_reset_a_locked_pair() -> None:
    clock = Clock()
    auth = authenticator(clock, max_entries=500)
    for _ in range(3):
        login(auth, "alice", "guess", at("203.0.113.66"))
    for i in range(1000):
        login(auth, f"fake-{i}", "guess", at(str(ipaddress.ip_address(0x0A000000 + i))))
    assert "locked until" in login(auth, "alice", "alice", at("203.0.113.66"))
    assert login(auth, "bob", "bob", at("198.51.100.1")).startswith("too many failed logins are being tracked"), \
        "a key that cannot be tracked is refused unchecked: fail closed"


def test_the_audit_line_names_user_client_source_and_why_never_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    auth = authenticator(clock)
    with caplog.at_level(logging.INFO, logger="hial_mock.auth"):
        for _ in range(4):
            login(auth, "alice", "Secret-Guess-1", at("203.0.113.66", via="10.0.0.5"))
        login(auth, "bob\nlogin ok user=admin", "bob", at("203.0.113.66", via="10.0.0.5"))
        login(auth, "bob", "bob", at("192.0.2.20"), client=WORKSTATION)
    lines = [record.getMessage() for record in caplog.records]
    source = "source=203.0.113.66 (forwarded by 10.0.0.5)"
    assert lines[0] == f"login failed user=alice client=server-agent {source} via password grant: wrong password"
    assert lines[2] == (f"login failed user=alice client=server-agent {source} via password grant: wrong password; "
                        "now locked: too many failed logins for this user from this address "
                        "until 2027-01-15T08:15:00Z")
    assert lines[3] == (f"login refused user=alice client=server-agent {source} via password grant: too many "
                        "failed logins for this user from this address until 2027-01-15T08:15:00Z")
    assert lines[4].startswith("login failed user='bob\\nlogin ok user=admin' client=server-agent")
    assert lines[5] == "login ok user=bob client=workstation-agent source=192.0.2.20 via password grant amr=pwd"
    assert "Secret-Guess" not in caplog.text


def test_a_one_time_code_is_needed_checked_and_good_once() -> None:
    clock = Clock()
    auth = authenticator(clock)
    source = at("192.0.2.10")
    with pytest.raises(MfaRequiredError):
        auth.login("mfa", "mfa", None, client=WORKSTATION, source=source, how="password grant")
    code = pyotp.TOTP(SECRET).now()
    user = auth.login("mfa", "mfa", code, client=WORKSTATION, source=source, how="password grant")
    assert user.amr == ("pwd", "otp", "mfa") and user.user.username == "mfa"
    assert login(auth, "mfa", "mfa", source, client=WORKSTATION, otp=code) == "invalid one-time password"


def test_code_guesses_lock_the_pair_even_between_correct_passwords() -> None:
    clock = Clock()
    auth = authenticator(clock)
    source = at("203.0.113.66")
    for _ in range(2):
        assert login(auth, "mfa", "mfa", source, otp="000000") == "invalid one-time password"
        with pytest.raises(MfaRequiredError):
            auth.login("mfa", "mfa", None, client=SERVER_AGENT, source=source, how="password grant")
    assert login(auth, "mfa", "mfa", source, otp="000001") == "invalid one-time password"
    with pytest.raises(LockedError):
        auth.login("mfa", "mfa", pyotp.TOTP(SECRET).now(), client=SERVER_AGENT, source=source, how="password grant")


def test_a_guessed_account_is_slowed_from_any_source_but_still_logs_in() -> None:
    clock = Clock()
    auth = authenticator(clock, slow_after=2, slow_delay=0.5, max_delay=3.0)
    for i in range(12):
        login(auth, "alice", "guess", at(f"198.51.100.{i + 1}"))
    assert clock.slept == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert login(auth, "alice", "alice", at("192.0.2.10")) == "ok"
    assert clock.slept[-1] == 3.0


def test_user_names_are_shown_safely() -> None:
    assert shown("rad") == "rad"
    assert shown("a b") == "'a b'"
    assert shown("x" * 100) == repr("x" * 64) + "...(100 characters)"


def test_password_checks_run_at_most_a_few_at_once() -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def slow_check(password: str, stored: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return False

    verify = Verifier(2, check=slow_check)
    threads = [threading.Thread(target=verify, args=("x", "y")) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 2
