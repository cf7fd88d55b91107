"""check-config's introspection probe (issue 14 item 4): a provider that cannot introspect the JWT access
tokens it issues is reported (and check-config fails), against scripted providers and the real HIAL."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devtools.hial import HialProcess
from oauthclient import AuthMethod, ClientAuth, OAuthClient, SyncExecutor
from server_agent.introspection import ProbeResult, probe
from server_agent.pdp import PDP_SCOPE

from .test_authn import AGENT, DOCUMENT, ISSUER, token

ISSUED = token()  # the JWT access token the scripted provider issues to the agent's client
Answer = tuple[int, dict[str, Any]]


def scripted(introspect: Callable[[str], Answer], grant: Answer = (200, {"access_token": ISSUED,
                                                                          "token_type": "Bearer"}),
             document: dict[str, Any] = DOCUMENT) -> ProbeResult:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return _json((200, document))
        if request.url.path == "/introspect":
            return _json(introspect(dict(urllib.parse.parse_qsl(request.read().decode()))["token"]))
        return _json(grant)

    with SyncExecutor(transport=httpx.MockTransport(handle)) as http:
        return probe(OAuthClient(ISSUER, AGENT, http), PDP_SCOPE)


def _json(answer: Answer) -> httpx.Response:
    return httpx.Response(answer[0], headers={"Content-Type": "application/json"},
                          stream=httpx.ByteStream(json.dumps(answer[1]).encode()))


def test_a_provider_that_refuses_to_introspect_jwts_is_reported() -> None:  # panva's oidc-provider
    found = scripted(lambda value: (400, {"error": "invalid_request", "error_description": "JWT not supported"}))
    assert not found.ok and "cannot introspect JWT access tokens" in found.text and "invalid_request" in found.text


def test_a_provider_that_knows_only_opaque_tokens_is_reported() -> None:
    found = scripted(lambda value: (200, {"active": False}))
    assert not found.ok and "inactive for the JWT access token it just issued" in found.text


def test_a_provider_that_refuses_only_real_jwts_is_reported() -> None:
    found = scripted(lambda value: (400, {"error": "invalid_request"}) if value == ISSUED else (200, {"active": False}))
    assert not found.ok and "just issued" in found.text and "invalid_request" in found.text


def test_a_provider_that_introspects_its_jwts_passes() -> None:
    found = scripted(lambda value: (200, {"active": value == ISSUED}))
    assert found == ProbeResult(ok=True, text="introspects its JWT access tokens")


@pytest.mark.parametrize("answer", [(200, {"active": True}), (200, {"active": "false"})])
def test_a_provider_that_calls_a_forged_jwt_active_or_answers_nonsense_is_reported(answer: Answer) -> None:
    assert not scripted(lambda value: answer).ok


def test_without_an_introspection_endpoint_it_is_reported() -> None:
    document = {k: v for k, v in DOCUMENT.items() if k != "introspection_endpoint"}
    found = scripted(lambda value: (200, {"active": False}), document=document)
    assert not found.ok and "no introspection endpoint" in found.text


def test_without_a_token_of_its_own_the_second_question_is_skipped_not_failed() -> None:
    found = scripted(lambda value: (200, {"active": False}), grant=(400, {"error": "invalid_scope"}))
    assert found.ok and "not tried with a token of its own" in found.text and "invalid_scope" in found.text


def test_the_hial_introspects_its_jwt_access_tokens(tmp_path_factory: pytest.TempPathFactory) -> None:
    hial = HialProcess(tmp_path_factory.mktemp("hial")).start()
    try:
        client = ClientAuth(client_id="server-agent", method=AuthMethod.CLIENT_SECRET_BASIC,
                            secret="demo-server-agent-secret")
        with SyncExecutor() as http:
            found = probe(OAuthClient(hial.issuer, client, http), PDP_SCOPE)
    finally:
        hial.stop()
    assert found == ProbeResult(ok=True, text="introspects its JWT access tokens")
