"""The typed authorization server with fake collaborators passed through its constructor (no HTTP server)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import jwt
from flask import Flask

from hial_mock.config import ClientConfig, ServerConfig, User
from hial_mock.forwarded import Source
from hial_mock.keys import Issuer, KeyStore
from hial_mock.login import Directory
from hial_mock.oauth.models import Authenticated, new_session
from hial_mock.oauth.server import OAuthServer
from hial_mock.passwords import hash_password
from hial_mock.state import CodeStore, DeviceStore, TokenStore

RAD = User(username="rad", password_hash="unused", roles=("radiologist",), organization="hospital-a")
SECRET = "s3cret"
HASH = hash_password(SECRET, n=2**4)
CLIENTS = {
    "server-agent": ClientConfig(client_id="server-agent", secret_hash=HASH, grant_types=("password",),
                                 scopes=("openid",), forwards_source=True),
    "other": ClientConfig(client_id="other", secret_hash=HASH, grant_types=("password", "refresh_token"),
                          scopes=("openid", "offline_access")),
}


@dataclass
class FakeUsers:
    """Everyone is rad; each login records which client and source it came through."""

    logins: list[tuple[str, str, Source]] = field(default_factory=list)

    def login(self, username: str, password: str, otp: str | None, *, client: ClientConfig, source: Source,
              how: str) -> Authenticated:
        self.logins.append((username, client.client_id, source))
        return Authenticated(user=RAD, amr=("pwd",), auth_time=1_800_000_000, session=new_session())

    def active(self, username: str) -> User | None:
        return RAD


def build() -> tuple[Flask, FakeUsers, TokenStore, Issuer]:
    app = Flask("test")
    settings = ServerConfig(issuer="https://hial.test")
    users, tokens = FakeUsers(), TokenStore()
    signer = Issuer("https://hial.test", KeyStore(None, keep_retired_for=600))
    server = OAuthServer(app, settings=settings, clients=Directory({}, CLIENTS), users=users, signer=signer,
                         tokens=tokens, codes=CodeStore(300), devices=DeviceStore())
    app.post("/token")(server.create_token_response)
    return app, users, tokens, signer


def post(app: Flask, client: str, forwarded: str | None = None) -> dict:
    headers = {"Forwarded": forwarded} if forwarded else {}
    response = app.test_client().post("/token", auth=(client, SECRET), headers=headers,
                                      environ_base={"REMOTE_ADDR": "192.0.2.1"},
                                      data={"grant_type": "password", "username": "rad", "password": "x",
                                            "scope": "openid offline_access"})
    return dict(response.get_json())


def test_the_source_is_the_named_address_only_for_a_trusted_forwarder() -> None:
    app, users, _, _ = build()
    post(app, "server-agent", 'for="203.0.113.7"')
    post(app, "other", 'for="203.0.113.7"')
    post(app, "server-agent")
    peer = ipaddress.ip_address("192.0.2.1")
    assert [source for _, _, source in users.logins] == [
        Source(address=ipaddress.ip_address("203.0.113.7"), peer=peer), Source(address=peer, peer=peer),
        Source(address=peer, peer=peer)]
    bad = post(app, "server-agent", 'for="203.0.113.7";for="203.0.113.8"')
    assert bad["error"] == "invalid_request" and len(users.logins) == 3


def test_issued_tokens_are_recorded_in_their_session() -> None:
    app, _, tokens, signer = build()
    token = post(app, "other")
    assert set(token) >= {"access_token", "refresh_token", "id_token"} and token["scope"] == "openid offline_access"
    claims = signer.read_access_token(token["access_token"])
    assert claims is not None and claims["sub"] == "rad" and claims["client_id"] == "other"
    assert jwt.get_unverified_header(token["access_token"])["kid"] == signer.signing_key().kid
    access = tokens.find(token["access_token"], None)
    refresh = tokens.find(token["refresh_token"], "refresh_token")
    assert access is not None and refresh is not None and access.session is refresh.session
    assert access.session.sid == claims["sid"]
    tokens.revoke(access)
    assert tokens.refresh(token["refresh_token"]) is None and tokens.active_access(token["access_token"]) is None
    assert signer.read_access_token(token["id_token"]) is None, "an ID token is not an access token"


def test_a_client_that_may_not_refresh_gets_no_refresh_token() -> None:
    app, _, _, _ = build()
    assert "refresh_token" not in post(app, "server-agent")
