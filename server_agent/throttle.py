"""The server agent's own throttle of failed identity type 2 logins, per source (issue 13 item 4).

A type-2 identity (PS3.7 D.3.3.7: username and passcode) costs the provider a password hash per
attempt; the provider's lockout counts per user and per client, and every type-2 login arrives
through the agent's one client, so without this a guesser would lock every user out through us.
Here, after ``max_failures`` failed password grants from one source within ``window`` seconds, that
source's type-2 attempts are refused at once for ``block_seconds`` (no provider call at all).

Choices an attacker would probe:

* **Sources.** An IPv4 address is one source; an IPv6 address counts by its /64, the prefix one
  subscriber is given (holding 2^64 addresses must not buy 2^64 counters); an IPv4-mapped IPv6
  address is the IPv4 address.
* **Parallel attempts.** Attempts still waiting for the provider count as failures in advance, so
  100 associations opened at once from one source get ``max_failures`` provider calls, not 100.
* **No reset on success.** A success leaves the count alone: one known password from a source
  must not buy unlimited guesses at another user's.
* **Bounded memory.** At most ``max_sources`` sources are counted; when full, the counter least
  recently touched (and not in flight) is forgotten, which only helps an attacker who already
  holds that many sources and could guess from them directly. A refused source is never forgotten
  early: refusals live in their own table, which a flood of new sources cannot shorten. If that
  table is full (``max_sources`` sources refused at once: a distributed attack), every type-2
  attempt is refused until refusals expire (fail closed; type 5 tokens are unaffected).

One instance per event loop (no locks). Sharing counts between worker processes and hosts
belongs to the shared store (Redis) of ``docs/architecture.md``'s scale section.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dicomwire.admission import source_key

from .config import ThrottleConfig

log = logging.getLogger("server_agent.throttle")


@dataclass(slots=True)
class _Count:
    since: float  # start of the current window
    failures: int = 0
    in_flight: int = 0


class LoginThrottle:
    def __init__(self, config: ThrottleConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._counts: OrderedDict[str, _Count] = OrderedDict()  # least recently touched first
        self._refused: OrderedDict[str, float] = OrderedDict()  # source -> until; in order of expiry

    def admit(self, source: str) -> float | None:
        """None: one attempt from ``source`` may go to the provider (call :meth:`settle` after it);
        else the seconds until this source may try again."""
        now = self._clock()
        key = source_key(source)
        self._expire(now)
        until = self._refused.get(key)
        if until is not None and until > now:
            return until - now
        self._refused.pop(key, None)
        if len(self._refused) >= self.config.max_sources:
            return self.config.block_seconds  # table of refusals full: fail closed for everyone
        count = self._counts.get(key)
        if count is None:
            if not self._make_room():
                return self.config.window
            count = self._counts[key] = _Count(since=now)
        elif count.in_flight == 0 and now - count.since > self.config.window:
            count.since, count.failures = now, 0
        if count.failures + count.in_flight >= self.config.max_failures:
            return max(1.0, count.since + self.config.window - now)
        count.in_flight += 1
        self._counts.move_to_end(key)
        return None

    def settle(self, source: str, *, failed: bool) -> None:
        """The outcome of an attempt :meth:`admit` let through."""
        now = self._clock()
        key = source_key(source)
        count = self._counts.get(key)
        if count is None:  # pragma: no cover - an admitted source is never forgotten while in flight
            return
        count.in_flight = max(0, count.in_flight - 1)
        if failed:
            if now - count.since > self.config.window:
                count.since, count.failures = now, 0
            count.failures += 1
            if count.failures >= self.config.max_failures:
                self._refused[key] = now + self.config.block_seconds
                self._refused.move_to_end(key)  # kept in order of expiry
                log.warning("identity type 2: %d failed logins from %s within %.0f s: refused for %.0f s",
                            count.failures, key, self.config.window, self.config.block_seconds)
                count.since, count.failures = now, 0
        if count.failures == 0 and count.in_flight == 0:
            del self._counts[key]

    def _expire(self, now: float) -> None:
        while self._refused:
            key, until = next(iter(self._refused.items()))
            if until > now:
                break
            del self._refused[key]
        while self._counts:
            key, count = next(iter(self._counts.items()))
            if count.in_flight or now - count.since <= self.config.window:
                break
            del self._counts[key]

    def _make_room(self) -> bool:
        if len(self._counts) < self.config.max_sources:
            return True
        for key, count in self._counts.items():
            if count.in_flight == 0:
                del self._counts[key]
                return True
        return False

    @property
    def sizes(self) -> tuple[int, int]:
        """(sources counted, sources refused): for tests and metrics."""
        return len(self._counts), len(self._refused)


__all__ = ["LoginThrottle", "source_key"]
