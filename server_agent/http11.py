"""The one HTTP server of the agents' endpoints that are not DICOM: the back-channel logout endpoint
(:mod:`server_agent.logout`) and the admin listener (:mod:`server_agent.admin`).

HTTP/1.1 (RFC 9112) parsed by h11's sans-I/O state machine, one request per connection (the answer says
``Connection: close``, RFC 9112 section 9.6), every peer-chosen size bounded: the head by
``Bounds.max_head`` (h11's ``max_incomplete_event_size``), the body by ``Bounds.max_body`` (413 beyond it),
the whole exchange by ``Bounds.timeout`` seconds, and at most ``Bounds.max_connections`` connections at
once (more are closed unanswered, at once). A request h11 cannot parse, a peer that leaves or one that
is too slow gets no answer, only a closed connection. An :class:`Endpoint` decides on the head first
(:meth:`Endpoint.head`: refuse before any body is read), then answers the whole request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

import h11

READ_SIZE = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """An HTTP response (``Cache-Control: no-store``: nothing here is for caches, RFC 9111 section 5.2.2.5)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_answer(status: int, document: Mapping[str, Any] | None = None) -> Answer:
    """A JSON answer; an empty body when there is no document (a 200 of the logout endpoint)."""
    return Answer(status=status, body=json.dumps(document).encode() + b"\n" if document else b"")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    max_head: int = 8 * 1024  # request line and headers: a few hundred bytes in real use
    max_body: int = 0
    timeout: float = 5.0  # seconds for the whole exchange
    max_connections: int = 16  # at once


class Endpoint(Protocol):
    def head(self, request: h11.Request) -> Answer | None:
        """An answer from the request's head alone (404, 405, 411, ...), or None to read its body."""

    async def answer(self, request: h11.Request, body: bytes) -> Answer:
        """The answer to the whole request."""


class HttpListener:
    """Serves ``endpoint`` on ``host``:``port`` within ``bounds`` (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, host: str, port: int, bounds: Bounds, *, reuse_port: bool = False) -> None:
        self.endpoint = endpoint
        self.host, self.port = host, port
        self.bounds = bounds
        self.reuse_port = reuse_port  # the workers of one host share the port (SO_REUSEPORT)
        self._server: asyncio.Server | None = None
        self.open = 0  # connections being served

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_port=self.reuse_port or None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.bounds.max_connections:
            writer.transport.abort()
            return
        self.open += 1
        try:
            await asyncio.wait_for(self._exchange(reader, writer), self.bounds.timeout)
        except (TimeoutError, ConnectionError, h11.ProtocolError):
            pass
        finally:
            self.open -= 1
            if writer.transport.get_write_buffer_size():  # a client that does not read: no lingering
                writer.transport.abort()
            else:
                writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self.bounds.max_head)
        request: h11.Request | None = None
        answer: Answer | None = None
        body = bytearray()
        while answer is None:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                if not data:
                    return  # gone before the request ended (a TCP check: connect, close)
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                answer = self.endpoint.head(event)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.bounds.max_body:
                    answer = json_answer(413, {"error": "invalid_request", "error_description": "body too large"})
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                answer = await self.endpoint.answer(request, bytes(body))
            else:  # ConnectionClosed, or anything else before a whole request
                return
        assert request is not None
        await _send(connection, writer, request, answer)


async def _send(connection: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request,
                answer: Answer) -> None:
    headers = [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
               ("Cache-Control", "no-store"), ("Connection", "close"), *answer.headers]
    out = connection.send(h11.Response(status_code=answer.status, headers=headers,
                                       reason=HTTPStatus(answer.status).phrase.encode()))
    if request.method != b"HEAD":  # RFC 9110 section 9.3.2: the same head, no content
        out += connection.send(h11.Data(data=answer.body))
    writer.write(out + connection.send(h11.EndOfMessage()))
    await writer.drain()


__all__ = ["Answer", "Bounds", "Endpoint", "HttpListener", "json_answer"]
