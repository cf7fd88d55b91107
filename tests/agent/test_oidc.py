"""The wrapper's login on oauthclient: the device flow decided by RFC 8628 codes (a fake provider
whose descriptions say nothing a word-matcher could use), and the agent's refresh on its own loop
against the real HIAL."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from agent import cli
from agent.config import IdentityProvider
from agent.oidc import LoginError, MfaRequired, OidcClient, Tokens
from agent.service import Session
from devtools.hial import HialProcess

ISSUER = "https://idp.example.org"
DOCUMENT = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize", "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks", "device_authorization_endpoint": f"{ISSUER}/device",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"]}
PROVIDER = IdentityProvider(issuer=ISSUER, client_id="workstation-agent", scope="openid")


def _json(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, headers={"Content-Type": "application/json"},
                          stream=httpx.ByteStream(json.dumps(body).encode()))


class FakeProvider:
    """Answers each device-code poll with the next scripted token-endpoint answer."""

    def __init__(self, polls: list[tuple[int, dict[str, Any]]]) -> None:
        self.polls = polls
        self.seen: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return _json(200, DOCUMENT)
        if request.url.path == "/device":
            return _json(200, {"device_code": "dc-1", "user_code": "WDJB-MJHT", "expires_in": 120,
                               "verification_uri": f"{ISSUER}/device"})
        self.seen.append(request.read())
        return _json(*self.polls.pop(0))


def _device_login(provider: FakeProvider) -> tuple[Tokens | LoginError, list[float]]:
    slept: list[float] = []  # the fake clock is the time slept so far

    with OidcClient(PROVIDER, transport=httpx.MockTransport(provider), sleep=slept.append,
                    clock=lambda: sum(slept)) as client:
        start = client.device_start()
        try:
            return client.device_poll(start), slept
        except LoginError as error:
            return error, slept


def test_device_flow_follows_slow_down_and_pending_by_their_codes() -> None:
    provider = FakeProvider([(400, {"error": "slow_down", "error_description": "Too many requests."}),
                             (400, {"error": "authorization_pending", "error_description": "Waiting for you."}),
                             (200, {"access_token": "AT", "token_type": "Bearer", "expires_in": 60})])
    tokens, slept = _device_login(provider)
    assert isinstance(tokens, Tokens) and tokens.access_token == "AT" and tokens.username == "?"
    assert slept == [5.0, 10.0, 10.0]  # RFC 8628 3.5: slow_down adds 5 s to this and every later poll
    assert all(b"device_code=dc-1" in body and b"client_id=workstation-agent" in body for body in provider.seen)


@pytest.mark.parametrize("code", ["access_denied", "expired_token"])
def test_device_flow_ends_on_denial_or_expiry_with_the_code(code: str) -> None:
    # The description says "pending": a reader of words would keep polling; the code says stop.
    provider = FakeProvider([(400, {"error": "authorization_pending"}),
                             (400, {"error": code, "error_description": "authorization is not pending any more"})])
    error, slept = _device_login(provider)
    assert isinstance(error, LoginError) and error.code == code and slept == [5.0, 5.0]


def test_device_flow_stops_polling_when_the_code_expires_locally() -> None:
    provider = FakeProvider([(400, {"error": "slow_down"})] * 100)
    error, slept = _device_login(provider)
    assert isinstance(error, LoginError) and error.code == "expired_token"
    assert sum(slept) <= 120 and len(provider.seen) < 20


@pytest.fixture()
def short_hial(tmp_path: Path) -> Iterator[HialProcess]:
    server = HialProcess(tmp_path / "hial", server={"access_token_lifetime": 3}).start()
    yield server
    server.stop()


def test_the_agent_refreshes_on_its_loop_and_stops_when_the_session_is_revoked(short_hial: HialProcess) -> None:
    provider = IdentityProvider(issuer=short_hial.issuer, client_id="workstation-agent",
                                scope="openid offline_access user/ImagingStudy.rs")
    with OidcClient(provider) as client:
        with pytest.raises(MfaRequired) as mfa:
            client.password_login("mfarad", "demo-mfarad")
        assert mfa.value.code == "invalid_grant"
        first = client.password_login("rad", "demo-rad")
    session = Session(provider, first, None, margin=2.0)
    told: list[str] = []
    session.ended = told.append  # the agent sets it to tell every launch of this login (agent.notices)

    async def scenario() -> Tokens:
        refresher = asyncio.create_task(session.keep_fresh())
        deadline = time.monotonic() + 10
        while session.current().tokens is first and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        refreshed = session.current().tokens
        with OidcClient(provider) as other:  # logout elsewhere: the refresh token is revoked
            other.revoke(refreshed)
        await asyncio.wait_for(refresher, 10)  # invalid_grant ends the loop instead of retrying forever
        return refreshed

    refreshed = asyncio.run(scenario())
    assert refreshed.access_token != first.access_token and refreshed.username == "rad"
    assert len(told) == 1 and told[0].startswith("dicom-agent: your session ended at the identity provider (")
    assert told[0].endswith("): log in again (start the app again with dicom-agent launch)")


def _cli_login(client: OidcClient, monkeypatch: pytest.MonkeyPatch, user: str, reason: str) -> Tokens:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"demo-{user}\n"))
    args = cli.build_parser().parse_args(["login", "--user", user, "--password-stdin", "--break-glass", reason])
    return cli.login(client, args)[0]


def test_break_glass_login_gets_a_btg_token_for_a_role_allowed_to(short_hial: HialProcess,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    provider = IdentityProvider(issuer=short_hial.issuer, client_id="workstation-agent",
                                scope="openid offline_access user/ImagingStudy.rs")
    with OidcClient(provider) as client:
        tokens = _cli_login(client, monkeypatch, "erdoc", "trauma bay 2, patient unconscious")
        claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
        assert claims["purpose_of_use"] == "BTG" and claims["btg_reason"] == "trauma bay 2, patient unconscious"
        assert tokens.purpose_of_use == "BTG" and tokens.username == "erdoc" and tokens.refresh_token
        ordinary = client.refresh(tokens)  # break-glass lasts one access token: a refresh returns to TREAT
        assert "purpose_of_use" not in jwt.decode(ordinary.access_token, options={"verify_signature": False})
        with pytest.raises(LoginError, match="break-glass refused: none of your roles") as refused:
            _cli_login(client, monkeypatch, "rad", "curious")
        assert refused.value.code == "invalid_grant"


def test_break_glass_reason_is_checked_before_any_login() -> None:
    for reason in ("", "   ", "x" * 201):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["launch", "--break-glass", reason, "--", "true"])
    args = cli.build_parser().parse_args(["launch", "--break-glass", "stroke\n  code", "--", "true"])
    assert args.break_glass == "stroke code" and args.app == ["--", "true"]


def test_check_config_probe_names_a_provider_without_token_exchange(short_hial: HialProcess) -> None:
    with OidcClient(PROVIDER, transport=httpx.MockTransport(FakeProvider([]))) as client:
        problem = client.break_glass_problem()
    assert problem is not None and "does not list RFC 8693 token exchange" in problem
    with OidcClient(IdentityProvider(issuer=short_hial.issuer, client_id="workstation-agent")) as client:
        assert client.break_glass_problem() is None
