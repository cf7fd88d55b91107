"""The per-source throttle of failed type-2 logins, with a clock advanced by hand."""

from __future__ import annotations

import pytest

from server_agent.config import ThrottleConfig
from server_agent.throttle import LoginThrottle, source_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(**changes: float) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    config = ThrottleConfig(**{"max_failures": 3, "window": 60.0, "block_seconds": 300.0, "max_sources": 8,
                               **changes})  # type: ignore[arg-type]
    return LoginThrottle(config, clock), clock


def _fail(throttle: LoginThrottle, source: str, times: int = 1) -> None:
    for _ in range(times):
        assert throttle.admit(source) is None
        throttle.settle(source, failed=True)


def test_n_failures_refuse_the_source_for_the_block_then_admit_again() -> None:
    throttle, clock = _throttle()
    _fail(throttle, "192.0.2.1", 3)
    assert throttle.admit("192.0.2.1") == 300.0
    assert throttle.admit("192.0.2.2") is None  # another source is not affected
    clock.now += 299
    assert throttle.admit("192.0.2.1") == pytest.approx(1.0)
    clock.now += 1
    assert throttle.admit("192.0.2.1") is None


def test_failures_outside_the_window_do_not_add_up() -> None:
    throttle, clock = _throttle()
    for _ in range(5):
        _fail(throttle, "192.0.2.1", 2)
        clock.now += 61
    assert throttle.admit("192.0.2.1") is None


def test_a_success_does_not_reset_the_count() -> None:
    """One known password from a source must not buy unlimited guesses at another user's."""
    throttle, _ = _throttle()
    for _ in range(2):
        _fail(throttle, "192.0.2.1")
        assert throttle.admit("192.0.2.1") is None
        throttle.settle("192.0.2.1", failed=False)
    _fail(throttle, "192.0.2.1")
    assert throttle.admit("192.0.2.1") is not None


def test_attempts_in_flight_count_in_advance() -> None:
    throttle, _ = _throttle()
    admitted = [throttle.admit("192.0.2.1") for _ in range(10)]
    assert admitted.count(None) == 3  # 10 associations at once: 3 provider calls, not 10
    for _ in range(3):
        throttle.settle("192.0.2.1", failed=True)
    assert throttle.admit("192.0.2.1") == 300.0


def test_a_flood_of_sources_cannot_release_a_refused_source_and_memory_stays_bounded() -> None:
    throttle, _ = _throttle()
    _fail(throttle, "192.0.2.1", 3)
    for n in range(5000):
        source = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
        if throttle.admit(source) is None:
            throttle.settle(source, failed=True)
        counted, refused = throttle.sizes
        assert counted <= 8 and refused <= 8
    assert throttle.admit("192.0.2.1") is not None


def test_when_the_refusals_fill_up_every_type_2_attempt_is_refused() -> None:
    throttle, clock = _throttle()
    for n in range(8):
        _fail(throttle, f"192.0.2.{n}", 3)
    assert throttle.admit("198.51.100.1") == 300.0  # fail closed: a distributed attack
    clock.now += 301
    assert throttle.admit("198.51.100.1") is None


def test_ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() -> None:
    throttle, _ = _throttle()
    _fail(throttle, "2001:db8:1:2::1")
    _fail(throttle, "2001:db8:1:2:ffff::9")
    _fail(throttle, "2001:db8:1:2:abcd::1234")
    assert throttle.admit("2001:db8:1:2::77") is not None
    assert throttle.admit("2001:db8:1:3::1") is None
    assert source_key("::ffff:192.0.2.1") == source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
