"""The PDP client on the agent's loop: its own token fetched once for many questions and renewed once
on a 401, its metadata checked, and every failure a PdpUnavailable (the caller denies)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from oauthclient import AsyncExecutor, AsyncOAuthClient, AuthMethod, ClientAuth
from oauthclient.http import HttpResponse
from server_agent.config import PdpConfig
from server_agent.pdp import PdpClient, PdpUnavailable, parse_metadata

PDP = "https://pdp.example.org"
ISSUER = "https://idp.example.org"
DOCUMENT = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize", "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks", "response_types_supported": ["code"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"]}
PERMIT = {"decision": True, "context": {"reason": "care_relationship"}}


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, stream=httpx.ByteStream(json.dumps(body).encode()))


class Fake:
    def __init__(self, first_status: int = 200) -> None:
        self.tokens = 0
        self.bearers: list[str] = []
        self.first_status = first_status

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return _json(200, DOCUMENT)
        if request.url.path == "/token":
            self.tokens += 1
            await asyncio.sleep(0.05)
            return _json(200, {"access_token": f"pdp-{self.tokens}", "token_type": "Bearer", "expires_in": 300})
        if request.url.path == "/.well-known/authzen-configuration":
            return _json(200, {"policy_decision_point": PDP})
        self.bearers.append(request.headers["Authorization"])
        if self.first_status != 200 and len(self.bearers) == 1:
            return _json(self.first_status, {})
        body = json.loads(await request.aread())
        if "evaluations" in body:
            return _json(200, {"evaluations": [PERMIT] * len(body["evaluations"])})
        return _json(200, PERMIT)


def _run(fake: Fake, questions: list[list[dict[str, Any]]]) -> list[Any]:
    async def scenario() -> list[Any]:
        async with AsyncExecutor(transport=httpx.MockTransport(fake)) as http:
            client = ClientAuth(client_id="server-agent", method=AuthMethod.CLIENT_SECRET_BASIC, secret="s")
            pdp = PdpClient(PdpConfig(url=PDP, timeout=2, cache_seconds=0, cache_size=10),
                            AsyncOAuthClient(ISSUER, client, http), http)
            return list(await asyncio.gather(*(pdp.evaluate(q) for q in questions), return_exceptions=True))

    return asyncio.run(scenario())


def test_many_questions_at_once_share_one_token() -> None:
    fake = Fake()
    answers = _run(fake, [[{"n": n}] for n in range(10)] + [[{"a": 1}, {"b": 2}]])
    assert all(isinstance(a, list) and all(d.allowed for d in a) for a in answers)
    assert fake.tokens == 1 and set(fake.bearers) == {"Bearer pdp-1"}


def test_a_401_gets_one_new_token_then_an_answer() -> None:
    fake = Fake(first_status=401)
    (answer,) = _run(fake, [[{"n": 1}]])
    assert isinstance(answer, list) and answer[0].allowed
    assert fake.tokens == 2 and fake.bearers == ["Bearer pdp-1", "Bearer pdp-2"]


def test_an_error_answer_is_pdp_unavailable() -> None:
    (answer,) = _run(Fake(first_status=500), [[{"n": 1}]])
    assert isinstance(answer, PdpUnavailable) and "500" in str(answer)


@pytest.mark.parametrize("body", [{"policy_decision_point": "https://evil.example"},
                                  {"policy_decision_point": PDP, "access_evaluation_endpoint": "http://pdp.example.org/e"},
                                  {"policy_decision_point": PDP, "access_evaluations_endpoint": 7}])
def test_pdp_metadata_must_name_our_pdp_and_safe_endpoints(body: dict[str, Any]) -> None:
    with pytest.raises(PdpUnavailable):
        parse_metadata(PDP, HttpResponse(status=200, body=json.dumps(body).encode()))
