"""Associations bound to OIDC sessions and OpenID Connect Back-Channel Logout 1.0 (issue 14 item 5):
logout tokens checked as section 2.6 says, the session's associations ended and its later tokens
refused, and the endpoint answering 200/400 as section 2.8 says, over a real loopback socket."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from argparse import Namespace
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.peers import free_port
from oauthclient.discovery import ProviderMetadata
from server_agent.authn import Subject
from server_agent.config import IdentityConfig, SessionsSection
from server_agent.jwks import SigningKey
from server_agent.logout import MAX_CONNECTIONS, LogoutEndpoint, check_endpoint
from server_agent.sessions import BACKCHANNEL_EVENT, Logout, LogoutRejected, LogoutVerifier, Sessions

ISSUER = "https://idp.example.org"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
IDENTITY = IdentityConfig(issuer=ISSUER, client_id="server-agent", algorithms=("ES256",), leeway=5.0,
                          client_secret="s3cret")
SECTION = SessionsSection(logout_listen=("127.0.0.1", 0), max_lifetime=3600, logout_max_age=120)


class FakeJwks:
    async def key(self, kid: str, alg: str) -> Any:
        if kid != "k1":
            raise LookupError(kid)
        return SigningKey(kid=kid, alg=alg, key=KEY.public_key(), published="")


class FakeAuthn:
    jwks = FakeJwks()


def logout_token(typ: str = "logout+jwt", key: Any = KEY, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "server-agent", "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex,
            "sub": "rad", "sid": "S1", "events": {BACKCHANNEL_EVENT: {}}, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="ES256",
                      headers={"kid": "k1", "typ": typ})


def access_subject(sid: str | None = "S1", exp: float | None = None, iat: int | None = None) -> Subject:
    now = int(time.time())
    claims = {"sub": "rad", "iat": iat or now, "exp": exp or now + 60, **({"sid": sid} if sid else {})}
    token = jwt.encode(claims, KEY, algorithm="ES256")
    return Subject(kind="user", id="rad", username="rad", expires_at=claims["exp"], token=token)


def verifier() -> LogoutVerifier:
    return LogoutVerifier(IDENTITY, FakeAuthn(), max_age=120)  # type: ignore[arg-type]


def test_a_valid_logout_token_names_its_session() -> None:
    logout = asyncio.run(verifier().verify(logout_token()))
    assert (logout.sid, logout.sub) == ("S1", "rad")


@pytest.mark.parametrize(("make", "why"), [  # made when the test runs: the tokens have an iat window
    (lambda: logout_token(aud="another-client"), "(?i)audience"),
    (lambda: logout_token(iss="https://evil.example"), "issuer"),
    (lambda: logout_token(key=OTHER), "(?i)signature"),
    (lambda: logout_token(events={"urn:other": {}}), "no back-channel logout event"),
    (lambda: logout_token(events={BACKCHANNEL_EVENT: "yes"}), "no back-channel logout event"),
    (lambda: logout_token(nonce="n"), "no nonce"),
    (lambda: logout_token(sid=None, sub=None), "neither a session"),
    (lambda: logout_token(typ="at+jwt"), "not a logout token"),
    (lambda: logout_token(iat=int(time.time()) - 3600, exp=int(time.time()) + 60), "too old"),
    (lambda: logout_token(jti=None), "jti"),
    (lambda: jwt.encode({"iss": ISSUER}, "s" * 32, algorithm="HS256"), "algorithm"),
    (lambda: "not a token", "not a JWT"),
])
def test_logout_tokens_that_fail_section_2_6_are_rejected(make: Callable[[], str], why: str) -> None:
    with pytest.raises(LogoutRejected, match=why):
        asyncio.run(verifier().verify(make()))


def test_a_logout_token_for_a_listed_audience_is_accepted() -> None:
    """Providers tell the session's relying parties: the workstation agent's client, not ours."""
    token = logout_token(aud="workstation-agent")
    with pytest.raises(LogoutRejected):
        asyncio.run(verifier().verify(token))
    listed = LogoutVerifier(IDENTITY, FakeAuthn(), max_age=120,  # type: ignore[arg-type]
                            audiences=("workstation-agent",))
    assert asyncio.run(listed.verify(token)).sid == "S1"


def test_a_replayed_logout_token_is_rejected() -> None:
    check, token = verifier(), logout_token()
    asyncio.run(check.verify(token))
    with pytest.raises(LogoutRejected, match="replayed"):
        asyncio.run(check.verify(token))


def test_a_bound_association_outlives_its_token_until_the_session_ends() -> None:
    now = [1000.0]
    sessions = Sessions(SECTION, clock=lambda: now[0])
    ended: list[object] = []
    sessions.end_association = lambda owner: ended.append(owner) is None
    owner = object()
    subject, binding = sessions.bind(owner, access_subject(exp=1060))
    assert binding is not None and subject.expires_at == 1000 + 3600  # not the token's exp
    now[0] = 2000.0
    assert sessions.check(binding) is None  # past the token, the session alive: not interrupted
    assert sessions.end(Logout(sid="S1", sub="rad", issued_at=now[0])) == 1
    assert ended == [owner]
    assert sessions.check(binding) == "session ended (logout or revocation)"
    assert sessions.refusal(access_subject()) is not None  # a new association with that session's token
    assert sessions.refusal(access_subject(sid="S2")) is None  # another login of the same user
    sessions.release(binding)
    assert sessions.end(Logout(sid="S1", sub="rad", issued_at=now[0])) == 0


def test_max_association_bounds_a_bound_association() -> None:
    now = [0.0]
    sessions = Sessions(SECTION, clock=lambda: now[0])
    _, binding = sessions.bind(object(), access_subject())
    now[0] = 3600.0
    assert sessions.check(binding) == "association reached [sessions] max_lifetime"


def test_a_logout_by_subject_ends_every_session_of_it_and_refuses_older_tokens() -> None:
    sessions = Sessions(SECTION)
    ended: list[object] = []
    sessions.end_association = lambda owner: ended.append(owner) is None
    first, second = object(), object()
    sessions.bind(first, access_subject(sid="S1"))
    sessions.bind(second, access_subject(sid="S2"))
    sessions.end(Logout(sid="", sub="rad", issued_at=time.time()))
    assert set(ended) == {first, second}
    assert sessions.refusal(access_subject(sid="S3", iat=int(time.time()) - 10)) is not None
    assert sessions.refusal(access_subject(sid="S3", iat=int(time.time()) + 10)) is None  # logged in again


def test_without_endpoint_or_sid_token_lifetimes_govern() -> None:
    now = [1000.0]
    sessions = Sessions(SECTION, clock=lambda: now[0])
    ended: list[object] = []
    sessions.end_association = lambda owner: ended.append(owner) is None
    subject, owner = access_subject(sid=None, exp=1060), object()
    kept, binding = sessions.bind(owner, subject)
    assert kept.expires_at == 1060 and binding is not None  # no session: the token's exp still ends it
    now[0] = 1100.0
    assert sessions.check(binding) is None  # its expiry is refused where it always was (authorization)
    sessions.end(Logout(sid="S1", sub="rad", issued_at=now[0]))
    assert ended == []  # another session's logout
    sessions.end(Logout(sid="", sub="rad", issued_at=now[0]))
    assert ended == [owner]  # but a logout of the user reaches it
    with_sid = access_subject()
    assert Sessions(SessionsSection()).bind(object(), with_sid) == (with_sid, None)


def test_ended_sessions_are_bounded() -> None:
    sessions = Sessions(SessionsSection(logout_listen=("127.0.0.1", 0), max_ended=2))
    for sid in ("A", "B", "C"):
        sessions.end(Logout(sid=sid, sub="rad", issued_at=time.time()))
    assert sessions.refusal(access_subject(sid="A")) is None  # the oldest forgotten
    assert sessions.refusal(access_subject(sid="C")) is not None


def test_the_endpoint_ends_the_session_and_answers_as_section_2_8_says() -> None:
    async def main() -> list[Any]:
        sessions = Sessions(SECTION)
        ended: list[object] = []
        sessions.end_association = lambda owner: ended.append(owner) is None
        owner = object()
        sessions.bind(owner, access_subject())
        endpoint = LogoutEndpoint(verifier(), sessions, "127.0.0.1", 0)
        await endpoint.start()
        host, port = endpoint.address
        url = f"http://{host}:{port}/backchannel-logout"
        try:
            async with httpx.AsyncClient() as client:
                bad = await client.post(url, data={"logout_token": logout_token(aud="x")})
                good = await client.post(url, data={"logout_token": logout_token()})
                got = await client.get(url)
                elsewhere = await client.post(url.replace("backchannel-logout", "x"), data={"a": "b"})
                huge = await client.post(url, data={"logout_token": "a" * 20000})
                json_body = await client.post(url, json={"logout_token": logout_token()})
        finally:
            await endpoint.stop()
        return [bad, good, got, elsewhere, huge, json_body, ended, owner]

    bad, good, got, elsewhere, huge, json_body, ended, owner = asyncio.run(main())
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
    assert good.status_code == 200 and good.headers["cache-control"] == "no-store"
    assert ended == [owner]
    assert (got.status_code, elsewhere.status_code, huge.status_code, json_body.status_code) == (405, 404, 413, 400)


def test_check_config_step_names_a_provider_without_back_channel_logout_and_a_busy_port() -> None:
    metadata = ProviderMetadata(issuer=ISSUER, token_endpoint=f"{ISSUER}/token", jwks_uri=f"{ISSUER}/jwks",
                                document={"backchannel_logout_supported": True,
                                          "backchannel_logout_session_supported": True})
    bare = ProviderMetadata(issuer=ISSUER, token_endpoint=f"{ISSUER}/token", jwks_uri=f"{ISSUER}/jwks")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        free = free_port()
        config = Namespace(sessions=SessionsSection(logout_listen=("127.0.0.1", free)))
        assert check_endpoint(config, metadata) is None  # type: ignore[arg-type]
        assert check_endpoint(Namespace(sessions=SessionsSection()), bare) is None  # type: ignore[arg-type]
        problem = check_endpoint(config, bare)  # type: ignore[arg-type]
        assert problem is not None and "does not advertise back-channel logout" in problem
        config = Namespace(sessions=SessionsSection(logout_listen=("127.0.0.1", taken)))
        problem = check_endpoint(config, metadata)  # type: ignore[arg-type]
        assert problem is not None and f"127.0.0.1:{taken} cannot be used" in problem


def test_connections_beyond_the_bound_are_closed_unanswered() -> None:
    async def main() -> tuple[bytes, int]:
        endpoint = LogoutEndpoint(verifier(), Sessions(SECTION), "127.0.0.1", 0)
        await endpoint.start()
        host, port = endpoint.address
        idle = [await asyncio.open_connection(host, port) for _ in range(MAX_CONNECTIONS)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection(host, port)
        extra = await asyncio.wait_for(reader.read(), 2.0)  # closed at once, not after TIMEOUT
        for _, w in [*idle, (reader, writer)]:
            w.close()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection(host, port)  # room again
        writer.write(b"GET /backchannel-logout HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 2.0)
        writer.close()
        await endpoint.stop()
        return extra, int(answer.split()[1])

    extra, status = asyncio.run(main())
    assert extra == b"" and status == 405
