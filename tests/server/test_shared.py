"""The shared-state contract (server_agent.shared): the in-process store and Redis pass the same tests.

The Redis one runs against a real redis-server started on a free port. What is asserted is what the
agent then does: a sub-operation is accepted or refused (and why), a login admitted or throttled, a
session's token refused; and, for Redis, that two processes see one state and that an unreachable
Redis refuses (fail closed).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from audit.events import Reason
from devtools.redis_server import REDIS_SERVER, RedisServer
from server_agent.config import ThrottleConfig
from server_agent.shared import (
    MAX_MOVES_PER_DESTINATION,
    LocalShared,
    MoveRecord,
    MoveRefused,
    SharedState,
    SharedUnavailable,
)
from server_agent.shared_config import SharedSection
from server_agent.shared_redis import RedisShared, connect

T = TypeVar("T")
THROTTLE = ThrottleConfig(max_failures=3, window=60.0, block_seconds=0.6, max_sources=100)
STUDY, OTHER = "1.2.3.4", "1.2.3.99"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists() and not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed: run `make test` (APT_PACKAGES)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


_PREFIXES = iter(range(1_000_000))


def redis_store(server: RedisServer, prefix: str | None = None) -> RedisShared:
    section = SharedSection(redis=server.url, timeout=1.0)
    return RedisShared(connect(section), prefix or f"test{next(_PREFIXES)}:", THROTTLE)


Factory = Callable[[], SharedState]


@pytest.fixture(params=["local", "redis"])
def make(request: pytest.FixtureRequest) -> Factory:
    if request.param == "local":
        return lambda: LocalShared(THROTTLE)
    server = request.getfixturevalue("redis_server")
    prefix = f"test{next(_PREFIXES)}:"  # every store of one test shares one prefix: one site
    return lambda: redis_store(server, prefix)


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())


def move(number: int = 1, *, who: str = "alice", level: str = "STUDY", study: str = STUDY,
         destination: str = "VIEWER1@WS1", message_id: int | None = 7) -> MoveRecord:
    return MoveRecord(id=f"m{number}", destination=destination, calling_ae="VIEWER1@WS1", message_id=message_id,
                      who=("user", who), level=level,
                      members={"patient_id": frozenset({"P1"}), "study_instance_uid": frozenset(study.split("\\"))},
                      owner="test", subject={"kind": "user", "id": who, "username": who})


IMAGE = {"patient_id": "P1", "study_instance_uid": STUDY, "sop_instance_uid": "1.2.3.4.5"}


def test_a_sub_operation_of_an_outstanding_move_is_counted_until_the_announced_number(make: Factory) -> None:
    async def body() -> list[Any]:
        store = make()
        seen: list[Any] = [await store.move_active("VIEWER1@WS1")]
        await store.add_move(move(), timeout=30)
        seen.append(await store.move_active("VIEWER1@WS1"))
        first = await store.claim("VIEWER1@WS1", "VIEWER1@WS1", 7, IMAGE)
        seen.append(first.move.id if first.move else first.reason)
        await store.respond(move(), announced=2, final=False)
        for _ in range(2):
            claim = await store.claim("VIEWER1@WS1", "VIEWER1@WS1", 7, IMAGE)
            seen.append(claim.move.id if claim.move else claim.reason)
        await store.respond(move(), announced=None, final=True)
        seen.append(await store.move_active("VIEWER1@WS1"))
        seen.append((await store.claim("VIEWER1@WS1", "VIEWER1@WS1", 7, IMAGE)).reason)
        await store.close()
        return seen

    assert run(body) == [False, True, "m1", "m1", Reason.NOT_IN_MOVE, False, Reason.NO_MATCHING_MOVE]


def test_an_image_the_move_did_not_ask_for_or_from_another_originator_is_refused(make: Factory) -> None:
    async def body() -> list[Reason]:
        store = make()
        await store.add_move(move(), timeout=30)
        reasons = [(await store.claim("VIEWER1@WS1", "VIEWER1@WS1", 7, {**IMAGE, "study_instance_uid": OTHER})).reason,
                   (await store.claim("VIEWER1@WS1", "OTHER@WS1", 7, IMAGE)).reason,
                   (await store.claim("VIEWER1@WS1", "VIEWER1@WS1", 8, IMAGE)).reason,
                   (await store.claim("VIEWER2@WS1", "VIEWER1@WS1", 7, IMAGE)).reason]
        await store.close()
        return reasons

    assert run(body) == [Reason.NOT_IN_MOVE, Reason.NO_MATCHING_MOVE, Reason.NO_MATCHING_MOVE,
                         Reason.NO_MATCHING_MOVE]


def test_moves_of_two_users_that_a_sub_operation_could_belong_to_are_ambiguous(make: Factory) -> None:
    async def body() -> tuple[Reason, Reason]:
        store = make()
        await store.add_move(move(1, who="alice"), timeout=30)
        await store.add_move(move(2, who="alice", study=OTHER), timeout=30)
        one_user = (await store.claim("VIEWER1@WS1", None, None, {**IMAGE, "study_instance_uid": OTHER})).reason
        await store.add_move(move(3, who="bob"), timeout=30)
        two_users = (await store.claim("VIEWER1@WS1", None, None, IMAGE)).reason
        await store.close()
        return one_user, two_users

    assert run(body) == (Reason.PDP, Reason.AMBIGUOUS_MOVE)


def test_a_move_expires_at_its_timeout_and_a_destination_holds_a_bounded_number(make: Factory) -> None:
    async def body() -> tuple[bool, bool, str]:
        store = make()
        await store.add_move(move(), timeout=0.3)
        before = await store.move_active("VIEWER1@WS1")
        await asyncio.sleep(0.5)
        after = await store.move_active("VIEWER1@WS1")
        for number in range(MAX_MOVES_PER_DESTINATION):
            await store.add_move(move(100 + number, destination="FULL@WS1"), timeout=30)
        try:
            await store.add_move(move(99, destination="FULL@WS1"), timeout=30)
            refused = ""
        except MoveRefused as error:
            refused = str(error)
        await store.close()
        return before, after, refused

    before, after, refused = run(body)
    assert (before, after) == (True, False)
    assert "already outstanding for 'FULL@WS1'" in refused


def test_a_move_naming_too_many_uids_is_refused_not_half_shared(make: Factory) -> None:
    async def body() -> None:
        store = make()
        try:
            huge = "\\".join(f"1.2.840.99999.{n}.{n}.{n}" for n in range(12_000))
            await store.add_move(move(study=huge), timeout=30)
        finally:
            await store.close()

    with pytest.raises(MoveRefused, match="KiB of keys"):
        run(body)


def test_failed_logins_from_one_source_are_throttled_in_flight_ones_counted_in_advance(make: Factory) -> None:
    async def body() -> list[Any]:
        store = make()
        admitted = [await store.admit_login("192.0.2.7") for _ in range(4)]  # 3 in flight: the 4th waits
        refusals = [await store.settle_login("192.0.2.7", failed=True) for _ in range(3)]
        blocked = await store.admit_login("192.0.2.7")
        other = await store.admit_login("192.0.2.8")
        same_64 = [await store.admit_login("2001:db8::1") for _ in range(3)] + [await store.admit_login("2001:db8::2")]
        await asyncio.sleep(0.8)  # block_seconds
        again = await store.admit_login("192.0.2.7")
        await store.close()
        return [admitted, refusals, blocked, other, same_64, again]

    admitted, refusals, blocked, other, same_64, again = run(body)
    assert admitted[:3] == [None, None, None] and admitted[3] is not None and admitted[3] > 0
    assert refusals == [False, False, True]
    assert blocked is not None and 0 < blocked <= 0.6
    assert other is None
    assert same_64[:3] == [None, None, None] and same_64[3] is not None  # one IPv6 /64 is one source
    assert again is None


def test_an_ended_session_refuses_its_tokens_and_a_subjects_logout_its_older_tokens(make: Factory) -> None:
    async def body() -> list[bool]:
        store = make()
        await store.end_session(sid="s-1", sub="", issued_at=1000.0, remember=60)
        await store.end_session(sid="", sub="alice", issued_at=2000.0, remember=60)
        await store.end_session(sid="", sub="alice", issued_at=1500.0, remember=60)  # an older logout: no effect
        seen = [await store.session_ended(sid="s-1", sub="bob", issued_at=5000.0),
                await store.session_ended(sid="s-2", sub="bob", issued_at=5000.0),
                await store.session_ended(sid="", sub="alice", issued_at=2000.0),
                await store.session_ended(sid="", sub="alice", issued_at=2001.0)]
        await store.end_session(sid="s-3", sub="", issued_at=1.0, remember=0.3)
        seen.append(await store.session_ended(sid="s-3", sub="", issued_at=0))
        await asyncio.sleep(0.5)
        seen.append(await store.session_ended(sid="s-3", sub="", issued_at=0))
        await store.close()
        return seen

    assert run(body) == [True, False, True, False, True, False]


# ---- Redis only: one state for several processes, and fail closed -----------------------------------------
def test_two_processes_share_one_move_and_cannot_both_take_its_last_sub_operation(
        redis_server: RedisServer) -> None:
    async def body() -> tuple[list[str], bool]:
        first, second = redis_store(redis_server, "site-a:"), redis_store(redis_server, "site-a:")
        other_site = redis_store(redis_server, "site-b:")
        await first.add_move(move(), timeout=30)
        await first.respond(move(), announced=5, final=False)
        claims = await asyncio.gather(*(store.claim("VIEWER1@WS1", "VIEWER1@WS1", 7, IMAGE)
                                        for store in (first, second) * 4))
        seen_elsewhere = await other_site.move_active("VIEWER1@WS1")
        for store in (first, second, other_site):
            await store.close()
        return [c.move.id if c.move else c.reason.value for c in claims], seen_elsewhere

    claims, seen_elsewhere = run(body)
    assert sorted(claims) == ["m1"] * 5 + ["not_in_move"] * 3
    assert seen_elsewhere is False  # another site's prefix sees nothing of this one


def test_an_unreachable_redis_refuses_everything_that_needs_it_and_says_why(tmp_path: Path) -> None:
    down = RedisServer(tmp_path / "redis")  # never started: its port refuses connections

    async def body() -> tuple[list[str], str | None]:
        store = redis_store(down)
        refused = []
        for call in (lambda: store.move_active("VIEWER1@WS1"), lambda: store.admit_login("192.0.2.7"),
                     lambda: store.add_move(move(), timeout=30),
                     lambda: store.claim("VIEWER1@WS1", None, None, IMAGE),
                     lambda: store.session_ended(sid="s", sub="u", issued_at=0)):
            try:
                await call()
            except SharedUnavailable as error:
                refused.append(error.reason.value)
        problem = store.problem
        await store.close()
        return refused, problem

    refused, problem = run(body)
    assert refused == ["shared_state_unavailable"] * 5
    assert problem is not None and "Redis unreachable" in problem


def test_redis_back_again_clears_the_problem_and_a_password_comes_from_its_file(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret-pass")
    (tmp_path / "password").write_text("s3cret-pass\n")
    section = SharedSection(redis=server.url, password_file=tmp_path / "password", timeout=1.0)

    async def body() -> tuple[str | None, str | None, bool]:
        store = RedisShared(connect(section), "pw:", THROTTLE)
        before = await store.check()
        server.start()
        try:
            after = await store.check()
            await store.add_move(move(), timeout=30)
            active = await store.move_active("VIEWER1@WS1")
        finally:
            await store.close()
            server.stop()
        return before, after, active

    before, after, active = run(body)
    assert before is not None and after is None and active is True


def test_a_password_in_the_url_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="password_file"):
        SharedSection(redis="redis://:hunter2@127.0.0.1:6379/0")


def test_a_logout_one_instance_receives_reaches_the_others_at_once(redis_server: RedisServer) -> None:
    async def body() -> list[tuple[str, str, float]]:
        received, heard = redis_store(redis_server, "site-l:"), redis_store(redis_server, "site-l:")
        elsewhere = redis_store(redis_server, "site-m:")
        told: list[tuple[str, str, float]] = []
        heard.on_logout = received.on_logout = lambda sid, sub, iat: told.append((sid, sub, iat))
        elsewhere.on_logout = lambda sid, sub, iat: told.append(("other site", sub, iat))
        for store in (received, heard, elsewhere):
            store.start()
        await asyncio.sleep(0.3)  # subscribed
        await received.end_session(sid="s-9", sub="alice", issued_at=1234.5, remember=60)
        for _ in range(50):
            if told:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing more comes (not to itself, not to another site)
        for store in (received, heard, elsewhere):
            await store.close()
        return told

    assert run(body) == [("s-9", "alice", 1234.5)]


def test_check_config_says_whether_the_shared_redis_answers(redis_server: RedisServer, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from server_agent.checks import StepFailed, _shared

    def config(url: str) -> Any:
        return SimpleNamespace(shared=SharedSection(redis=url, timeout=1.0), server=SimpleNamespace(site="s"),
                               name="GW1", identity=SimpleNamespace(throttle=THROTTLE))

    assert asyncio.run(_shared(config(redis_server.url))) == "answers, scripts run"
    with pytest.raises(StepFailed, match="Redis unreachable"):
        asyncio.run(_shared(config(RedisServer(tmp_path / "down").url)))


def test_rediss_checks_the_servers_certificate_and_presents_ours(tmp_path: Path) -> None:
    """``rediss://``: Redis's certificate must chain to ``ca_file`` and name the host; ours is presented."""
    from agent import certs

    pki, other = tmp_path / "pki", tmp_path / "other"
    certs.init_ca(pki)
    certs.init_ca(other, name="another CA")
    certs.issue(pki, "redis", ["127.0.0.1"])
    certs.issue(pki, "gw1", ["127.0.0.1"])
    server = RedisServer(tmp_path / "redis", tls=(pki / "redis.crt", pki / "redis.key", pki / "ca.crt")).start()

    def problem(ca: Path, client: bool = True) -> str | None:
        section = SharedSection(redis=server.url, ca_file=ca, certificate=pki / "gw1.crt" if client else None,
                                key=pki / "gw1.key" if client else None, timeout=2.0)

        async def body() -> str | None:
            store = RedisShared(connect(section), "tls:", THROTTLE)
            try:
                return await store.check()
            finally:
                await store.close()

        return asyncio.run(body())

    try:
        assert problem(pki / "ca.crt") is None
        assert "certificate verify failed" in (problem(other / "ca.crt") or "")  # not our Redis
        assert problem(pki / "ca.crt", client=False) is not None  # Redis requires our certificate
    finally:
        server.stop()


