"""The two executors against the real HIAL (codes kept all the way up), and their bounds against
fake transports: size, compression, redirects, time, TLS, and the one-thread / one-loop rule."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from devtools.hial import HialProcess
from oauthclient import (
    AsyncExecutor,
    AsyncOAuthClient,
    AuthMethod,
    ClientAuth,
    ClientCredentialsGrant,
    HttpRequest,
    IntrospectionRequest,
    OAuthClient,
    OAuthError,
    PasswordGrant,
    RefreshGrant,
    ResponseError,
    RevocationRequest,
    SyncExecutor,
    Timeouts,
    TlsFiles,
    TransportError,
)

PUBLIC = ClientAuth(client_id="workstation-agent", method=AuthMethod.NONE)
AGENT = ClientAuth(client_id="server-agent", method=AuthMethod.CLIENT_SECRET_BASIC, secret="demo-server-agent-secret")
SCOPE = "openid offline_access user/ImagingStudy.rs"


def test_sync_login_refresh_revoke_against_the_hial(hial: HialProcess) -> None:
    with SyncExecutor() as executor:
        client = OAuthClient(hial.issuer, PUBLIC, executor)
        assert client.metadata().issuer == hial.issuer
        first = client.run(PasswordGrant(username="rad", password="demo-rad", scope=SCOPE))
        assert first.refresh_token and first.id_token and first.expires_in
        second = client.run(RefreshGrant(refresh_token=first.refresh_token))
        assert second.access_token != first.access_token and second.refresh_token
        client.run(RevocationRequest(token=second.refresh_token, token_type_hint="refresh_token"))
        with pytest.raises(OAuthError) as raised:
            client.run(RefreshGrant(refresh_token=second.refresh_token))
        assert (raised.value.error, raised.value.status) == ("invalid_grant", 400)


def test_async_codes_and_extras_come_up_unchanged(hial: HialProcess) -> None:
    async def scenario() -> None:
        async with AsyncExecutor() as executor:
            agent = AsyncOAuthClient(hial.issuer, AGENT, executor)
            public = AsyncOAuthClient(hial.issuer, PUBLIC, executor)
            with pytest.raises(OAuthError) as wrong:
                await public.run(PasswordGrant(username="rad", password="guess", scope=SCOPE))
            assert (wrong.value.error, wrong.value.status, wrong.value.mfa_required) == ("invalid_grant", 400, False)
            with pytest.raises(OAuthError) as mfa:
                await public.run(PasswordGrant(username="mfarad", password="demo-mfarad", scope=SCOPE))
            assert (mfa.value.error, mfa.value.mfa_required) == ("invalid_grant", True)
            code = pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").now()
            user = await public.run(PasswordGrant(username="mfarad", password="demo-mfarad", scope=SCOPE, otp=code))
            own = await agent.run(ClientCredentialsGrant(scope="authzen:evaluate"))
            assert (await agent.run(IntrospectionRequest(token=user.access_token))).active is True
            await public.run(RevocationRequest(token=user.access_token, token_type_hint="access_token"))
            assert (await agent.run(IntrospectionRequest(token=user.access_token))).active is False
            assert own.refresh_token is None
            with pytest.raises(OAuthError) as unauthorized:  # the public client may not ask for its own token
                await public.run(ClientCredentialsGrant(scope="openid"))
            assert unauthorized.value.error in ("unauthorized_client", "invalid_client")

    asyncio.run(scenario())


def test_tls_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    from tests.hial.test_tls import _self_signed

    folder = tmp_path / "hial"
    folder.mkdir()
    cert, key = _self_signed(folder)
    hial = HialProcess(folder, server={"tls_certificate": str(cert), "tls_key": str(key)}).start()
    try:
        with SyncExecutor(tls=TlsFiles(ca_file=cert)) as trusting:
            assert OAuthClient(hial.issuer, PUBLIC, trusting).metadata().token_endpoint.startswith("https://")
        with SyncExecutor() as default, pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            OAuthClient(hial.issuer, PUBLIC, default).metadata()
    finally:
        hial.stop()


def _request(max_response: int = 1000) -> HttpRequest:
    return HttpRequest(method="GET", url="https://idp.example.org/x", max_response=max_response)


def _sync(handler: httpx.MockTransport) -> SyncExecutor:
    return SyncExecutor(transport=handler)


def test_a_body_over_the_bound_is_refused() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"x" * 1001))

    with _sync(httpx.MockTransport(handler)) as executor:
        with pytest.raises(ResponseError, match="over 1000"):
            executor.send(_request())
        assert executor.send(_request(2000)).body == b"x" * 1001
    assert seen[0].headers["Accept-Encoding"] == "identity"


def test_an_announced_length_over_the_bound_is_refused_before_reading() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "1000000000"}, stream=httpx.ByteStream(b"{}"))

    with _sync(httpx.MockTransport(handler)) as executor, pytest.raises(ResponseError, match="1000000000 bytes"):
        executor.send(_request())


def test_a_streamed_body_over_the_bound_is_cut_before_it_is_held() -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"x" * 4096

    with _sync(httpx.MockTransport(lambda r: httpx.Response(200, content=endless()))) as executor,\
            pytest.raises(ResponseError, match="over 1000"):
        executor.send(_request())


def test_a_compressed_answer_is_refused() -> None:
    body = gzip.compress(b"{}" + b" " * 100000)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=httpx.ByteStream(body),
                                                             headers={"Content-Encoding": "gzip"}))
    with _sync(transport) as executor, pytest.raises(ResponseError, match="compressed"):
        executor.send(_request(200000))


def test_redirects_are_not_followed() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(302, headers={"Location": "https://evil.example/"},
                                                             stream=httpx.ByteStream(b"")))
    with _sync(transport) as executor:
        assert executor.send(_request()).status == 302


def test_unreachable_is_a_transport_error() -> None:
    with SyncExecutor(timeouts=Timeouts.within(2)) as executor, pytest.raises(TransportError):
        executor.send(HttpRequest(method="GET", url="http://127.0.0.1:9/x"))


def test_a_drip_fed_answer_ends_at_the_total_timeout() -> None:
    async def drip() -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.05)
            yield b"x"

    async def scenario() -> float:
        transport = httpx.MockTransport(lambda r: httpx.Response(200, content=drip()))
        async with AsyncExecutor(transport=transport, timeouts=Timeouts(total=0.3)) as executor:
            started = time.monotonic()
            with pytest.raises(TransportError, match=r"within 0\.3 s"):
                await executor.send(_request(10**6))
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_a_sync_executor_refuses_another_thread() -> None:
    errors: list[BaseException] = []
    with _sync(httpx.MockTransport(lambda r: httpx.Response(200, stream=httpx.ByteStream(b"")))) as executor:
        executor.send(_request())
        worker = threading.Thread(target=lambda: _capture(errors, lambda: executor.send(_request())))
        worker.start()
        worker.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def _capture(errors: list[BaseException], call: Callable[[], object]) -> None:
    try:
        call()
    except BaseException as error:  # handed to the test's thread
        errors.append(error)


def test_an_async_executor_refuses_a_second_loop() -> None:
    executor = AsyncExecutor(transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=httpx.ByteStream(b""))))
    assert asyncio.run(executor.send(_request())).status == 200
    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(executor.send(_request()))
