"""RFC 8693 token exchange at the HIAL: break-glass for roles allowed to, delegation with ``act``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from hial_mock.config import ClientConfig, ServerConfig, User
from hial_mock.forwarded import Source
from hial_mock.keys import Issuer, KeyStore
from hial_mock.login import Directory
from hial_mock.oauth.models import Authenticated, new_session
from hial_mock.oauth.rfc8693 import ACCESS_TOKEN_TYPE, GRANT_TOKEN_EXCHANGE
from hial_mock.oauth.server import OAuthServer
from hial_mock.passwords import hash_password
from hial_mock.state import CodeStore, DeviceStore, TokenStore

SECRET = "s3cret"
HASH = hash_password(SECRET, n=2**4)
EXCHANGE = ("password", "refresh_token", GRANT_TOKEN_EXCHANGE)
SCOPE = "openid user/ImagingStudy.rs"
CLIENTS = {
    "workstation": ClientConfig(client_id="workstation", grant_types=EXCHANGE, scopes=tuple(SCOPE.split()),
                                token_endpoint_auth_method="none"),
    "ai-node": ClientConfig(client_id="ai-node", secret_hash=HASH, grant_types=(GRANT_TOKEN_EXCHANGE,),
                            scopes=("user/ImagingStudy.rs",)),
    "other": ClientConfig(client_id="other", secret_hash=HASH, grant_types=("password",), scopes=("openid",)),
}
USERS = {"er": User(username="er", password_hash="-", roles=("emergency_physician",), organization="a"),
         "rad": User(username="rad", password_hash="-", roles=("radiologist",), organization="a")}


@dataclass
class FakeUsers:
    gone: set[str] = field(default_factory=set)

    def login(self, username: str, password: str, otp: str | None, *, client: ClientConfig, source: Source,
              how: str) -> Authenticated:
        return Authenticated(user=USERS[username], amr=("pwd",), auth_time=1_800_000_000, session=new_session())

    def active(self, username: str) -> User | None:
        return None if username in self.gone else USERS.get(username)


class Hial:
    def __init__(self) -> None:
        self.app = Flask("test")
        self.users, self.tokens = FakeUsers(), TokenStore()
        self.signer = Issuer("https://hial.test", KeyStore(None, keep_retired_for=600))
        server = OAuthServer(self.app, settings=ServerConfig(issuer="https://hial.test"),
                             clients=Directory({}, CLIENTS), users=self.users, signer=self.signer,
                             tokens=self.tokens, codes=CodeStore(300), devices=DeviceStore(),
                             break_glass_roles=lambda: frozenset({"emergency_physician"}))
        self.app.post("/token")(server.create_token_response)

    def post(self, client: str, form: dict[str, str]) -> dict[str, Any]:
        auth = None if client == "workstation" else (client, SECRET)
        data = {**form, "client_id": client} if auth is None else form
        response = self.app.test_client().post("/token", auth=auth, data=data,
                                               environ_base={"REMOTE_ADDR": "192.0.2.1"})
        return dict(response.get_json())

    def login(self, username: str) -> str:
        token = self.post("workstation", {"grant_type": "password", "username": username, "password": "x",
                                          "scope": SCOPE})
        return str(token["access_token"])

    def exchange(self, client: str, token: str, **extra: str) -> dict[str, Any]:
        return self.post(client, {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": token,
                                  "subject_token_type": ACCESS_TOKEN_TYPE, **extra})

    def claims(self, token: str) -> dict[str, Any]:
        claims = self.signer.read_access_token(token)
        assert claims is not None
        return claims


def test_break_glass_gives_a_btg_token_of_the_same_session_without_refresh_token() -> None:
    hial = Hial()
    original = hial.login("er")
    answer = hial.exchange("workstation", original, purpose_of_use="BTG", reason="unconscious patient,\n stroke")
    assert answer["issued_token_type"] == ACCESS_TOKEN_TYPE and "refresh_token" not in answer
    claims = hial.claims(answer["access_token"])
    assert claims["purpose_of_use"] == "BTG" and claims["btg_reason"] == "unconscious patient, stroke"
    assert claims["sub"] == "er" and claims["roles"] == ["emergency_physician"] and "act" not in claims
    assert claims["sid"] == hial.claims(original)["sid"] and answer["scope"] == SCOPE
    record = hial.tokens.find(original, None)
    assert record is not None
    hial.tokens.revoke(record)  # logging out the session ends the break-glass token with it
    assert hial.tokens.active_access(answer["access_token"]) is None


def test_break_glass_is_refused_to_roles_not_allowed_and_without_a_reason() -> None:
    hial = Hial()
    refused = hial.exchange("workstation", hial.login("rad"), purpose_of_use="BTG", reason="curious")
    assert refused["error"] == "invalid_grant" and "roles" in refused["error_description"]
    token = hial.login("er")
    for extra in ({"purpose_of_use": "BTG"}, {"purpose_of_use": "BTG", "reason": "x" * 201},
                  {"purpose_of_use": "BTG", "reason": "a\x00b"}, {"purpose_of_use": "RESEARCH", "reason": "r"}):
        assert hial.exchange("workstation", token, **extra)["error"] == "invalid_request", extra


def test_break_glass_only_through_the_client_the_user_logged_in_with() -> None:
    hial = Hial()
    answer = hial.exchange("ai-node", hial.login("er"), purpose_of_use="BTG", reason="emergency")
    assert answer["error"] == "invalid_grant" and "logged in with" in answer["error_description"]


def test_delegation_names_the_acting_client_and_keeps_the_user() -> None:
    hial = Hial()
    answer = hial.exchange("ai-node", hial.login("rad"))
    claims = hial.claims(answer["access_token"])
    assert claims["act"] == {"sub": "ai-node"} and claims["client_id"] == "ai-node"
    assert claims["sub"] == "rad" and claims["roles"] == ["radiologist"] and "purpose_of_use" not in claims
    assert answer["scope"] == "user/ImagingStudy.rs", "narrowed to what the acting client may have"


def test_exchanges_refused() -> None:
    hial = Hial()
    token = hial.login("rad")
    assert hial.exchange("workstation", token)["error"] == "unauthorized_client", "a public client cannot act"
    assert hial.exchange("other", token)["error"] == "unauthorized_client", "a client without the grant"
    assert hial.exchange("ai-node", "not.a.token")["error"] == "invalid_grant"
    assert hial.exchange("ai-node", token, actor_token=token, actor_token_type=ACCESS_TOKEN_TYPE)["error"] == \
        "invalid_request"
    assert hial.exchange("ai-node", token, requested_token_type="urn:ietf:params:oauth:token-type:id_token")[
        "error"] == "invalid_request"
    assert hial.exchange("ai-node", token, scope="user/ImagingStudy.c")["error"] == "invalid_scope"
    delegated = hial.exchange("ai-node", token)["access_token"]
    assert hial.exchange("ai-node", delegated)["error"] == "invalid_grant", "no chains"
    hial.users.gone.add("rad")
    assert hial.exchange("ai-node", token)["error"] == "invalid_grant", "a disabled user's token"


def test_a_revoked_subject_token_is_refused() -> None:
    hial = Hial()
    token = hial.login("er")
    record = hial.tokens.find(token, None)
    assert record is not None
    hial.tokens.revoke(record)
    assert hial.exchange("workstation", token, purpose_of_use="BTG", reason="r")["error"] == "invalid_grant"


def test_an_exchanged_token_never_outlives_the_subject_token() -> None:
    hial = Hial()
    token = hial.login("rad")
    record = hial.tokens.find(token, None)
    assert record is not None
    object.__setattr__(record, "expires_at", time.time() + 30)  # as if logged in 270 s ago
    answer = hial.exchange("ai-node", token)
    claims = hial.claims(answer["access_token"])
    assert claims["exp"] <= int(record.expires_at) and 28 <= answer["expires_in"] <= 30
