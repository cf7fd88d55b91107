"""``[pdp]`` independent of the identity provider (issue 14 item 1): the agent's PDP token from the
PDP's own authorization server with the PDP's own client, or from a token file; each misconfiguration
named by key; every failure to get a token is PdpUnavailable (the request is denied)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import certs
from oauthclient import AsyncExecutor, AsyncOAuthClient
from server_agent.config import PdpConfig, load
from server_agent.pdp import PdpClient, PdpUnavailable, TokenFile
from server_agent.service import identity_client, pdp_credentials
from tests.support.configs import merged
from tomlconf import ConfigError, write

PDP = "https://pdp.example.org"
IDP = "https://idp.example.org"
BASE = {
    "server": {"name": "GW1", "decision_log": "{root}/decisions.jsonl"},
    "tls": {"certificate": "{pki}/gw1.crt", "key": "{pki}/gw1.key", "ca": "{pki}/ca.crt"},
    "identity": {"issuer": IDP, "client_id": "server-agent", "client_secret": "idp-secret"},
    "pacs": {"ORTHANC": {"host": "127.0.0.1", "port": 4242}},
}
PERMIT = {"decision": True, "context": {"reason": "care_relationship"}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "gw1", ["127.0.0.1"])
    return folder


def _load(tmp_path: Path, pki: Path, pdp: dict[str, Any]) -> Any:
    return load(write(tmp_path / "server-agent.toml", merged(BASE, {"pdp": pdp}, pki=pki, root=tmp_path)))


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, stream=httpx.ByteStream(json.dumps(body).encode()))


class Servers:
    """The identity provider, the PDP's own authorization server and the PDP, on one fake transport."""

    def __init__(self) -> None:
        self.token_requests: list[tuple[str, str]] = []  # (host, Authorization)
        self.bearers: list[str] = []
        self.refuse_first = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"https://{request.url.host}"
        if request.url.path == "/.well-known/openid-configuration":
            return _json(200, {"issuer": base, "authorization_endpoint": f"{base}/authorize",
                               "token_endpoint": f"{base}/token", "jwks_uri": f"{base}/jwks",
                               "response_types_supported": ["code"], "subject_types_supported": ["public"],
                               "id_token_signing_alg_values_supported": ["RS256"]})
        if request.url.path == "/token":
            self.token_requests.append((request.url.host, request.headers.get("Authorization", "")))
            return _json(200, {"access_token": f"from-{request.url.host}", "token_type": "Bearer",
                               "expires_in": 300})
        if request.url.path == "/.well-known/authzen-configuration":
            return _json(200, {"policy_decision_point": PDP})
        self.bearers.append(request.headers["Authorization"])
        if self.refuse_first and len(self.bearers) == 1:
            return _json(401, {"error": "invalid_token"})
        return _json(200, PERMIT)


def _ask(servers: Servers, config: Any) -> Any:
    async def scenario() -> Any:
        async with AsyncExecutor(transport=httpx.MockTransport(servers)) as http:
            identity = AsyncOAuthClient(config.identity.issuer, identity_client(config.identity), http)
            pdp = PdpClient(config.pdp, pdp_credentials(config.pdp, identity, http), http)
            try:
                return await pdp.evaluate([{"n": 1}])
            except PdpUnavailable as error:
                return error

    return asyncio.run(scenario())


def test_the_pdp_token_comes_from_the_pdps_own_server_with_its_own_client(tmp_path: Path, pki: Path) -> None:
    (tmp_path / "pdp-secret").write_text("pdp-s3cret\n")
    config = _load(tmp_path, pki, {"url": PDP, "auth": "client_secret", "client_id": "gw1-at-pdp",
                                   "client_secret_file": str(tmp_path / "pdp-secret")})
    assert config.pdp.issuer == PDP and "pdp-s3cret" not in repr(config.pdp)
    servers = Servers()
    (decision,) = _ask(servers, config)
    assert decision.allowed and servers.bearers == ["Bearer from-pdp.example.org"]
    expected = "Basic " + base64.b64encode(b"gw1-at-pdp:pdp-s3cret").decode()
    assert servers.token_requests == [("pdp.example.org", expected)]  # never the identity provider


def test_by_default_the_identity_providers_client_asks_as_before(tmp_path: Path, pki: Path) -> None:
    config = _load(tmp_path, pki, {"url": PDP})
    servers = Servers()
    (decision,) = _ask(servers, config)
    assert decision.allowed and [host for host, _ in servers.token_requests] == ["idp.example.org"]


