"""The HIAL's PDP trusting a foreign issuer's access tokens for listed callers (issue 14 item 1):
RFC 9068 section 4 checks, key rotation by JWKS refresh within its bound, and every failure a 401."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey

from hial_mock.app import Hial
from hial_mock.config import Files, HialConfig, ServerConfig, load_config
from hial_mock.foreign import ForeignIssuer, ForeignTokens
from tomlconf import ConfigError, write

DEMO = Path(__file__).parents[2] / "configs" / "demo"
FOREIGN = "https://idp.hospital.example"
PDP_AUDIENCE = "https://hial.example/pdp"
ISSUER = ForeignIssuer(name="hospital", issuer=FOREIGN, audience=PDP_AUDIENCE, clients=("gw1",))
ASK = {"subject": {"type": "user", "id": "rad"}, "action": {"name": "C-ECHO"},
       "resource": {"type": "service", "id": "*"}, "context": {"purpose_of_use": "TREAT"}}


class Provider:
    """The foreign provider's published keys, as a test changes them; counts JWKS fetches."""

    def __init__(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def __call__(self, issuer: ForeignIssuer) -> tuple[Mapping[str, Any], ...]:
        self.fetches += 1
        return tuple(k.as_dict(private=False) for k in self.keys)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(kid: str | None = "k1") -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid} if kid else None)


def _token(key: Key, *, header: Mapping[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": FOREIGN, "aud": PDP_AUDIENCE, "client_id": "gw1", "sub": "gw1", "scope": "authzen:evaluate",
            "iat": now, "exp": now + 300, "jti": "j1", **claims}
    head = {"alg": "ES256" if isinstance(key, ECKey) else "RS256", "typ": "at+jwt", **(header or {})}
    if key.kid and "kid" not in head:
        head["kid"] = key.kid
    present = {k: v for k, v in head.items() if v is not None}
    return jwt.encode(present, {k: v for k, v in body.items() if v is not None}, key, algorithms=[head["alg"]])


@pytest.fixture()
def hial(tmp_path: Path) -> Hial:
    for name in ("users.toml", "clients.toml", "policy.toml"):
        shutil.copy(DEMO / name, tmp_path / name)
    files = Files(users=tmp_path / "users.toml", clients=tmp_path / "clients.toml", policy=tmp_path / "policy.toml")
    path = write(tmp_path / "hial.toml", HialConfig(server=ServerConfig(port=0), files=files,
                                                    foreign={"hospital": ISSUER}))
    return Hial(load_config(path), issuer="http://127.0.0.1:8800")


def _ask(hial: Hial, token: str) -> tuple[int, Any]:
    response = hial.app.test_client().post("/access/v1/evaluation", json=ASK,
                                           headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.get_json()


def test_a_listed_client_of_a_trusted_issuer_gets_decisions(hial: Hial) -> None:
    key = _key()
    hial.foreign = ForeignTokens(hial.config.foreign, fetch=Provider(key))
    status, answer = _ask(hial, _token(key))
    assert status == 200 and answer["decision"] is True
    assert hial.config.foreign["hospital"].name == "hospital"


def test_without_foreign_trust_the_same_token_is_refused(hial: Hial) -> None:
    key = _key()
    hial.foreign = ForeignTokens({}, fetch=Provider(key))
    assert _ask(hial, _token(key))[0] == 401


@pytest.mark.parametrize(("header", "claims"), [
    ({}, {"client_id": "someone-else"}),  # the provider's other clients are not PDP callers
    ({}, {"client_id": None}),
    ({}, {"aud": "https://other-resource.example"}),
    ({}, {"iss": "https://idp.other.example"}),
    ({}, {"exp": int(time.time()) - 120}),
    ({}, {"scope": "openid profile"}),
    ({}, {"scope": None}),
    ({"typ": "JWT"}, {}),  # an ID token or another JWT is not an access token (RFC 9068 section 4)
    ({"typ": None}, {}),
    ({"kid": "unknown"}, {}),
])
def test_every_bad_token_is_a_401(hial: Hial, header: dict[str, Any], claims: dict[str, Any]) -> None:
    key = _key()
    hial.foreign = ForeignTokens(hial.config.foreign, fetch=Provider(key))
    assert _ask(hial, _token(key))[0] == 200  # the same key and client pass when nothing is wrong
    assert _ask(hial, _token(key, header=header, **claims))[0] == 401


def test_scp_as_a_list_and_an_ec_key_are_read(hial: Hial) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "ec1"})
    hial.foreign = ForeignTokens(hial.config.foreign, fetch=Provider(key))
    assert _ask(hial, _token(key, scope=None, scp=["authzen:evaluate"]))[0] == 200


