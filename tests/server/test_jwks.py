"""Key rotation done right (issue 14 item 3): a new key under an old ``kid`` is fetched once and used,
a single key without ``kid`` verifies tokens without one, and a key withdrawn from the JWKS stops
verifying within ``jwks_max_age``; forged signatures cannot make the agent fetch the JWKS more than
once per ``jwks_min_refresh``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from audit.events import Reason
from server_agent.authn import AuthenticationFailed, Authenticator

from .test_authn import CONFIG, JWK, KEY, FakeProvider, jwt_identity, run, token


def public_jwk(key: ec.EllipticCurvePrivateKey, **members: Any) -> dict[str, Any]:
    jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), "use": "sig", **members}
    return {k: v for k, v in jwk.items() if v is not None}


def signed(key: ec.EllipticCurvePrivateKey, kid: str | None = "k1") -> str:
    now = int(time.time())
    claims = {"iss": CONFIG.issuer, "aud": CONFIG.audience, "sub": "rad", "client_id": "workstation-agent",
              "iat": now, "exp": now + 300}
    headers: dict[str, Any] = {"typ": "at+jwt"} | ({"kid": kid} if kid else {})
    return jwt.encode(claims, key, algorithm="ES256", headers=headers)


async def outcome(authn: Authenticator, value: str) -> str | Reason:
    try:
        return (await authn.authenticate(jwt_identity(value), [], "127.0.0.1")).username
    except AuthenticationFailed as error:
        return error.reason


MIN_REFRESH = 1.0  # jwks_min_refresh of these tests, seconds (ten forgeries take far less, even on a busy machine)
FAST = CONFIG.replace(jwks_min_refresh=MIN_REFRESH)


def test_a_new_key_under_a_known_kid_is_fetched_once_and_used() -> None:
    provider = FakeProvider()
    new = ec.generate_private_key(ec.SECP256R1())

    async def use(authn: Authenticator) -> list[str | Reason]:
        before = await outcome(authn, token())
        provider.keys = [public_jwk(new, kid="k1")]  # the provider re-keyed, keeping its kid
        await asyncio.sleep(MIN_REFRESH)
        return [before, await outcome(authn, signed(new)), await outcome(authn, signed(new))]

    assert run(provider, use, FAST) == ["rad", "rad", "rad"] and provider.jwks_requests == 2


def test_forged_signatures_under_a_known_kid_refresh_the_jwks_at_most_once_per_min_refresh() -> None:
    provider = FakeProvider()
    forger = ec.generate_private_key(ec.SECP256R1())

    async def use(authn: Authenticator) -> list[str | Reason]:
        first = await outcome(authn, token())
        await asyncio.sleep(MIN_REFRESH)
        return [first] + [await outcome(authn, signed(forger)) for _ in range(10)] + [await outcome(authn, token())]

    assert run(provider, use, FAST) == ["rad"] + [Reason.TOKEN_REJECTED] * 10 + ["rad"]
    assert provider.jwks_requests == 2  # the first lookup, and one refresh for all ten forgeries


def test_a_single_key_without_kid_verifies_tokens_without_kid() -> None:
    provider = FakeProvider()
    provider.keys = [public_jwk(KEY)]  # no "kid" member at all (RFC 7517 section 4.5: optional)
    assert run(provider, lambda authn: outcome(authn, signed(KEY, kid=None))) == "rad"


def test_a_token_without_kid_is_refused_when_the_jwks_holds_two_keys() -> None:
    provider = FakeProvider()
    provider.keys = [public_jwk(KEY), public_jwk(ec.generate_private_key(ec.SECP256R1()), kid="k2")]
    assert run(provider, lambda authn: outcome(authn, signed(KEY, kid=None))) == Reason.TOKEN_REJECTED


def test_a_key_whose_alg_is_another_is_not_used() -> None:
    provider = FakeProvider()
    provider.keys = [{**JWK, "alg": "ES384"}]
    assert run(provider, lambda authn: outcome(authn, token())) == Reason.TOKEN_REJECTED


BOUND = 0.5  # jwks_max_age of these tests, seconds


@pytest.mark.parametrize("withdrawn", ["removed", "endpoint down"])
def test_a_withdrawn_key_stops_verifying_within_jwks_max_age(withdrawn: str) -> None:
    provider = FakeProvider()
    other = public_jwk(ec.generate_private_key(ec.SECP256R1()), kid="k2")
    config = CONFIG.replace(jwks_min_refresh=0.1, jwks_max_age=BOUND)

    async def use(authn: Authenticator) -> list[str | Reason]:
        before = await outcome(authn, token())
        provider.keys = [other] if withdrawn == "removed" else None
        still = await outcome(authn, token())  # within the bound: the set fetched a moment ago
        await asyncio.sleep(BOUND + 0.05)
        return [before, still, await outcome(authn, token()), await outcome(authn, token())]

    expected = Reason.TOKEN_REJECTED if withdrawn == "removed" else Reason.PROVIDER_UNAVAILABLE
    assert run(provider, use, config) == ["rad", "rad", expected, expected]
