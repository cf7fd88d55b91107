""":class:`~server_agent.shared.SharedState` in Redis: what the workers and instances of a site share.

Every update that reads before it writes is one Lua script (Redis runs each atomically, so two
instances cannot both take a move's last announced sub-operation, nor both let the fifth failed login
through); times are Redis's own clock (``TIME``), so hosts with drifting clocks agree on expiry. Keys
(all under the site's prefix): ``move:ID`` (a hash: the record, announced, relayed), ``dest:DIGEST`` (a
sorted set of the destination's move ids by expiry), ``thr:SOURCE`` and ``blk:SOURCE`` (the login
throttle), ``end:sid:DIGEST`` and ``end:sub:DIGEST`` (ended sessions). Each has a TTL: nothing outlives
its move timeout, throttle window or ``remember``. Peer-chosen strings are digested before they become
keys (bounded key sizes); move records are bounded by ``MAX_MOVE_BYTES``.

Fail closed: an operation that fails or takes longer than ``[shared] timeout`` raises
:class:`SharedUnavailable` and sets :attr:`RedisShared.problem` until a ping succeeds again (a
background task pings every second), so the agent refuses new associations, return-path stores and
logins while Redis is out of reach, and says why once in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from audit.events import Reason

from .config import ThrottleConfig
from .shared import (
    MAX_MOVE_BYTES,
    MAX_MOVES_PER_DESTINATION,
    Claim,
    MoveRecord,
    MoveRefused,
    SharedUnavailable,
    choose,
    digest,
)
from .shared_config import SharedSection

log = logging.getLogger("server_agent.shared")
T = TypeVar("T")
RECORDS_KEPT = 1024  # move records kept per process (read-only copies; a live one gone is read again)

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
# KEYS: dest, move. ARGV: id, record, timeout ms, max per destination. 1 added, 0 full.
_ADD = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'rec', ARGV[2], 'announced', -1, 'relayed', 0)
redis.call('PEXPIREAT', KEYS[2], expires)
redis.call('ZADD', KEYS[1], expires, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIREAT', KEYS[1], expires) end
return 1"""
# KEYS: dest. The live moves' ids.
_LIVE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)"""
# KEYS: move. 1 counted, 0 no room (announced reached), -1 gone.
_CLAIM = """
local counts = redis.call('HMGET', KEYS[1], 'announced', 'relayed')
if not counts[1] then return -1 end
local announced, relayed = tonumber(counts[1]), tonumber(counts[2])
if announced >= 0 and relayed >= announced then return 0 end
redis.call('HINCRBY', KEYS[1], 'relayed', 1)
return 1"""
# KEYS: move. ARGV: total announced (the largest seen counts).
_RESPOND = """
local announced = tonumber(redis.call('HGET', KEYS[1], 'announced'))
if announced == nil then return 0 end
if tonumber(ARGV[1]) > announced then redis.call('HSET', KEYS[1], 'announced', ARGV[1]) end
return 1"""
# KEYS: count, refused. ARGV: max failures, window ms, block ms. -1 admitted, else ms to wait.
_ADMIT = _NOW + """
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return wait end
local c = redis.call('HMGET', KEYS[1], 'since', 'failures', 'in_flight')
local since, failures, in_flight = tonumber(c[1]) or now, tonumber(c[2]) or 0, tonumber(c[3]) or 0
local window = tonumber(ARGV[2])
if in_flight == 0 and now - since > window then since, failures = now, 0 end
if failures + in_flight >= tonumber(ARGV[1]) then return math.max(1000, since + window - now) end
redis.call('HSET', KEYS[1], 'since', since, 'failures', failures, 'in_flight', in_flight + 1)
redis.call('PEXPIRE', KEYS[1], 2 * window + 60000)
return -1"""
# KEYS: count, refused. ARGV: failed (0/1), max failures, window ms, block ms. 1 when now refused.
_SETTLE = _NOW + """
local c = redis.call('HMGET', KEYS[1], 'since', 'failures', 'in_flight')
if not c[1] then return 0 end
local since, failures, in_flight = tonumber(c[1]), tonumber(c[2]), math.max(0, tonumber(c[3]) - 1)
local refused = 0
if ARGV[1] == '1' then
  if now - since > tonumber(ARGV[3]) then since, failures = now, 0 end
  failures = failures + 1
  if failures >= tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
    since, failures, refused = now, 0, 1
  end
