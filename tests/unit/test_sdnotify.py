"""sd_notify (issue 15 item 4): the agents tell a Type=notify service manager when they are ready, when
they reload and when they stop. The service manager's side is played by a datagram socket this test
owns, as systemd's is ($NOTIFY_SOCKET)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import certs
from devtools.hial import HialProcess
from devtools.peers import PROJECT, free_port
from devtools.redis_server import REDIS_SERVER, RedisServer
from dicomwire.sdnotify import Notifier, monotonic_usec
from server_agent.config import IdentityConfig, Pacs, ServerAgentConfig, ServerSection, SharedSection, TlsFiles
from tomlconf import write


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's end: an AF_UNIX datagram socket, as systemd binds for $NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    yield sock
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_no_socket_means_no_notification_and_no_error() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.active and not notifier.ready() and not notifier.stopping()


def test_each_state_is_one_datagram_of_key_value_lines(manager: socket.socket) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": manager.getsockname()})
    assert notifier.ready("serving generation 1")
    assert receive(manager) == {"READY": "1", "STATUS": "serving generation 1"}
    before = monotonic_usec()
    assert notifier.reloading()
    reloading = receive(manager)
    assert reloading["RELOADING"] == "1" and before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
    assert notifier.ready("a\nb") and receive(manager)["STATUS"] == "a b"  # one line, never a second field
    assert notifier.stopping() and receive(manager) == {"STOPPING": "1"}


def test_an_abstract_socket_name_is_understood() -> None:
    name = f"sdnotify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive(sock) == {"READY": "1"}


def test_a_manager_that_is_gone_is_said_once_and_never_stops_the_agent(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, "dicomwire.sdnotify"):
        assert not notifier.ready() and not notifier.stopping()
    assert caplog.text.count("cannot notify the service manager") == 1


def test_an_unknown_socket_kind_is_refused_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "dicomwire.sdnotify"):
        assert not Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}).active
    assert "not a socket this agent can notify" in caplog.text


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_the_server_agent_is_ready_only_when_it_accepts_reloads_on_hup_and_says_it_stops(
        tmp_path: Path, manager: socket.socket) -> None:
    pki = tmp_path / "pki"
    certs.init_ca(pki)
    certs.issue(pki, "gw1", ["127.0.0.1"])
    ports = {name: free_port() for name in ("listen", "return")}
    config = ServerAgentConfig(
        server=ServerSection(name="GW1", listen=("127.0.0.1", ports["listen"]),
                             return_listen=("127.0.0.1", ports["return"]), decision_log=tmp_path / "decisions.jsonl"),
        tls=TlsFiles(certificate=pki / "gw1.crt", key=pki / "gw1.key", ca=pki / "ca.crt"),
        identity=IdentityConfig(issuer="https://idp.example.org", client_id="server-agent", client_secret="s"),
        pacs={"ORTHANC": Pacs(host="127.0.0.1", port=free_port())})
    path = write(tmp_path / "server-agent.toml", config)
    env = {**os.environ, "NOTIFY_SOCKET": manager.getsockname()}
    with open(tmp_path / "server-agent.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "server_agent.cli", "serve", "--config", str(path)],
                                   cwd=PROJECT, env=env, stderr=log)
    try:
        ready = receive(manager)
        assert ready["READY"] == "1" and accepts(ports["listen"]) and accepts(ports["return"])
        assert ready["STATUS"] == f"serving generation 1 of {path}"
        process.send_signal(signal.SIGHUP)
        reloading = receive(manager)
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        assert receive(manager) == {"READY": "1", "STATUS": "serving generation 2"}
        path.write_text(path.read_text() + "\n[bogus]\n")
        process.send_signal(signal.SIGHUP)
        assert receive(manager)["RELOADING"] == "1"
        refused = receive(manager)
        assert refused["READY"] == "1" and refused["STATUS"].startswith(f"serving generation 2; last reload refused: "
                                                                        f"{path}: bogus: unknown key")
        process.send_signal(signal.SIGTERM)
        assert receive(manager) == {"STOPPING": "1"}
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_hial_is_ready_when_it_accepts_reloads_on_hup_and_says_it_stops(tmp_path: Path,
                                                                          manager: socket.socket) -> None:
    hial = HialProcess(tmp_path / "hial", server={"port": free_port()})
    path = hial.write_config()
    env = {**os.environ, "NOTIFY_SOCKET": manager.getsockname()}
    with open(tmp_path / "hial.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "hial_mock.cli", "serve", "--config", str(path)],
                                   cwd=PROJECT, env=env, stdout=log, stderr=log)
    try:
        ready = receive(manager)
        assert ready["READY"] == "1" and accepts(hial.server["port"])  # type: ignore[arg-type]
        process.send_signal(signal.SIGHUP)
        assert receive(manager)["RELOADING"] == "1"
        assert receive(manager)["READY"] == "1"
        process.send_signal(signal.SIGTERM)
        assert receive(manager) == {"STOPPING": "1"}
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server missing: run `make test`")
def test_with_workers_the_supervisor_is_ready_when_every_worker_is_and_after_each_has_reloaded(
        tmp_path: Path, manager: socket.socket) -> None:
    """``[server] workers = 2``: systemd hears the supervisor (NotifyAccess=main); it says READY=1 once
    both workers have told it so (each with its listeners up), RELOADING=1 on HUP until both have
    reloaded, STOPPING=1 on TERM."""
    pki = tmp_path / "pki"
    certs.init_ca(pki)
    certs.issue(pki, "gw1", ["127.0.0.1"])
    ports = {name: free_port() for name in ("listen", "return")}
    redis = RedisServer(tmp_path / "redis").start()
    config = ServerAgentConfig(
        server=ServerSection(name="GW1", listen=("127.0.0.1", ports["listen"]), workers=2,
                             return_listen=("127.0.0.1", ports["return"]), decision_log=tmp_path / "decisions.jsonl"),
        tls=TlsFiles(certificate=pki / "gw1.crt", key=pki / "gw1.key", ca=pki / "ca.crt"),
        identity=IdentityConfig(issuer="https://idp.example.org", client_id="server-agent", client_secret="s"),
        pacs={"ORTHANC": Pacs(host="127.0.0.1", port=free_port())}, shared=SharedSection(redis=redis.url))
    path = write(tmp_path / "server-agent.toml", config)
    env = {**os.environ, "NOTIFY_SOCKET": manager.getsockname()}
    with open(tmp_path / "server-agent.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "server_agent.cli", "serve", "--config", str(path)],
                                   cwd=PROJECT, env=env, stderr=log)
    try:
        ready = receive(manager)
        assert ready == {"READY": "1", "STATUS": "2 workers serving"} and accepts(ports["listen"])
        logged = (tmp_path / "server-agent.log").read_text()
        assert logged.count("ready on 127.0.0.1") == 2  # both workers, before the supervisor said so
        process.send_signal(signal.SIGHUP)
        assert receive(manager)["RELOADING"] == "1"
        assert receive(manager)["READY"] == "1"
        assert (tmp_path / "server-agent.log").read_text().count("configuration reloaded: generation 2") == 2
        process.send_signal(signal.SIGTERM)
        assert receive(manager) == {"STOPPING": "1"}
        assert process.wait(40) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        redis.stop()