ACL_COMMANDS = ("evalsha script|load time hset hmget hget hincrby zadd zrange zcard zremrangebyscore zrem pexpire "
                "pexpireat pttl set get mget del ping publish subscribe multi exec")  # as docs/deployment-ha.md says


def test_the_acl_of_the_deployment_guide_is_all_the_agent_needs(redis_server: RedisServer, tmp_path: Path) -> None:
    """A Redis user limited to the site's prefix and the documented commands runs every operation; it
    sees nothing of another prefix."""
    import redis

    admin = redis.Redis(port=redis_server.port)
    admin.execute_command("ACL", "SETUSER", "gw-agent", "reset", "on", ">agent-secret", "~acl:*", "&acl:*",
                          "-@all", *(f"+{c}" for c in ACL_COMMANDS.split()))
    admin.close()
    (tmp_path / "password").write_text("agent-secret\n")
    section = SharedSection(redis=redis_server.url, username="gw-agent", password_file=tmp_path / "password")

    async def body() -> list[Any]:
        store, other = RedisShared(connect(section), "acl:", THROTTLE), RedisShared(connect(section), "acl:", THROTTLE)
        told: list[str] = []
        other.on_logout = lambda sid, sub, iat: told.append(sid)
        other.start()
        await asyncio.sleep(0.3)
        await store.add_move(move(), timeout=30)
        await store.respond(move(), announced=1, final=False)
        seen: list[Any] = [(await store.claim("VIEWER1@WS1", "VIEWER1@WS1", 7, IMAGE)).reason,
                           await store.admit_login("192.0.2.7"), await store.settle_login("192.0.2.7", failed=True)]
        await store.end_session(sid="s-acl", sub="u", issued_at=1.0, remember=60)
        seen.append(await store.session_ended(sid="s-acl", sub="u", issued_at=1.0))
        await store.respond(move(), announced=None, final=True)
        seen.append(await store.move_active("VIEWER1@WS1"))
        await asyncio.sleep(0.3)
        seen.append(told)
        outside = RedisShared(connect(section), "elsewhere:", THROTTLE)
        try:
            await outside.move_active("VIEWER1@WS1")
        except SharedUnavailable as error:
            seen.append(str(error)[:13])
        for s in (store, other, outside):
            await s.close()
        return seen

    assert run(body) == [Reason.PDP, None, False, True, False, ["s-acl"], "Redis refused"]
