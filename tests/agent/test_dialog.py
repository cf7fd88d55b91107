"""The desktop sign-in's logic without a display (issue 17 item 3): what the dialog asks next and says,
lockout times as a person at the workstation reads them, and the device flow's browser. The dialog
itself, drawn and typed into, is tested under Xvfb in tests/e2e/test_desktop_login.py."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent import cli, device
from agent.config import IdentityProvider
from agent.dialog import Attempt, SignIn, local_times, sentence
from agent.oidc import LoginError, MfaRequired, OidcClient, Tokens

ISSUER = "https://idp.example.org"
DOCUMENT = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize", "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks", "device_authorization_endpoint": f"{ISSUER}/device_authorization",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"]}
TOKENS = Tokens(access_token="AT", refresh_token="RT", expires_at=time.time() + 300, username="mfarad")


class Provider:
    """The password grant of a user with a one-time code: mfa_required without one, refused with a wrong one."""

    def __init__(self) -> None:
        self.sent: list[Attempt] = []

    def __call__(self, attempt: Attempt) -> Tokens:
        self.sent.append(attempt)
        if attempt.password != "right":
            raise LoginError("invalid username or password", code="invalid_grant")
        if attempt.otp is None:
            raise MfaRequired("this user must also give a one-time password (otp)", code="invalid_grant")
        if attempt.otp != "123456":
            raise LoginError("invalid one-time password", code="invalid_grant")
        return TOKENS


def _try(state: SignIn, attempt: Attempt) -> str:
    """One submission as the dialog makes it: checked first, then sent; returns what the dialog says."""
    problem = state.problem(attempt)
    if problem:
        return problem
    outcome = state.submit(attempt)
    state.conclude(attempt, outcome)
    return outcome.error


def test_the_code_is_asked_for_after_the_password_and_a_wrong_one_is_said() -> None:
    provider = Provider()
    state = SignIn(provider)
    assert _try(state, Attempt(user="mfarad", password="wrong")) == "Invalid username or password."
    assert not state.otp_needed and state.result is None
    assert _try(state, Attempt(user=" mfarad ", password="right")) == ""  # no error: a question
    assert state.otp_needed and state.result is None
    assert _try(state, Attempt(user="mfarad", password="right", otp="")) == \
        "Enter the one-time code from your authenticator."
    assert _try(state, Attempt(user="mfarad", password="right", otp="000000")) == "Invalid one-time password."
    assert state.otp_needed  # still asked for after a wrong code
    assert _try(state, Attempt(user="mfarad", password="right", otp=" 123456 ")) == ""
    assert state.result == (TOKENS, "right")
    assert [(a.user, a.otp) for a in provider.sent] == [
        ("mfarad", None), ("mfarad", None), ("mfarad", "000000"), ("mfarad", "123456")]  # trimmed, and no empty code


@pytest.mark.parametrize(("attempt", "said"), [
    (Attempt(user=" ", password="x"), "Enter your user name."),
    (Attempt(user="rad", password=""), "Enter your password."),
    (Attempt(user="rad", password="x" * 1025), "Too long: at most 1024 characters."),
])
def test_nothing_is_sent_for_an_empty_or_oversized_field(attempt: Attempt, said: str) -> None:
    provider = Provider()
    assert _try(SignIn(provider), attempt) == said
    assert provider.sent == []


def test_the_attempt_never_shows_the_password() -> None:
    assert "secret" not in repr(Attempt(user="rad", password="secret", otp="123456"))
    assert "123456" not in repr(Attempt(user="rad", password="secret", otp="123456"))


@pytest.fixture()
def brussels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Brussels")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_lockout_time_is_shown_in_the_desktops_time_zone_with_how_long(brussels: None) -> None:
    now = dt.datetime(2026, 12, 1, 23, 35, tzinfo=dt.UTC).timestamp()  # 00:35 on 2 December in Brussels
    said = local_times("too many failed logins for this user from this address: locked until 2026-12-01T23:50:00Z",
                       now=now)
    assert said == "too many failed logins for this user from this address: locked until 00:50 (in 15 min)"
    assert local_times("locked until 2026-12-01T23:49:40Z", now=now + 0.4) == "locked until 00:50 (in 15 min)"
    assert local_times("locked until 2026-12-02T09:00:00Z", now=now) == "locked until 10:00 (in 9 hours)"
    assert local_times("locked until 2026-12-09T10:00:00Z", now=now) == "locked until 2026-12-09 11:00 (in 7 days)"
    assert local_times("locked until 2026-12-01T23:30:00Z", now=now) == "locked until 00:30 (now)"
    assert local_times("locked until 2026-12-01T23:35:20Z", now=now) == "locked until 00:36 (in 1 min)"
    assert local_times("locked until 2026-13-45T10:00:00Z", now=now) == "locked until 2026-13-45T10:00:00Z"
    assert sentence("invalid   username or password") == "Invalid username or password."
    assert sentence("see \u202egnp.exe") == "See ?gnp.exe."  # no right-to-left override from a hostile provider
    assert len(sentence("x" * 100_000)) < 310


def _json(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "application/json"},
                          stream=httpx.ByteStream(json.dumps(body).encode()))


def _device_provider(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/.well-known/openid-configuration":
        return _json(DOCUMENT)
    if request.url.path == "/device_authorization":
        return _json({"device_code": "dc-1", "user_code": "WDJB-MJHT", "expires_in": 120, "interval": 1,
                      "verification_uri": f"{ISSUER}/device",
                      "verification_uri_complete": f"{ISSUER}/device?user_code=WDJB-MJHT"})
    return _json({"access_token": "AT", "token_type": "Bearer", "expires_in": 60})


def _client() -> OidcClient:
    return OidcClient(IdentityProvider(issuer=ISSUER, client_id="workstation-agent", scope="openid"),
                      transport=httpx.MockTransport(_device_provider), sleep=lambda _s: None)


def test_the_device_flow_prints_and_opens_the_verification_uri() -> None:
    opened: list[str] = []
    out = io.StringIO()
    with _client() as client:
        tokens = device.device_login(client, browser=True, out=out, opener=lambda url: bool(opened.append(url)) or True)
    assert tokens.access_token == "AT"
    assert out.getvalue() == f"To sign in, open {ISSUER}/device?user_code=WDJB-MJHT and enter the code WDJB-MJHT\n"
    for _ in range(50):  # opened on its own thread: the poll does not wait for the browser
        if opened:
            break
        time.sleep(0.01)
    assert opened == [f"{ISSUER}/device?user_code=WDJB-MJHT"]


def test_the_device_flow_without_a_display_for_its_window_polls_all_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with _client() as client:
        tokens = device.device_login(client, browser=False, out=io.StringIO(), window=True)
    assert tokens.access_token == "AT"


@pytest.mark.parametrize(("environ", "can"), [
    ({}, False), ({"TERM": "xterm"}, False), ({"DISPLAY": ":0"}, True), ({"WAYLAND_DISPLAY": "wayland-0"}, True),
    ({"BROWSER": "/usr/bin/firefox"}, True), ({"DISPLAY": ""}, False),
])
def test_a_browser_is_opened_only_on_a_display_or_when_named(environ: dict[str, str], can: bool) -> None:
    assert device.can_open_browser(environ) is can


@pytest.mark.parametrize("stdin", [io.StringIO(""), None], ids=["not a terminal", "closed"])
def test_no_terminal_and_no_display_fall_back_to_the_device_flow(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 stdin: io.StringIO | None) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stdin", stdin)  # started from a desktop icon: /dev/null, or no fd 0 at all
    args = argparse.Namespace(device=False, password_stdin=False, user="rad", break_glass=None)
    with _client() as client:
        tokens, password = cli.login(client, args)
    assert tokens.access_token == "AT" and password is None
    err = capsys.readouterr().err
    assert "no terminal and no display" in err and "signing in with the device flow" in err
    assert "To sign in, open https://idp.example.org/device?user_code=WDJB-MJHT" in err
