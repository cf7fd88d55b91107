"""The HIAL tells registered agents of every session that ends (OpenID Connect Back-Channel Logout 1.0):
a logout token per session, on revocation (RFC 7009) and on a replayed refresh token, each checked
here as a receiver must (section 2.6) against the HIAL's published keys."""

from __future__ import annotations

import queue
import signal
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from devtools.hial import HialProcess

EVENT = "http://schemas.openid.net/event/backchannel-logout"


class Receiver:
    """A back-channel logout endpoint that records every POST and answers 200."""

    def __init__(self) -> None:
        self.posts: queue.Queue[tuple[str, dict[str, list[str]]]] = queue.Queue()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                posts.put((self.headers["Content-Type"], urllib.parse.parse_qs(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/backchannel-logout"

    def next(self, timeout: float = 2.0) -> tuple[str, dict[str, list[str]]]:
        return self.posts.get(timeout=timeout)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def hial(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[HialProcess]:
    server = HialProcess(Path(tmp_path_factory.mktemp("hial")), backchannel={"server-agent": receiver.url}).start()
    yield server
    server.stop()


def login(hial: HialProcess) -> dict[str, Any]:
    return requests.post(f"{hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": "rad", "password": "demo-rad",
        "scope": "openid offline_access user/ImagingStudy.rs"}).json()


def checked(hial: HialProcess, token: str, session: bool = True) -> dict[str, Any]:
    """Section 2.6, as the server agent checks it."""
    keys = jwt.PyJWKClient(f"{hial.issuer}/jwks")
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    claims: dict[str, Any] = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                                        audience="server-agent", issuer=hial.issuer,
                                        options={"require": ["iat", "exp", "jti", "sid" if session else "sub"]})
    assert claims["events"] == {EVENT: {}} and "nonce" not in claims
    return claims


def test_discovery_says_back_channel_logout_is_supported(hial: HialProcess) -> None:
    document = requests.get(f"{hial.issuer}/.well-known/openid-configuration", timeout=10).json()
    assert document["backchannel_logout_supported"] and document["backchannel_logout_session_supported"]


def test_revocation_sends_one_logout_token_naming_the_session(hial: HialProcess, receiver: Receiver) -> None:
    tokens = login(hial)
    sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    started = time.monotonic()
    assert requests.post(f"{hial.issuer}/revoke", timeout=10, data={
        "token": tokens["refresh_token"], "client_id": "workstation-agent"}).status_code == 200
    content_type, form = receiver.next()
    assert time.monotonic() - started < 2.0
    assert content_type == "application/x-www-form-urlencoded"
    claims = checked(hial, form["logout_token"][0])
    assert (claims["sid"], claims["sub"]) == (sid, "rad")
    requests.post(f"{hial.issuer}/revoke", timeout=10, data={"token": tokens["access_token"],
                                                              "client_id": "workstation-agent"})
    with pytest.raises(queue.Empty):  # the session ended once: told once
        receiver.next(timeout=1.0)


def test_a_replayed_refresh_token_ends_the_session_and_says_so(hial: HialProcess, receiver: Receiver) -> None:
    tokens = login(hial)
    sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    refresh = {"grant_type": "refresh_token", "client_id": "workstation-agent",
               "refresh_token": tokens["refresh_token"]}
    assert requests.post(f"{hial.issuer}/token", timeout=10, data=refresh).status_code == 200
    assert requests.post(f"{hial.issuer}/token", timeout=10, data=refresh).status_code == 400  # replayed
    _, form = receiver.next()
    assert checked(hial, form["logout_token"][0])["sid"] == sid


def test_a_locked_account_ends_every_session_of_that_user(hial: HialProcess, receiver: Receiver) -> None:
    users = hial.folder / "users.toml"
    users.write_text(users.read_text().replace("[users.trustee]", "[users.trustee]\ndisabled = true", 1))
    hial.signal(signal.SIGHUP)
    _, form = receiver.next(timeout=5.0)
    claims = checked(hial, form["logout_token"][0], session=False)
    assert claims["sub"] == "trustee" and "sid" not in claims
