"""The two thin executors: send an :class:`~oauthclient.http.HttpRequest`, return the response, on httpx.

:class:`SyncExecutor` (``httpx.Client``) serves the CLI wrapper, which runs in one thread;
:class:`AsyncExecutor` (``httpx.AsyncClient``) serves the agents' event loops, one per loop. Neither
may be shared: the sync one refuses calls from another thread, the async one from another loop
(httpx's pools, like requests' sessions, are not made for that).

Bounds: named timeouts for each phase and a total for the whole exchange; a response body larger
than the request's ``max_response`` is refused before it is held; ``Accept-Encoding: identity``
and a compressed answer refused, so a small body cannot inflate past that bound; no redirects
followed (credentials go only to the endpoint the discovery document named). TLS is verified
against the configured CA file, with the profile of :mod:`dicomwire.tls` (BCP 195).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from dicomwire.tls import client_context

from .errors import ResponseError, TransportError
from .http import HttpRequest, HttpResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds per phase (httpx's four) and for the whole exchange, body included."""

    connect: float = 5.0
    read: float = 5.0
    write: float = 5.0
    pool: float = 5.0
    total: float = 10.0

    @classmethod
    def within(cls, seconds: float) -> Timeouts:
        """Every phase and the whole exchange within ``seconds`` (a configuration's single ``timeout``)."""
        return cls(connect=seconds, read=seconds, write=seconds, pool=seconds, total=seconds)

    def phases(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """What the server's certificate must chain to (None: the system's store), and our certificate
    and key for ``tls_client_auth`` (RFC 8705 section 2), if the client authenticates that way."""

    ca_file: Path | None = None
    certificate: Path | None = None
    key: Path | None = None


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """The profile every TLS client of the project uses (:mod:`dicomwire.tls`: BCP 195)."""
    return client_context(ca=files.ca_file, certificate=files.certificate, key=files.key)


def _headers(request: HttpRequest) -> list[tuple[str, str]]:
    return [*request.headers, ("Accept-Encoding", "identity")]


def _check_head(request: HttpRequest, response: httpx.Response) -> None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ResponseError(f"{request.url}: compressed answer ({encoding[:20]}) though identity was asked for",
                            status=response.status_code)
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > request.max_response:
        raise ResponseError(f"{request.url}: answer of {length} bytes, over {request.max_response}",
                            status=response.status_code)


def _check_body(request: HttpRequest, body: bytearray, deadline: float) -> None:
    if len(body) > request.max_response:
        raise ResponseError(f"{request.url}: answer over {request.max_response} bytes")
    if time.monotonic() > deadline:
        raise TransportError(f"{request.url}: the answer took longer than allowed")


def _response(response: httpx.Response, body: bytearray) -> HttpResponse:
    return HttpResponse(status=response.status_code, headers=tuple(response.headers.items()), body=bytes(body))


def _transport_error(request: HttpRequest, error: httpx.HTTPError) -> TransportError:
    if isinstance(error, httpx.TimeoutException):
        return TransportError(f"{request.url}: timed out")
    return TransportError(f"{request.url}: {type(error).__name__}: {error}")


class SyncExecutor:
    """``httpx.Client`` for one thread (the CLI wrapper's)."""

    def __init__(self, *, tls: TlsFiles | None = None, timeouts: Timeouts | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self._thread = threading.get_ident()
        self._http = httpx.Client(verify=tls_context(tls or TlsFiles()), transport=transport, follow_redirects=False,
                                  timeout=self.timeouts.phases())

    def send(self, request: HttpRequest, timeouts: Timeouts | None = None) -> HttpResponse:
        if threading.get_ident() != self._thread:
            raise RuntimeError("a SyncExecutor is used by the thread that made it only")
        limits = timeouts or self.timeouts
        deadline = time.monotonic() + limits.total
        try:
            with self._http.stream(request.method, request.url, headers=_headers(request),
                                   content=request.body or None, timeout=limits.phases()) as response:
                _check_head(request, response)
                body = bytearray()
                for chunk in response.iter_raw():
                    body += chunk
                    _check_body(request, body, deadline)
                return _response(response, body)
        except httpx.HTTPError as error:
            raise _transport_error(request, error) from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncExecutor:
    """``httpx.AsyncClient`` for one event loop (an agent's)."""

    def __init__(self, *, tls: TlsFiles | None = None, timeouts: Timeouts | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http = httpx.AsyncClient(verify=tls_context(tls or TlsFiles()), transport=transport,
                                       follow_redirects=False, timeout=self.timeouts.phases())

    async def send(self, request: HttpRequest, timeouts: Timeouts | None = None) -> HttpResponse:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("an AsyncExecutor is used by the event loop that first used it only")
        limits = timeouts or self.timeouts
        deadline = time.monotonic() + limits.total
        try:
            async with asyncio.timeout(limits.total):
                return await self._send(request, limits, deadline)
        except TimeoutError:
            raise TransportError(f"{request.url}: no complete answer within {limits.total} s") from None
        except httpx.HTTPError as error:
            raise _transport_error(request, error) from None

    async def _send(self, request: HttpRequest, limits: Timeouts, deadline: float) -> HttpResponse:
        async with self._http.stream(request.method, request.url, headers=_headers(request),
                                     content=request.body or None, timeout=limits.phases()) as response:
            _check_head(request, response)
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                _check_body(request, body, deadline)
            return _response(response, body)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
