"""The server agent's identity check: strict by default (RFC 9068 typ, no client acting for itself as a
user, one leeway at both times), reason codes on every refusal, and type-2 logins throttled per
source, against a fake provider (keys and tokens made here) and against the real HIAL."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from audit.events import Reason
from devtools.hial import HialProcess
from dicomwire.identity import UserIdentity, UserIdentityType
from oauthclient import AsyncExecutor, AsyncOAuthClient, AuthMethod, ClientAuth
from server_agent.authn import AuthenticationFailed, Authenticator, Subject
from server_agent.config import IdentityConfig, ThrottleConfig

T = TypeVar("T")
ISSUER = "https://idp.example.org"
KEY = ec.generate_private_key(ec.SECP256R1())
JWK = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "use": "sig"}
DOCUMENT = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize", "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks", "introspection_endpoint": f"{ISSUER}/introspect",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
CONFIG = IdentityConfig(issuer=ISSUER, audience="dicom-server-agent", algorithms=("ES256",),
                        token_types=("at+jwt", "application/at+jwt"), client_id="server-agent",
                        client_secret="s3cret", introspect=False, introspect_cache=10.0, username_only=False,
                        username_only_workstations=(), jwks_min_refresh=10.0, timeout=5.0, ca_file=None,
                        leeway=30.0, throttle=ThrottleConfig(max_failures=3, window=60, block_seconds=300,
                                                             max_sources=100))
AGENT = ClientAuth(client_id="server-agent", method=AuthMethod.CLIENT_SECRET_BASIC, secret="s3cret")


def token(typ: str = "at+jwt", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "dicom-server-agent", "sub": "rad", "preferred_username": "rad",
            "client_id": "workstation-agent", "iat": now, "exp": now + 300, "scope": "user/ImagingStudy.rs",
            "roles": ["radiologist"], **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, KEY, algorithm="ES256",
                      headers={"kid": "k1", "typ": typ})


def jwt_identity(value: str) -> UserIdentity:
    return UserIdentity(type=UserIdentityType.JWT, primary=value.encode())


class FakeProvider:
    """Discovery, JWKS, introspection and a scripted token endpoint; records what it was asked."""

    def __init__(self, *, token_answer: Callable[[dict[str, str]], tuple[int, dict[str, Any]]] | None = None,
                 active: bool | str = True, delay: float = 0.0,
                 introspection: tuple[int, dict[str, Any]] | None = None) -> None:
        self.token_answer = token_answer or (lambda form: (400, {"error": "invalid_grant"}))
        self.active = active
        self.delay = delay
        self.introspection = introspection  # an answer other than {"active": ...}
        self.token_requests: list[httpx.Request] = []
        self.jwks_requests = 0
        self.keys: list[dict[str, Any]] | None = [JWK]  # the published JWKS; None: the endpoint fails

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return _json(200, DOCUMENT)
        if path == "/jwks":
            self.jwks_requests += 1
            return _json(200, {"keys": self.keys}) if self.keys is not None else _json(503, {})
        if path == "/introspect":
            return _json(*(self.introspection or (200, {"active": self.active})))
        self.token_requests.append(request)
        await asyncio.sleep(self.delay)
        form = dict(urllib.parse.parse_qsl((await request.aread()).decode()))
        return _json(*self.token_answer(form))


def _json(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, headers={"Content-Type": "application/json"},
                          stream=httpx.ByteStream(json.dumps(body).encode()))


def run(provider: FakeProvider, use: Callable[[Authenticator], Awaitable[T]], config: IdentityConfig = CONFIG,
        clock: Callable[[], float] = time.time) -> T:
    async def scenario() -> T:
        async with AsyncExecutor(transport=httpx.MockTransport(provider)) as http:
            return await use(Authenticator(config, AsyncOAuthClient(ISSUER, AGENT, http), clock=clock))

    return asyncio.run(scenario())


def refusal(provider: FakeProvider, identity: UserIdentity, config: IdentityConfig = CONFIG,
            source: str = "192.0.2.1") -> AuthenticationFailed:
    async def use(authn: Authenticator) -> AuthenticationFailed:
        with pytest.raises(AuthenticationFailed) as raised:
            await authn.authenticate(identity, [], source)
        return raised.value

    return run(provider, use, config)


def accepted(identity: UserIdentity, config: IdentityConfig = CONFIG) -> Subject:
    return run(FakeProvider(), lambda authn: authn.authenticate(identity, [], "127.0.0.1"), config)


# ---- RFC 9068 typ ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_access_token_types_are_accepted(typ: str) -> None:
    assert accepted(jwt_identity(token(typ))).username == "rad"


@pytest.mark.parametrize("typ", ["JWT", "IUA-JWT", ""])
def test_other_token_types_are_refused_by_default(typ: str) -> None:
    error = refusal(FakeProvider(), jwt_identity(token(typ)))
    assert error.reason == Reason.TOKEN_REJECTED and "RFC 9068" in error.detail


def test_other_token_types_only_when_configured() -> None:
    config = CONFIG.replace(token_types=("at+jwt", "JWT"))
    assert accepted(jwt_identity(token("JWT")), config).username == "rad"


# ---- a client acting for itself is not a user --------------------------------------------------------------

@pytest.mark.parametrize("claims", [
    {"sub": "test-confidential", "client_id": "test-confidential", "preferred_username": None, "roles": None},
    {"sub": "test-confidential", "client_id": "test-confidential"},  # user claims do not make it a person
    {"sub": "svc-4711", "azp": "test-confidential", "client_id": None, "gty": "client-credentials"},
    {"sub": "test-confidential@clients", "client_id": "test-confidential"},
    {"sub": "0f1e", "client_id": "test-confidential", "idtyp": "app"},
])
def test_a_client_credentials_token_is_not_a_user(claims: dict[str, Any]) -> None:
    error = refusal(FakeProvider(), jwt_identity(token(**claims)))
    assert error.reason == Reason.NOT_A_USER and "test-confidential" in error.detail


def test_a_client_configured_as_a_node_is_that_node() -> None:
    config = CONFIG.replace(node_clients={"ct01-client": "CT01"})
    subject = accepted(jwt_identity(token(sub="ct01-client", client_id="ct01-client", preferred_username=None,
                                          roles=None)), config)
    assert (subject.kind, subject.id, subject.username, subject.client_id) == ("node", "CT01", "CT01", "ct01-client")


# ---- one leeway -------------------------------------------------------------------------------------------

def test_the_same_leeway_at_association_time_and_per_request() -> None:
    now = time.time()
    late = token(exp=int(now) - 10, iat=int(now) - 300)  # expired 10 s ago; leeway 30 s

    async def use(authn: Authenticator) -> tuple[Subject, str | None]:
        subject = await authn.authenticate(jwt_identity(late), [], "127.0.0.1")
        return subject, await authn.still_valid(subject)

    subject, why = run(FakeProvider(), use)
    assert why is None, "accepted at association time, so still valid for its next request"
    assert subject.expires_at == int(now) - 10 + 30

    def after() -> float:
        return subject.expires_at + 0.001

    why = run(FakeProvider(), lambda authn: authn.still_valid(subject), clock=after)
    assert why is not None and (why.reason, why.text) == (Reason.TOKEN_INVALID, "the token has expired")
    error = refusal(FakeProvider(), jwt_identity(token(exp=int(now) - 40, iat=int(now) - 300)))
    assert error.reason == Reason.TOKEN_REJECTED and "expired" in error.detail


# ---- reason codes --------------------------------------------------------------------------------------------

def test_each_refusal_carries_its_reason() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode({"sub": "rad"}, other, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})
    introspecting = CONFIG.replace(introspect=True)
    cases = [
        (FakeProvider(), jwt_identity(forged), CONFIG, Reason.TOKEN_REJECTED),
        (FakeProvider(), jwt_identity("not-a-jwt"), CONFIG, Reason.TOKEN_REJECTED),
        (FakeProvider(), jwt_identity(token(aud="someone-else")), CONFIG, Reason.TOKEN_REJECTED),
        (FakeProvider(active=False), jwt_identity(token()), introspecting, Reason.TOKEN_INACTIVE),
        (FakeProvider(active="true"), jwt_identity(token()), introspecting, Reason.INTROSPECTION_FAILED),
        (FakeProvider(), UserIdentity(type=UserIdentityType.KERBEROS, primary=b"t"), CONFIG,
         Reason.IDENTITY_TYPE_REFUSED),
        (FakeProvider(), UserIdentity(type=UserIdentityType.USERNAME, primary=b"rad"), CONFIG,
         Reason.IDENTITY_TYPE_REFUSED),
        (FakeProvider(), UserIdentity(type=UserIdentityType.USERNAME_AND_PASSCODE, primary=b"rad", secondary=b"x"),
         CONFIG, Reason.PASSWORD_REFUSED),
        (FakeProvider(token_answer=lambda form: (401, {"error": "invalid_client"})),
         UserIdentity(type=UserIdentityType.USERNAME_AND_PASSCODE, primary=b"rad", secondary=b"x"), CONFIG,
         Reason.PROVIDER_UNAVAILABLE),
    ]
    for provider, identity, config, reason in cases:
        error = refusal(provider, identity, config)
        assert error.reason == reason, (identity, error.detail)
        assert str(error) == error.detail


# ---- introspection tells the truth (issue 14 item 4) ----------------------------------------------------------

# What providers answer when they cannot introspect a token: panva's oidc-provider refuses JWT access
# tokens with HTTP 400; others answer 401 for a client they do not know, or 503.
CANNOT_INTROSPECT = [(400, {"error": "invalid_request", "error_description": "JWT access tokens are not supported"}),
                     (401, {"error": "invalid_client"}), (503, {"error": "temporarily_unavailable"})]


@pytest.mark.parametrize("answer", CANNOT_INTROSPECT)
def test_an_introspection_error_is_introspection_failed_not_revoked(answer: tuple[int, dict[str, Any]]) -> None:
    error = refusal(FakeProvider(introspection=answer), jwt_identity(token()), CONFIG.replace(introspect=True))
    assert error.reason == Reason.INTROSPECTION_FAILED and "revoked" not in error.detail
    assert answer[1]["error"] in error.detail


@pytest.mark.parametrize("answer", [*CANNOT_INTROSPECT, (200, {"active": "false"})])
def test_per_request_an_introspection_error_is_introspection_failed_not_revoked(
        answer: tuple[int, dict[str, Any]]) -> None:
    provider = FakeProvider()

    async def use(authn: Authenticator) -> tuple[Any, Any]:
        subject = await authn.authenticate(jwt_identity(token()), [], "127.0.0.1")
        provider.introspection = answer
        failed = await authn.still_valid(subject)
        provider.introspection, provider.active = None, False
        return failed, await authn.still_valid(subject)

    failed, revoked = run(provider, use, CONFIG.replace(introspect=True, introspect_cache=0.0))
    assert failed.reason == Reason.INTROSPECTION_FAILED and "revoked" not in failed.text
    assert (revoked.reason, revoked.text) == (Reason.TOKEN_INACTIVE, "the token was revoked")


def test_made_up_key_ids_cannot_turn_the_agent_into_a_stream_of_jwks_requests() -> None:
    provider = FakeProvider()
    made_up = [jwt.encode({"sub": "rad"}, KEY, algorithm="ES256", headers={"kid": f"k{n}", "typ": "at+jwt"})
               for n in range(2, 12)]

    async def use(authn: Authenticator) -> list[Reason]:
        reasons = []
        for value in made_up:
            with pytest.raises(AuthenticationFailed) as raised:
                await authn.authenticate(jwt_identity(value), [], "127.0.0.1")
            reasons.append(raised.value.reason)
        await authn.authenticate(jwt_identity(token()), [], "127.0.0.1")  # the known key still verifies
        return reasons

    assert run(provider, use) == [Reason.TOKEN_REJECTED] * 10 and provider.jwks_requests == 1


def test_an_unreachable_provider_is_provider_unavailable() -> None:
    async def use(authn: Authenticator) -> AuthenticationFailed:
        with pytest.raises(AuthenticationFailed) as raised:
            await authn.authenticate(jwt_identity(token()), [], "127.0.0.1")
        return raised.value

    async def scenario() -> AuthenticationFailed:
        async with AsyncExecutor() as http:
            return await use(Authenticator(CONFIG, AsyncOAuthClient("http://127.0.0.1:9", AGENT, http)))

    assert asyncio.run(scenario()).reason == Reason.PROVIDER_UNAVAILABLE


# ---- type 2: the per-source throttle -----------------------------------------------------------------------

def _password(user: bytes = b"rad", password: bytes = b"guess") -> UserIdentity:
    return UserIdentity(type=UserIdentityType.USERNAME_AND_PASSCODE, primary=user, secondary=password)


def test_failed_type_2_logins_are_throttled_per_source_without_asking_the_provider() -> None:
    provider = FakeProvider()

    async def use(authn: Authenticator) -> list[Reason]:
        reasons = []
        for n in range(5):  # a different user each time: the provider's per-user lockout never sees it
            with pytest.raises(AuthenticationFailed) as raised:
                await authn.authenticate(_password(f"user{n}".encode()), [], "2001:db8::7")
            reasons.append(raised.value.reason)
        with pytest.raises(AuthenticationFailed) as sibling:  # same /64
            await authn.authenticate(_password(), [], "2001:db8::8")
        with pytest.raises(AuthenticationFailed) as elsewhere:
            await authn.authenticate(_password(), [], "192.0.2.9")
        return [*reasons, sibling.value.reason, elsewhere.value.reason]

    reasons = run(provider, use)
    assert reasons == [Reason.PASSWORD_REFUSED] * 3 + [Reason.THROTTLED] * 3 + [Reason.PASSWORD_REFUSED]
    assert len(provider.token_requests) == 4  # no provider call (no scrypt there) once throttled
    assert [r.headers["Forwarded"] for r in provider.token_requests] == ['for="[2001:db8::7]"'] * 3 + [
        'for="192.0.2.9"']


def test_type_2_logins_through_a_shared_state_that_does_not_answer_are_refused_unasked(tmp_path: Path) -> None:
    """Fail closed: with [shared] redis out of reach no login is counted, so none is let through."""
    from devtools.redis_server import RedisServer
    from server_agent.shared_config import SharedSection
    from server_agent.shared_redis import RedisShared, connect

    provider = FakeProvider()

    async def use(authn: Authenticator) -> AuthenticationFailed:
        down = RedisServer(tmp_path / "redis")  # never started
        authn.logins = RedisShared(connect(SharedSection(redis=down.url, timeout=0.5)), "t:", CONFIG.throttle)
        with pytest.raises(AuthenticationFailed) as raised:
            await authn.authenticate(_password(b"rad", b"demo-rad"), [], "192.0.2.1")
        await authn.logins.close()
        return raised.value

    refused = run(provider, use)
    assert refused.reason == Reason.SHARED_STATE_UNAVAILABLE and "Redis unreachable" in refused.detail
    assert provider.token_requests == []


def test_parallel_type_2_attempts_from_one_source_get_n_provider_calls() -> None:
    provider = FakeProvider(delay=0.2)

    async def use(authn: Authenticator) -> list[Reason]:
        async def attempt(n: int) -> Reason:
            try:
                await authn.authenticate(_password(f"u{n}".encode()), [], "192.0.2.1")
            except AuthenticationFailed as error:
                return error.reason
            return Reason.AUTHENTICATED

        return list(await asyncio.gather(*(attempt(n) for n in range(20))))

    reasons = run(provider, use)
    assert len(provider.token_requests) == 3 and reasons.count(Reason.THROTTLED) == 17


# ---- against the real HIAL ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hial(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = HialProcess(tmp_path_factory.mktemp("hial")).start()
    yield server
    server.stop()


def _hial_config(hial: HialProcess) -> IdentityConfig:
    return CONFIG.replace(issuer=hial.issuer, algorithms=("RS256", "ES256"), client_secret="demo-server-agent-secret")


def _at_hial(hial: HialProcess, use: Callable[[Authenticator], Awaitable[T]]) -> T:
    config = _hial_config(hial)

    async def scenario() -> T:
        async with AsyncExecutor() as http:
            client = ClientAuth(client_id="server-agent", method=AuthMethod.CLIENT_SECRET_BASIC,
                                secret="demo-server-agent-secret")
            return await use(Authenticator(config, AsyncOAuthClient(hial.issuer, client, http)))

    return asyncio.run(scenario())


def test_hial_tokens_of_users_pass_and_of_clients_acting_for_themselves_do_not(hial: HialProcess) -> None:
    def grant(data: dict[str, str], auth: tuple[str, str] | None = None) -> str:
        answer = httpx.post(f"{hial.issuer}/token", data=data, auth=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    user = grant({"grant_type": "password", "client_id": "workstation-agent", "username": "rad",
                  "password": "demo-rad", "scope": "openid user/ImagingStudy.rs"})
    confidential = grant({"grant_type": "client_credentials", "scope": "user/ImagingStudy.rs"},
                         ("test-confidential", "demo-test-secret"))
    own = grant({"grant_type": "client_credentials", "scope": "authzen:evaluate"},
                ("server-agent", "demo-server-agent-secret"))  # the agent's own PDP token, replayed

    async def use(authn: Authenticator) -> list[str]:
        subject = await authn.authenticate(jwt_identity(user), [], "127.0.0.1")
        reasons = []
        for value in (confidential, own):
            with pytest.raises(AuthenticationFailed) as raised:
                await authn.authenticate(jwt_identity(value), [], "127.0.0.1")
            reasons.append(raised.value.reason)
        typed = await authn.authenticate(_password(b"tech", b"demo-tech"), [], "127.0.0.1")
        return [subject.username, *reasons, typed.username, str(typed.identity_type)]

    assert _at_hial(hial, use) == ["rad", Reason.NOT_A_USER, Reason.NOT_A_USER, "tech", "2"]


def test_hial_type_2_failures_are_refused_then_throttled(hial: HialProcess, tmp_path: Path) -> None:
    async def use(authn: Authenticator) -> list[Reason]:
        reasons = []
        for n in range(4):
            with pytest.raises(AuthenticationFailed) as raised:
                await authn.authenticate(_password(b"refdoc" if n % 2 else b"erdoc", b"wrong"), [], "192.0.2.44")
            reasons.append(raised.value.reason)
        return reasons

    assert _at_hial(hial, use) == [Reason.PASSWORD_REFUSED] * 3 + [Reason.THROTTLED]
