"""The back-channel logout endpoint (OpenID Connect Back-Channel Logout 1.0 sections 2.5 to 2.8).

``POST /backchannel-logout`` with ``application/x-www-form-urlencoded`` body ``logout_token=JWT``:
200 with ``Cache-Control: no-store`` once the session's associations are ended (section 2.8), 400
``invalid_request`` for a token that fails validation, and 404/405/411/413 for anything else. HTTP/1.1
through h11 (sans-I/O, one request per connection: the provider POSTs rarely); every peer-chosen size
is bounded (head, body) and a connection gets ``TIMEOUT`` seconds in all.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import parse_qs

import h11

from oauthclient.discovery import ProviderMetadata

from .config import ServerAgentConfig
from .http11 import Answer, Bounds, HttpListener, json_answer
from .sessions import LogoutRejected, LogoutVerifier, Sessions
from .shared import SharedState, SharedUnavailable

log = logging.getLogger("server_agent.logout")

PATH = b"/backchannel-logout"
MAX_BODY = 16 * 1024  # a logout token is a few hundred bytes
MAX_HEAD = 8 * 1024
TIMEOUT = 5.0
MAX_CONNECTIONS = 32  # at once; more are closed unanswered (the provider retries, section 2.5)


class LogoutEndpoint:
    """Listens for logout tokens; each verified one ends its session in :class:`Sessions`. Served by the
    agents' one small HTTP server (:mod:`server_agent.http11`), within the bounds above."""

    def __init__(self, verifier: LogoutVerifier, sessions: Sessions, host: str, port: int, *,
                 shared: SharedState | None = None, reuse_port: bool = False) -> None:
        self.verifier = verifier
        self.sessions = sessions
        self.shared = shared  # where the other workers and instances learn of the logout
        self.listener = HttpListener(self, host, port, Bounds(max_head=MAX_HEAD, max_body=MAX_BODY, timeout=TIMEOUT,
                                                              max_connections=MAX_CONNECTIONS),
                                     reuse_port=reuse_port)  # the workers of one host share the port

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    def head(self, request: h11.Request) -> Answer | None:
        if request.target.split(b"?")[0] != PATH:
            return json_answer(404)
        if request.method != b"POST":
            return json_answer(405)
        headers = dict(request.headers)
        length = headers.get(b"content-length")
        if length is None:
            return json_answer(411)
        if int(length) > MAX_BODY:
            return json_answer(413, {"error": "invalid_request", "error_description": "body too large"})
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/x-www-form-urlencoded":
            return json_answer(400, {"error": "invalid_request", "error_description": "form-encoded body expected"})
        return None

    async def answer(self, request: h11.Request, body: bytes) -> Answer:
        try:
            tokens = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=4).get("logout_token", [])
        except (UnicodeDecodeError, ValueError):
            tokens = []
        if len(tokens) != 1:
            return json_answer(400, {"error": "invalid_request",
                                     "error_description": "exactly one logout_token expected"})
        try:
            logout = await self.verifier.verify(tokens[0])
        except LogoutRejected as error:
            log.warning("back-channel logout refused: %s", error)
            return json_answer(400, {"error": "invalid_request", "error_description": str(error)})
        self.sessions.end(logout)
        if self.shared is not None:
            try:
                await self.shared.end_session(sid=logout.sid, sub=logout.sub, issued_at=logout.issued_at,
                                              remember=self.sessions.config.remember)
            except SharedUnavailable as error:  # the provider retries; ended here already
                log.error("back-channel logout not shared with the other instances: %s", error)
                return json_answer(503, {"error": "temporarily_unavailable",
                                         "error_description": "shared state unavailable"})
        return json_answer(200)


def check_endpoint(config: ServerAgentConfig, metadata: ProviderMetadata) -> str | None:
    """check-config's step "back-channel logout endpoint": None if it can work, else what is wrong.

    The provider must say it sends logout tokens naming sessions (Back-Channel Logout 1.0 section
    2.1), or associations bound to sessions would never end before ``max_lifetime``; and the
    address must be free to listen on."""
    listen = config.sessions.logout_listen
    if listen is None:
        return None
    document = metadata.document
    if not (document.get("backchannel_logout_supported") and document.get("backchannel_logout_session_supported")):
        return ("the identity provider does not advertise back-channel logout with sessions "
                "(backchannel_logout_session_supported): remove [sessions] logout_listen and use "
                "[identity] introspect, or associations would outlive revocation")
    try:
        with socket.create_server(listen):
            pass
    except OSError as error:
        return f"[sessions] logout_listen {listen[0]}:{listen[1]} cannot be used: {error.strerror or error}"
    return None


__all__ = ["MAX_BODY", "PATH", "LogoutEndpoint", "check_endpoint"]