def test_a_token_signed_by_another_key_under_the_same_kid_is_refused(hial: Hial) -> None:
    hial.foreign = ForeignTokens(hial.config.foreign, fetch=Provider(_key("k1")))
    assert _ask(hial, _token(_key("k1")))[0] == 401


def test_alg_confusion_and_none_are_refused(hial: Hial) -> None:
    key = _key()
    hial.foreign = ForeignTokens(hial.config.foreign, fetch=Provider(key))
    good = _token(key)
    head, body, _ = good.split(".")
    none_head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt", "kid": "k1"}).encode())
    assert _ask(hial, none_head.decode().rstrip("=") + "." + body + ".")[0] == 401
    assert _ask(hial, f"{head}.{body}.{'A' * 342}")[0] == 401


def test_rotation_new_kid_and_new_key_under_old_kid_within_the_bound() -> None:
    clock = Clock()
    old, provider = _key("k1"), Provider()
    provider.keys = [old]
    tokens = ForeignTokens({"hospital": ISSUER}, fetch=provider, clock=clock)
    assert tokens.caller(_token(old)) is not None and provider.fetches == 1
    new = _key("k2")
    provider.keys = [new]  # old withdrawn, new published
    assert tokens.caller(_token(new)) is None  # within jwks_min_refresh: no second fetch yet
    assert provider.fetches == 1
    clock.now += ISSUER.jwks_min_refresh
    assert tokens.caller(_token(new)) is not None and provider.fetches == 2
    assert tokens.caller(_token(old)) is None  # withdrawn from the set: refused
    replaced = _key("k2")  # a new key under the old kid: the signature fails, one refresh, retried
    provider.keys = [replaced]
    clock.now += ISSUER.jwks_min_refresh
    assert tokens.caller(_token(replaced)) is not None and provider.fetches == 3
    clock.now += ISSUER.jwks_min_refresh
    for _ in range(20):  # made-up kids cannot make the HIAL fetch more than once within the bound
        assert tokens.caller(_token(_key("made-up"))) is None
    assert provider.fetches == 4


def test_a_single_key_without_kid_is_usable_but_not_among_several() -> None:
    bare = _key(None)
    assert ForeignTokens({"h": ISSUER}, fetch=Provider(bare)).caller(_token(bare)) is not None
    assert ForeignTokens({"h": ISSUER}, fetch=Provider(bare, _key(None))).caller(_token(bare)) is None


@pytest.mark.parametrize(("entry", "key"), [
    ({"clients": []}, "foreign.hospital.clients"),
    ({"algorithms": ["HS256"]}, "foreign.hospital.algorithms"),
    ({"issuer": "http://idp.hospital.example"}, "foreign.hospital.issuer"),
    ({"audience": None}, "foreign.hospital.audience"),
])
def test_a_bad_foreign_table_names_its_key(tmp_path: Path, entry: dict[str, Any], key: str) -> None:
    for name in ("users.toml", "clients.toml", "policy.toml"):
        shutil.copy(DEMO / name, tmp_path / name)
    table = {"issuer": FOREIGN, "audience": PDP_AUDIENCE, "clients": ["gw1"], **entry}
    text = ('[files]\nusers = "users.toml"\nclients = "clients.toml"\npolicy = "policy.toml"\n'
            '[foreign.hospital]\n' + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items() if v is not None))
    (tmp_path / "hial.toml").write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "hial.toml")
    assert raised.value.key == key


def _toml(value: Any) -> str:
    return "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f'"{value}"'
