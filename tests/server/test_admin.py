"""The admin listener's parts (issue 15 item 3): readiness caching, the HTTP exchange, the metering of
policies, certificate expiry, the decision-log check and the configuration."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent import certs
from dicomwire.association import Side
from dicomwire.commands import Notice, NoticeKind
from dicomwire.dimse import CommandSet
from dicomwire.errors import RejectReason
from dicomwire.policy import ConnectionInfo, Ending, Forwarding
from dicomwire.questions import Permit, Refuse, RejectAssociation, RequestQuestion
from server_agent.admin import AdminServer, Answer, CheckResult, Readiness, readiness_answer, routes, throttled
from server_agent.decisions import DecisionLog
from server_agent.metrics import CertificateExpiry, MeteredFactory, RelayMetrics
from server_agent.monitoring import check_decision_log
from tests.server.test_config import _config
from tomlconf import ConfigError
from tomlconf.admin import AdminSection


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_remote_check_is_asked_once_per_interval_whatever_the_number_of_callers() -> None:
    clock, calls = Clock(), []

    async def pdp() -> CheckResult:
        calls.append(clock.now)
        await asyncio.sleep(0.01)  # every caller arrives while the one probe is under way
        return CheckResult(ok=True, detail="answered")

    readiness = Readiness(local={}, remote={"pdp": pdp}, interval=5.0, timeout=1.0, clock=clock)

    async def main() -> None:
        results = await asyncio.gather(*(readiness.report() for _ in range(50)))
        assert all(r["pdp"].ok for r in results)
        clock.now += 4.9
        await readiness.report()
        assert len(calls) == 1  # a load balancer checking every second costs the PDP one request per 5 s
        clock.now += 0.2
        await readiness.report()
        await asyncio.sleep(0.05)  # refreshed in the background
        assert len(calls) == 2
    asyncio.run(main())


def test_a_stale_result_is_given_while_it_is_refreshed_but_never_past_interval_plus_timeout() -> None:
    clock, answers = Clock(), [CheckResult(ok=True, detail="first"), CheckResult(ok=False, detail="second")]

    async def idp() -> CheckResult:
        await asyncio.sleep(0.1)
        return answers.pop(0)

    readiness = Readiness(local={}, remote={"idp": idp}, interval=5.0, timeout=1.0, clock=clock)

    async def main() -> None:
        assert (await readiness.report())["idp"].detail == "first"  # nothing known yet: the caller waits
        clock.now += 5.5
        started = asyncio.get_running_loop().time()
        assert (await readiness.report())["idp"].detail == "first"  # at once, while "second" is fetched
        assert asyncio.get_running_loop().time() - started < 0.05
        await asyncio.sleep(0.2)
        assert (await readiness.report())["idp"].detail == "second"
        answers.append(CheckResult(ok=True, detail="third"))
        clock.now += 6.5  # older than interval + timeout: not given, the caller waits for the probe
        assert (await readiness.report())["idp"].detail == "third"
    asyncio.run(main())


def test_a_check_that_hangs_or_raises_fails_and_says_no_more_than_its_own_words() -> None:
    async def hangs() -> CheckResult:
        await asyncio.sleep(60)
        return CheckResult(ok=True)

    async def raises() -> CheckResult:
        raise RuntimeError("secret-token-value")

    readiness = Readiness(local={"local": lambda: CheckResult(ok=True, detail="fine")},
                          remote={"idp": hangs, "pdp": raises}, interval=5.0, timeout=0.05)
    answer = readiness_answer(asyncio.run(readiness.report()))
    assert answer.status == 503
    assert b'"failed": [\n  "idp",\n  "pdp"\n ]' in answer.body
    assert b"no answer within 0.05 s" in answer.body and b"secret-token-value" not in answer.body


def test_after_a_renew_nothing_the_old_servers_said_is_given_and_a_late_old_probe_is_not_kept() -> None:
    """A reload replaces the servers asked: a result about the old ones, kept or still under way, never
    answers a report made after it (issue 15 item 1)."""
    clock, server = Clock(), {"name": "old"}
    release = asyncio.Event()

    async def idp() -> CheckResult:
        asked = server["name"]
        if asked == "old-slow":
            await release.wait()
        return CheckResult(ok=asked != "new", detail=asked)

    readiness = Readiness(local={}, remote={"idp": idp}, interval=60.0, timeout=5.0, clock=clock)

    async def main() -> None:
        assert (await readiness.report())["idp"].detail == "old"  # kept a minute
        server["name"] = "old-slow"
        readiness.renew()
        slow = asyncio.ensure_future(readiness.report())  # a caller before the reload, its probe under way
        await asyncio.sleep(0.01)
        server["name"] = "new"
        under_way = readiness.renew()
        assert len(under_way) == 1
        fresh = await readiness.report()  # after the reload: a new probe, not the one under way
        assert fresh["idp"].detail == "new" and not fresh["idp"].ok
        release.set()
        assert (await slow)["idp"].detail == "old-slow"  # its own caller still gets its answer
        await asyncio.wait(under_way)
        assert (await readiness.report())["idp"].detail == "new"  # the late old answer was not kept
    asyncio.run(main())


def test_a_throttled_local_check_runs_at_most_once_per_period() -> None:
    clock, runs = Clock(), []
    check = throttled(lambda: runs.append(clock.now) or CheckResult(ok=len(runs) == 1), 1.0, clock)
    assert check().ok and check().ok and runs == [1000.0]
    clock.now += 1.0
    assert not check().ok and len(runs) == 2


def test_ready_is_200_only_when_every_check_passed() -> None:
    assert readiness_answer({"a": CheckResult(ok=True), "b": CheckResult(ok=True)}).status == 200
    assert readiness_answer({"a": CheckResult(ok=True), "b": CheckResult(ok=False)}).status == 503


async def _exchange(port: int, request: bytes, *, byte_by_byte: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if byte_by_byte:
        for n in range(len(request)):
            writer.write(request[n:n + 1])
            await writer.drain()
    else:
        writer.write(request)
    answer = await reader.read()
    writer.close()
    return answer


def test_the_listener_answers_get_and_head_whole_or_byte_by_byte_and_refuses_the_rest() -> None:
    async def ok() -> Answer:
        return Answer(status=200, body=b'{"status": "alive"}\n')

    async def main() -> None:
        server = AdminServer({b"/healthz": ok}, "127.0.0.1", 0)
        await server.start()
        port = server.address[1]
        get = b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
        for whole in (await _exchange(port, get), await _exchange(port, get, byte_by_byte=True),
                      await _exchange(port, get + b"GET /healthz HTTP/1.1\r\n")):  # trailing bytes: one answer
            assert whole.startswith(b"HTTP/1.1 200 ") and whole.endswith(b'{"status": "alive"}\n')
            assert whole.count(b"HTTP/1.1") == 1
        head = await _exchange(port, b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        post = await _exchange(port, b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        assert post.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"allow: get, head" in post.lower()
        assert (await _exchange(port, b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
        assert await _exchange(port, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n") == b""
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # a TCP check: connect, close
        writer.close()
        await asyncio.sleep(0.05)
        assert server.listener.open == 0  # nothing left behind
        assert (await _exchange(port, get)).startswith(b"HTTP/1.1 200 ")
        await server.stop()
    asyncio.run(main())


def test_metrics_are_the_registry_in_text_format() -> None:
    registry = CollectorRegistry()
    readiness = Readiness(local={"x": lambda: CheckResult(ok=False)}, remote={}, interval=1, timeout=1)
    seen = []
    paths = routes(readiness, registry, lambda: seen.append(readiness.last))
    answer = asyncio.run(paths[b"/metrics"]())
    assert answer.status == 200 and answer.content_type.startswith("text/plain; version=0.0.4")
    assert seen == [{"x": CheckResult(ok=False)}]  # the check gauges are refreshed before each scrape
    assert asyncio.run(paths[b"/readyz"]()).status == 503


class _Policy(Forwarding):
    def __init__(self, verdicts: dict[str, object]) -> None:
        self.verdicts = verdicts
        self.closed: list[Ending] = []

    def associate(self, question: object) -> object:  # type: ignore[override]
        return self.verdicts["associate"]

    def request(self, question: object) -> object:  # type: ignore[override]
        verdict = self.verdicts["request"]
        if isinstance(verdict, Exception):
            async def fails() -> object:
                raise verdict
            return fails()
        return verdict

    def close(self, ending: Ending) -> None:
        self.closed.append(ending)


class _Factory:
    asks = None

    def __init__(self, policy: _Policy) -> None:
        self.policy = policy

    def open(self, connection: ConnectionInfo) -> _Policy:
        return self.policy


def _request(field: int) -> RequestQuestion:
    return RequestQuestion(side=Side.CLIENT, context_id=1, abstract_syntax="1.2", transfer_syntax="1.2.840.10008.1.2",
                           command=CommandSet({}, b"", command_field=field), data_set=b"", data_set_complete=True)


def _samples(metrics: RelayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples}


def test_metered_policies_count_verdicts_by_enum_and_change_nothing() -> None:
    metrics = RelayMetrics("server", "GW1")
    reject = RejectAssociation.transient("busy", RejectReason.LOCAL_LIMIT_EXCEEDED)
    inner = _Policy({"associate": reject, "request": Refuse(comment="no")})
    factory = MeteredFactory(_Factory(inner), metrics)
    assert factory.asks is None
    policy = factory.open(ConnectionInfo(association_id="1", peer=None, local=None, listener="main"))
    assert factory.outer(inner) is policy  # what RelayServer.end looks for when a session ends
    assert policy.associate(object()) is reject  # type: ignore[arg-type]
    assert isinstance(policy.request(_request(0x0020)), Refuse)
    assert isinstance(policy.request(_request(0x7777)), Refuse)  # a command field of the peer's invention
    policy.notice(Notice(kind=NoticeKind.MALFORMED, side=Side.CLIENT, detail="FINDSCU sent junk"))
    policy.close(Ending(reason="rejected", established=False, bytes_in={Side.CLIENT: 300}))
    assert factory.outer(inner) is inner and inner.closed  # forgotten once closed
    samples = _samples(metrics)
    key = frozenset({"listener": "main", "result": "rejected", "reason": "local_limit_exceeded"}.items())
    assert samples[("dicom_agent_associations_total", key)] == 1
    assert samples[("dicom_agent_requests_total", frozenset(
        {"listener": "main", "command": "C-FIND", "verdict": "refuse"}.items()))] == 1
    assert samples[("dicom_agent_requests_total", frozenset(
        {"listener": "main", "command": "other", "verdict": "refuse"}.items()))] == 1
    assert samples[("dicom_agent_relay_notices_total", frozenset({"listener": "main", "kind": "malformed"}.items()))]
    assert samples[("dicom_agent_relayed_bytes_total", frozenset(
        {"listener": "main", "direction": "from_client"}.items()))] == 300
    assert not any("FINDSCU" in value or "junk" in value for _, labels in samples for _, value in labels)


def test_one_policy_for_several_associations_is_closed_for_each() -> None:
    metrics = RelayMetrics("server", "GW1")
    inner = _Policy({"associate": Permit(), "request": Permit()})  # a factory that hands out itself
    factory = MeteredFactory(_Factory(inner), metrics)
    first, second = (factory.open(ConnectionInfo(association_id=n, peer=None, local=None, listener="main"))
                     for n in "12")
    assert factory.outer(inner) is second
    first.close(Ending(reason="released", established=True))
    assert factory.outer(inner) is second  # still the live one
    second.close(Ending(reason="released", established=True))
    assert len(inner.closed) == 2 and factory.outer(inner) is inner


def test_a_verdict_awaited_is_counted_when_known_and_a_failing_policy_as_error() -> None:
    metrics = RelayMetrics("workstation", "WS1")
    inner = _Policy({"associate": Permit(), "request": RuntimeError("down")})
    policy = MeteredFactory(_Factory(inner), metrics).open(
        ConnectionInfo(association_id="2", peer=None, local=None, listener="apps"))
    pending = policy.request(_request(0x0021))
    with pytest.raises(RuntimeError):
        asyncio.run(pending)  # type: ignore[arg-type]
    assert _samples(metrics)[("dicom_agent_requests_total", frozenset(
        {"listener": "apps", "command": "C-MOVE", "verdict": "error"}.items()))] == 1


def test_certificate_expiry_in_days_per_configured_key(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    certificate, _ = certs.issue(tmp_path, "gw1")
    now = dt.datetime.now(dt.UTC)
    registry = CollectorRegistry()
    registry.register(CertificateExpiry(lambda: {"tls.certificate": certificate, "tls.ca": tmp_path / "ca.crt",
                                                 "missing": tmp_path / "none.crt"}, clock=lambda: now))
    samples = {tuple(s.labels.values()): s.value for f in text_string_to_metric_families(
        generate_latest(registry).decode()) for s in f.samples}
    expected = {key: (x509_expiry(path) - now).total_seconds() / 86400
                for key, path in (("tls.certificate", certificate), ("tls.ca", tmp_path / "ca.crt"))}
    assert samples == pytest.approx({(k,): v for k, v in expected.items()})


def x509_expiry(path: Path) -> dt.datetime:
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def test_the_decision_log_check_wants_health_and_our_writer_lock(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl", b"k" * 32, checkpoint_interval=60)
    try:
        assert check_decision_log(log).ok
        (tmp_path / "decisions.jsonl.lock").write_text("1\n")  # the lock file names another process
        result = check_decision_log(log)
        assert not result.ok and "writer lock" in result.detail
    finally:
        log.close()
    result = check_decision_log(log)
    assert not result.ok  # closed: the lock is released, this process no longer writes the log


def test_the_admin_listener_stays_on_loopback_unless_exposed_on_purpose() -> None:
    assert AdminSection(listen=("127.0.0.1", 9100)).check_interval == 5.0
    with pytest.raises((ConfigError, ValueError), match="expose = true"):
        AdminSection(listen=("0.0.0.0", 9100))
    assert AdminSection(listen=("0.0.0.0", 9100), expose=True).expose


@pytest.mark.parametrize("demo", ["server-agent.toml", "workstation.toml"])
def test_the_demo_files_show_the_admin_table_as_the_schema_reads_it(demo: str) -> None:
    import re
    import tomllib

    text = (Path(__file__).parents[2] / "configs" / "demo" / demo).read_text()
    block = re.search(r"^# \[admin\].*?\n\n", text, re.MULTILINE | re.DOTALL)
    assert block is not None
    table = tomllib.loads(re.sub(r"^# ", "", block.group(0), flags=re.MULTILINE))["admin"]
    admin = AdminSection.model_validate(table)
    assert admin.listen[0] == "127.0.0.1" and admin.check_interval == AdminSection.model_fields[
        "check_interval"].default  # the default the file shows is the default


def test_check_config_names_a_busy_admin_port() -> None:
    import socket
    from argparse import Namespace

    from server_agent.checks import StepFailed, _listen_free
    from server_agent.config import SessionsSection

    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        config = Namespace(listen=("127.0.0.1", 0), return_listen=("127.0.0.1", 0), plain_listen=None,
                           sessions=SessionsSection(), admin=AdminSection(listen=("127.0.0.1", taken)))
        with pytest.raises(StepFailed, match=f"admin listener 127.0.0.1:{taken}"):
            _listen_free(config)  # type: ignore[arg-type]
    assert "admin listener" in _listen_free(config)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "gw1", ["127.0.0.1"])
    return folder


def test_each_worker_answers_alone_on_its_own_port_as_well(tmp_path: Path, pki: Path) -> None:
    """``[server] workers``: the shared port reaches any worker; worker I's own port reaches only it."""
    import requests

    from devtools.peers import free_port
    from server_agent.config import load
    from server_agent.service import ServerAgent
    from server_agent.supervisor import worker_config

    shared, base = free_port(), free_port()
    path = _config(tmp_path, pki, {"admin": {"listen": f"127.0.0.1:{shared}", "worker_ports": base}})
    config = worker_config(load(path), 1)
    assert config.admin is not None and config.admin.worker_listen == ("127.0.0.1", base + 1)
    agent = ServerAgent(config)

    async def main() -> tuple[str, str]:
        assert agent.admin is not None
        await agent.admin.start()
        try:
            own = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{base + 1}/metrics", timeout=10)
            any_ = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{shared}/healthz", timeout=10)
            return own.text, any_.text
        finally:
            await agent.admin.stop()
            await agent.http.aclose()

    try:
        metrics, health = asyncio.run(main())
    finally:
        agent.decisions.close()
    assert 'worker="1"' in metrics and "dicom_agent_info" in metrics and "alive" in health
    assert load(path).admin.worker is None  # type: ignore[union-attr]  # a file cannot say which worker it is