end
if failures == 0 and in_flight == 0 then redis.call('DEL', KEYS[1])
else redis.call('HSET', KEYS[1], 'since', since, 'failures', failures, 'in_flight', in_flight) end
return refused"""
# KEYS: the ended key. ARGV: issued at (ms), remember ms. Keeps the latest logout's iat.
_END = """
local earlier = tonumber(redis.call('GET', KEYS[1]) or '-1')
redis.call('SET', KEYS[1], math.max(earlier, tonumber(ARGV[1])), 'PX', ARGV[2])
return 1"""


def connect(section: SharedSection) -> aioredis.Redis:
    """A client for ``[shared]``: the password from its file, TLS files for ``rediss://``."""
    assert section.redis is not None
    options: dict[str, Any] = {"socket_timeout": section.timeout, "socket_connect_timeout": section.timeout,
                               "health_check_interval": 0, "retry_on_timeout": False}
    if section.password_file is not None:
        options["password"] = section.password_file.read_text(encoding="utf-8").strip()
    if section.username is not None:
        options["username"] = section.username
    if section.redis.startswith("rediss://"):
        options.update(ssl_ca_certs=str(section.ca_file) if section.ca_file else None,
                       ssl_certfile=str(section.certificate) if section.certificate else None,
                       ssl_keyfile=str(section.key) if section.key else None, ssl_cert_reqs="required")
    return aioredis.Redis.from_url(section.redis, **options)


