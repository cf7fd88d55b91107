"""The workstation agent's readiness checks (issue 15 item 3): the session's token and the routes."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from agent import certs
from agent.admin import WorkstationAdmin, WorkstationMetrics
from agent.config import Route
from agent.oidc import Tokens
from agent.policy import Credentials
from devtools.peers import free_port
from devtools.site import workstation_config
from tomlconf.admin import AdminSection


def _admin(tmp_path: Path, routes: dict[str, int], expires_in: float) -> WorkstationAdmin:
    certs.init_ca(tmp_path / "pki")
    certs.issue(tmp_path / "pki", "ws1", ["127.0.0.1"])
    config = workstation_config(pki=tmp_path / "pki", issuer="http://127.0.0.1:1", listen=free_port(),
                                route_port=routes.pop("GW1"), return_port=free_port(),
                                session_file=tmp_path / "session.json",
                                routes={name: Route(host="127.0.0.1", port=port) for name, port in routes.items()})
    tokens = Tokens(access_token="a", refresh_token=None, expires_at=time.time() + expires_in, username="rad")
    credentials = Credentials(tokens)
    metrics = WorkstationMetrics(config, lambda: credentials)
    return WorkstationAdmin(AdminSection(listen=("127.0.0.1", 0)), config, metrics, lambda: [], lambda: credentials)


def test_an_expired_session_is_not_ready_and_a_fresh_one_is(tmp_path: Path) -> None:
    assert _admin(tmp_path / "a", {"GW1": 1}, 60).check_session().ok
    expired = _admin(tmp_path / "b", {"GW1": 1}, -1).check_session()
    assert not expired.ok and "log in again" in expired.detail


def test_the_routes_check_names_the_server_agent_that_does_not_answer(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as up:
        admin = _admin(tmp_path, {"GW1": up.getsockname()[1], "GW2": free_port()}, 60)
        result = asyncio.run(admin.check_routes())
        assert not result.ok and result.detail == "server agent not reachable: GW2"
        admin = _admin(tmp_path / "c", {"GW1": up.getsockname()[1]}, 60)
        assert asyncio.run(admin.check_routes()).ok
        # A route whose first server agent is down but another of its addresses answers: the agent
        # fails over to it, so the route carries associations (issue 15 item 6).
        admin = _admin(tmp_path / "d", {"GW1": free_port()}, 60)
        route = admin.config.routes["GW1"]
        admin.follow(admin.config.replace(routes={"GW1": route.replace(addresses=(("127.0.0.1", free_port()),
                                                                                ("127.0.0.1", up.getsockname()[1])))}))
        assert asyncio.run(admin.check_routes()).ok
        admin.follow(admin.config.replace(routes={"GW1": route}))
        assert asyncio.run(admin.check_routes()).detail == "server agent not reachable: GW1"
