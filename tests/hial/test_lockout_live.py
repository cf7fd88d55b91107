"""Lockouts through a live ``hial-mock serve``: they stop the guesser, never the users (issue 13 item 4).

Every request comes from 127.0.0.1; the server agent names other sources with RFC 7239 ``Forwarded``.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from devtools.hial import HialProcess

WS = "workstation-agent"
AGENT = ("server-agent", "demo-server-agent-secret")
TEST = ("test-confidential", "demo-test-secret")
UNTIL = re.compile(r"locked until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$")


@pytest.fixture(scope="module")
def hial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HialProcess]:
    server = HialProcess(tmp_path_factory.mktemp("lockout") / "hial", lockout={
        "max_failures": 3, "source_max_failures": 30, "slow_after": 1000, "lock_seconds": 600}).start()
    yield server
    server.stop()


def grant(hial: HialProcess, user: str, password: str, *, client: str | tuple[str, str] = AGENT,
          source: str | None = None) -> requests.Response:
    data = {"grant_type": "password", "username": user, "password": password, "scope": "openid"}
    auth = None
    if isinstance(client, str):
        data["client_id"] = client
    else:
        auth = client
    headers = {"Forwarded": f'for="{source}"'} if source else {}
    return requests.post(f"{hial.issuer}/token", data=data, auth=auth, headers=headers, timeout=30)


def refused_until(response: requests.Response) -> dt.datetime:
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
    match = UNTIL.search(response.json()["error_description"])
    assert match, response.json()["error_description"]
    return dt.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S%z")


def test_wrong_passwords_through_the_server_agent_stop_neither_other_users_nor_the_user_elsewhere(
        hial: HialProcess) -> None:
    for _ in range(3):
        assert grant(hial, "rad", "guess-1", source="203.0.113.66").json()["error"] == "invalid_grant"
    until = refused_until(grant(hial, "rad", "demo-rad", source="203.0.113.66"))
    assert dt.timedelta(seconds=590) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=601)
    assert grant(hial, "tech", "demo-tech", source="203.0.113.66").status_code == 200, "another user, same source"
    assert grant(hial, "rad", "demo-rad", source="192.0.2.10").status_code == 200, "the user at her workstation"
    assert grant(hial, "tech", "demo-tech").status_code == 200, "the server agent itself is not locked"
    time.sleep(0.3)
    assert "login refused user=rad client=server-agent source=203.0.113.66 (forwarded by 127.0.0.1)" in hial.log


def test_the_public_workstation_client_is_never_locked_for_everyone(hial: HialProcess) -> None:
    for _ in range(3):
        assert grant(hial, "refdoc", "guess-2", client=WS).json()["error"] == "invalid_grant"
    refused_until(grant(hial, "refdoc", "demo-refdoc", client=WS))
    assert grant(hial, "erdoc", "demo-erdoc", client=WS).status_code == 200


def test_a_forwarded_source_is_honoured_only_for_a_trusted_forwarder(hial: HialProcess) -> None:
    # test-confidential is confidential but no forwarder: its header is ignored, the peer is the source.
    for i in range(3):
        grant(hial, "researcher", "guess-3", client=TEST, source=f"198.51.100.{i + 1}")
    refused_until(grant(hial, "researcher", "demo-researcher", client=TEST, source="198.51.100.9"))
    # The server agent is a forwarder: each named source is its own, so one failure each locks nothing.
    for i in range(5):
        grant(hial, "nobody", "guess-4", source=f"198.51.100.{i + 1}")
    assert grant(hial, "nobody", "demo-nobody", source="198.51.100.9").status_code == 200
    malformed = grant(hial, "nobody", "demo-nobody", source='198.51.100.1", for="198.51.100.2')
    assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_request"
    time.sleep(0.3)
    assert "ignored a Forwarded header from client test-confidential at 127.0.0.1: not a trusted forwarder" \
        in hial.log
    assert "refused a Forwarded header from client server-agent" in hial.log


def test_a_flood_of_fake_names_does_not_free_a_locked_pair(hial: HialProcess) -> None:
    for _ in range(3):
        grant(hial, "mfarad", "guess-5", source="198.51.100.77")
    refused_until(grant(hial, "mfarad", "demo-mfarad", source="198.51.100.77"))
    with ThreadPoolExecutor(4) as pool:
        flood = list(pool.map(lambda i: grant(hial, f"fake-{i}", "x", source=f"10.9.{i // 250}.{i % 250 + 1}"),
                              range(40)))
    assert {r.json()["error"] for r in flood} == {"invalid_grant"}
    refused_until(grant(hial, "mfarad", "demo-mfarad", source="198.51.100.77"))
    assert grant(hial, "tech", "demo-tech", source="192.0.2.77").status_code == 200


def test_a_lock_survives_only_its_lock_time(tmp_path: Path) -> None:
    hial = HialProcess(tmp_path / "hial", lockout={"max_failures": 2, "lock_seconds": 1, "window": 60}).start()
    try:
        for _ in range(2):
            grant(hial, "rad", "guess-6", client=WS)
        refused_until(grant(hial, "rad", "demo-rad", client=WS))
        time.sleep(2.1)
        assert grant(hial, "rad", "demo-rad", client=WS).status_code == 200
    finally:
        hial.stop()