class RedisShared:
    """:class:`~server_agent.shared.SharedState` for several processes and hosts (``[shared] redis``)."""

    def __init__(self, client: aioredis.Redis, prefix: str, throttle: ThrottleConfig, *, timeout: float = 1.0,
                 ping_every: float = 1.0) -> None:
        self._redis = client
        self._prefix = prefix
        self._throttle = throttle
        self._timeout = timeout
        self._ping_every = ping_every
        self._problem: str | None = None
        self._scripts = {name: client.register_script(text) for name, text in
                         (("add", _ADD), ("live", _LIVE), ("claim", _CLAIM), ("respond", _RESPOND),
                          ("admit", _ADMIT), ("settle", _SETTLE), ("end", _END))}
        self._pinger: asyncio.Task[None] | None = None
        self._records: OrderedDict[str, MoveRecord] = OrderedDict()  # by id, oldest first
        self._listener: asyncio.Task[None] | None = None
        self._process = uuid.uuid4().hex  # this process on the logout channel (its own messages ignored)
        # Called with (sid, sub, issued_at) for a logout another process received: end ours of it now.
        self.on_logout: Callable[[str, str, float], object] | None = None

    @property
    def problem(self) -> str | None:
        return self._problem

    def start(self) -> None:
        """Ping in the background: a Redis that went away is noticed before the next request needs it."""
        if self._pinger is None:
            self._pinger = asyncio.get_running_loop().create_task(self._ping_loop(), name="shared-ping")
        if self._listener is None and self.on_logout is not None:
            self._listener = asyncio.get_running_loop().create_task(self._logouts(), name="shared-logouts")

    async def _logouts(self) -> None:
        """Logouts published by the other processes (OIDC Back-Channel Logout 1.0 section 2.7: every
        association of the session ends, wherever it is). Resubscribes after Redis comes back."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._key("logouts"))
                    async for message in pubsub.listen():
                        self._logout_message(message)
            except (RedisError, OSError) as error:
                log.warning("shared state: logout channel lost (%s); resubscribing", error)
            await asyncio.sleep(self._ping_every)

    def _logout_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message" or self.on_logout is None:
            return
        try:
            data = orjson.loads(message["data"])
            sender, sid, sub, issued = data["from"], str(data["sid"])[:256], str(data["sub"])[:256], float(data["iat"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("shared state: unreadable message on the logout channel ignored")
            return
        if sender != self._process:
            self.on_logout(sid, sub, issued)

    async def check(self) -> str | None:
        """One ping now; the problem it found (also kept in :attr:`problem`), or None."""
        with contextlib.suppress(SharedUnavailable):
            await self._run(self._redis.ping())
        return self._problem

    async def _ping_loop(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._ping_every)

    async def _run(self, operation: Awaitable[T]) -> T:
        try:
            result = await asyncio.wait_for(operation, self._timeout)
        except (RedisError, OSError, TimeoutError) as error:
            # An answer that is a refusal (an ACL's NOPERM, a wrong password) is said so: it is not fixed
            # by waiting, as an unreachable Redis is.
            refused = isinstance(error, ResponseError | AuthenticationError)
            problem = f"Redis {'refused' if refused else 'unreachable'}: {type(error).__name__}: {str(error)[:200]}"
            if self._problem is None:
                log.error("shared state: %s; refusing what needs it until it answers again", problem)
            self._problem = problem
            raise SharedUnavailable(problem) from None
        if self._problem is not None:
            log.warning("shared state: Redis answers again")
            self._problem = None
        return result

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._run(self._scripts[name](keys=keys, args=args))

    # ---- moves --------------------------------------------------------------------------------------------
    async def add_move(self, move: MoveRecord, timeout: float) -> None:
        raw = move.dumps()
        if len(raw) > MAX_MOVE_BYTES:
            raise MoveRefused(f"the C-MOVE names more than {MAX_MOVE_BYTES // 1024} KiB of keys")
        added = await self._script("add", [self._key("dest", digest(move.destination)), self._key("move", move.id)],
                                   [move.id, raw, max(1, int(timeout * 1000)), MAX_MOVES_PER_DESTINATION])
        if not added:
            raise MoveRefused(f"{MAX_MOVES_PER_DESTINATION} C-MOVEs already outstanding for {move.destination!r}")

    async def respond(self, move: MoveRecord, announced: int | None, final: bool) -> None:
        if final:
            await self.remove_move(move)
        elif announced is not None:
            await self._script("respond", [self._key("move", move.id)], [announced])

    async def remove_move(self, move: MoveRecord) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._key("move", move.id))
        pipe.zrem(self._key("dest", digest(move.destination)), move.id)
        await self._run(pipe.execute())

    async def _moves(self, destination: str) -> list[MoveRecord]:
        """The destination's live moves. A record never changes once written (only its counts do), so
        each is read from Redis once per process and kept (at most ``RECORDS_KEPT``): a study's hundreds
        of sub-operations do not each read its keys again."""
        ids = [i.decode() for i in await self._script("live", [self._key("dest", digest(destination))], [])]
        missing = [i for i in ids if i not in self._records]
        if missing:
            pipe = self._redis.pipeline(transaction=False)
            for move_id in missing:
                pipe.hget(self._key("move", move_id), "rec")
            for raw in await self._run(pipe.execute()):
                if raw:
                    record = MoveRecord.loads(raw)
                    self._records[record.id] = record
            while len(self._records) > RECORDS_KEPT:
                self._records.popitem(last=False)
        return [self._records[i] for i in ids if i in self._records]

    async def move_active(self, destination: str) -> bool:
        return bool(await self._script("live", [self._key("dest", digest(destination))], []))

    async def claim(self, destination: str, originator_ae: str | None, originator_id: int | None,
                    image: Mapping[str, str]) -> Claim:
        covering, reason = choose(await self._moves(destination), originator_ae, originator_id, image)
        for record in covering:
            if await self._script("claim", [self._key("move", record.id)], []) == 1:
                return Claim(move=record, reason=Reason.PDP)
        return Claim(move=None, reason=reason if not covering else Reason.NOT_IN_MOVE)

    # ---- failed logins -----------------------------------------------------------------------------------
    def _throttle_keys(self, source: str) -> list[str]:
        from dicomwire.admission import source_key  # one source per IPv4 address or IPv6 /64

        key = digest(source_key(source))
        return [self._key("thr", key), self._key("blk", key)]

    async def admit_login(self, source: str) -> float | None:
        t = self._throttle
        wait = await self._script("admit", self._throttle_keys(source),
                                  [t.max_failures, int(t.window * 1000), int(t.block_seconds * 1000)])
        return None if int(wait) < 0 else int(wait) / 1000

    async def settle_login(self, source: str, *, failed: bool) -> bool:
        t = self._throttle
        refused = await self._script("settle", self._throttle_keys(source),
                                     ["1" if failed else "0", t.max_failures, int(t.window * 1000),
                                      int(t.block_seconds * 1000)])
        return bool(refused)

    # ---- ended sessions ----------------------------------------------------------------------------------
    async def end_session(self, *, sid: str, sub: str, issued_at: float, remember: float) -> None:
        key = self._key("end", "sid", digest(sid)) if sid else self._key("end", "sub", digest(sub))
        await self._script("end", [key], [int(issued_at * 1000), max(1, int(remember * 1000))])
        await self._run(self._redis.publish(self._key("logouts"), orjson.dumps(
            {"from": self._process, "sid": sid, "sub": sub, "iat": issued_at})))

    async def session_ended(self, *, sid: str, sub: str, issued_at: float) -> bool:
        keys = [self._key("end", "sid", digest(sid)) if sid else self._key("end", "none"),
                self._key("end", "sub", digest(sub)) if sub else self._key("end", "none")]
        by_sid, by_sub = await self._run(self._redis.mget(keys))
        if sid and by_sid is not None:
            return True
        return by_sub is not None and int(issued_at * 1000) <= int(by_sub)

    async def close(self) -> None:
        for task in (self._pinger, self._listener):
            if task is not None:
                task.cancel()
        self._pinger = self._listener = None
        await self._redis.aclose()


__all__ = ["RedisShared", "connect"]