def test_a_token_file_is_sent_and_read_again_after_a_refusal(tmp_path: Path, pki: Path) -> None:
    token = tmp_path / "pdp.token"
    token.write_text("first.token\n")
    config = _load(tmp_path, pki, {"url": PDP, "auth": "token_file", "token_file": str(token)})
    servers = Servers()
    servers.refuse_first = True

    original = TokenFile.bearer

    async def renewed(self: TokenFile, timeouts: Any) -> tuple[str, float]:
        result = await original(self, timeouts)
        token.write_text("second.token")  # the sidecar renews it after the first reading
        return result

    TokenFile.bearer = renewed  # type: ignore[method-assign]
    try:
        (decision,) = _ask(servers, config)
    finally:
        TokenFile.bearer = original  # type: ignore[method-assign]
    assert decision.allowed and servers.bearers == ["Bearer first.token", "Bearer second.token"]
    assert servers.token_requests == []


@pytest.mark.parametrize("content", [b"", b"two\nlines", b"bad token", b"\xff\xfe", b"x" * 20000])
def test_a_token_file_without_one_token_denies_and_never_shows_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pdp.token"
    path.write_bytes(content)
    pdp = PdpConfig(url=PDP, auth="token_file", token_file=path)
    outcome = _ask(Servers(), type("C", (), {"pdp": pdp, "identity": _identity()})())
    assert isinstance(outcome, PdpUnavailable) and "pdp.token" in str(outcome)
    assert "two" not in str(outcome) and "bad" not in str(outcome)


def test_a_missing_token_file_denies(tmp_path: Path) -> None:
    pdp = PdpConfig(url=PDP, auth="token_file", token_file=tmp_path / "absent")
    outcome = _ask(Servers(), type("C", (), {"pdp": pdp, "identity": _identity()})())
    assert isinstance(outcome, PdpUnavailable) and "absent" in str(outcome)


def _identity() -> Any:
    from server_agent.config import IdentityConfig
    return IdentityConfig(issuer=IDP, client_id="server-agent", client_secret="s")


@pytest.mark.parametrize(("pdp", "key"), [
    ({"auth": "client_secret", "client_secret": "s"}, "pdp.client_id"),
    ({"auth": "client_secret", "client_id": "c"}, "pdp.client_secret"),
    ({"auth": "tls_client_auth", "client_id": "c"}, "pdp.certificate"),
    ({"auth": "tls_client_auth", "client_id": "c", "certificate": "{pki}/gw1.crt", "client_secret": "s"},
     "pdp.client_secret"),
    ({"auth": "token_file"}, "pdp.token_file"),
    ({"client_id": "c"}, "pdp.client_id"),  # auth = "identity": [identity]'s client, not this one
    ({"auth": "token_file", "token_file": "t", "issuer": "https://as.example.org"}, "pdp.issuer"),
    ({"auth": "client_secret", "client_id": "c", "client_secret": "s", "issuer": "http://as.example.org"},
     "pdp.issuer"),
    ({"certificate": "{pki}/gw1.crt"}, "pdp.certificate"),  # without its key
    ({"auth": "oauth"}, "pdp.auth"),
])
def test_a_bad_pdp_table_names_its_key(tmp_path: Path, pki: Path, pdp: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, pki, pdp)
    assert raised.value.key == key


def test_tls_client_auth_sends_the_client_id_and_presents_the_certificate(tmp_path: Path, pki: Path) -> None:
    config = _load(tmp_path, pki, {"url": PDP, "auth": "tls_client_auth", "client_id": "gw1",
                                   "certificate": "{pki}/gw1.crt", "key": "{pki}/gw1.key"})
    assert config.pdp.certificate == pki / "gw1.crt" and config.pdp.issuer == PDP
    servers = Servers()
    (decision,) = _ask(servers, config)
    assert decision.allowed and servers.token_requests == [("pdp.example.org", "")]  # no secret: RFC 8705


def test_the_agent_asks_the_pdp_with_its_certificate_on_a_client_of_its_own(tmp_path: Path, pki: Path) -> None:
    from server_agent.pdp import ClientCredentials
    from server_agent.service import ServerAgent

    shared = ServerAgent(_load(tmp_path, pki, {"url": PDP}))
    assert shared.pdp_http is shared.http  # the identity provider's client and CA, as before
    assert isinstance(shared.pdp.tokens, ClientCredentials) and shared.pdp.tokens.oauth is shared.oauth
    shared.decisions.close()
    own = ServerAgent(_load(tmp_path, pki, {"url": PDP, "auth": "tls_client_auth", "client_id": "gw1",
                                            "certificate": "{pki}/gw1.crt", "key": "{pki}/gw1.key"}))
    tokens = own.pdp.tokens
    assert own.pdp_http is not own.http and isinstance(tokens, ClientCredentials)
    assert tokens.oauth.issuer == PDP and tokens.oauth.client.method == "tls_client_auth"
    assert tokens.oauth.client.client_id == "gw1" and not tokens.oauth.client.secret
    asyncio.run(own.pdp_http.aclose())
    own.decisions.close()
