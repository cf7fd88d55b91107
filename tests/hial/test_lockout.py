"""Failed-login counters: locks hurt the attacker, never the users (issue 13 item 4), with a hand-driven clock."""

from __future__ import annotations

import ipaddress

import pytest

from hial_mock.config import LockoutConfig
from hial_mock.lockout import FULL, PAIR, SOURCE, Lockout, Refusal, Ticket

HOME = ipaddress.ip_address("192.0.2.10")  # the user's own workstation
ATTACKER = ipaddress.ip_address("203.0.113.66")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def lockout(clock: Clock, **settings: float) -> Lockout:
    config = {"max_failures": 3, "source_max_failures": 10, "window": 300.0, "lock_seconds": 900.0,
              "slow_after": 3, "slow_delay": 1.0, "max_delay": 4.0, "max_entries": 100_000, **settings}
    return Lockout(LockoutConfig(**config), clock=clock)  # type: ignore[arg-type]


def fail(locks: Lockout, user: str, source: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[Refusal]:
    ticket = locks.admit(user, source)
    assert isinstance(ticket, Ticket), ticket
    return locks.failed(ticket)


def admitted(locks: Lockout, user: str, source: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    ticket = locks.admit(user, source)
    if isinstance(ticket, Ticket):
        locks.abandoned(ticket)
        return True
    return False


def test_a_guessed_pair_locks_only_that_user_at_that_source() -> None:
    clock = Clock()
    locks = lockout(clock)
    assert fail(locks, "alice", ATTACKER) == []
    assert fail(locks, "alice", ATTACKER) == []
    assert fail(locks, "alice", ATTACKER) == [Refusal(why=PAIR, until=clock.now + 900)]
    refusal = locks.admit("alice", ATTACKER)
    assert refusal == Refusal(why=PAIR, until=clock.now + 900)
    assert admitted(locks, "alice", HOME), "the real user at her own workstation still logs in"
    assert admitted(locks, "bob", ATTACKER), "another user at that source is not locked by alice's pair"
    clock.now += 901
    assert admitted(locks, "alice", ATTACKER), "the lock ends"


def test_spraying_from_one_source_locks_that_source_only() -> None:
    clock = Clock()
    locks = lockout(clock)
    started: list[Refusal] = []
    for i in range(10):
        started += fail(locks, f"user{i}", ATTACKER)
    assert started == [Refusal(why=SOURCE, until=clock.now + 900)]
    assert locks.admit("someone-else", ATTACKER) == Refusal(why=SOURCE, until=clock.now + 900)
    assert admitted(locks, "user1", HOME)


def test_a_distributed_guess_at_one_account_is_slowed_never_locked() -> None:
    clock = Clock()
    locks = lockout(clock)
    delays = []
    for i in range(40):
        source = ipaddress.ip_address(f"198.51.100.{i + 1}")
        ticket = locks.admit("alice", source)
        assert isinstance(ticket, Ticket), "one account is never locked for every source"
        delays.append(ticket.delay)
        locks.failed(ticket)
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:6] == [1.0, 2.0, 4.0]
    assert max(delays) == 4.0, "bounded by max_delay"
    home = locks.admit("alice", HOME)
    assert isinstance(home, Ticket) and home.delay == 4.0


def test_a_success_clears_its_own_pair_only_and_a_missing_code_clears_nothing() -> None:
    clock = Clock()
    locks = lockout(clock)
    fail(locks, "alice", HOME)
    fail(locks, "alice", HOME)
    mfa = locks.admit("alice", HOME)
    assert isinstance(mfa, Ticket)
    locks.abandoned(mfa)  # right password, one-time code still missing
    assert fail(locks, "alice", HOME) == [Refusal(why=PAIR, until=clock.now + 900)], \
        "a correct password without its code must not reset the count of code guesses"
    clock.now += 901
    fail(locks, "alice", HOME)
    fail(locks, "alice", HOME)
    ok = locks.admit("alice", HOME)
    assert isinstance(ok, Ticket)
    locks.succeeded(ok)
    assert fail(locks, "alice", HOME) == [], "a full login starts the pair from zero"


def test_failures_count_until_a_quiet_window() -> None:
    clock = Clock()
    locks = lockout(clock)
    fail(locks, "alice", ATTACKER)
    fail(locks, "alice", ATTACKER)
    clock.now += 299
    assert fail(locks, "alice", ATTACKER) != [], "still within the window of the previous failure"
    clock.now += 1000
    fail(locks, "alice", ATTACKER)
    fail(locks, "alice", ATTACKER)
    clock.now += 301
    assert fail(locks, "alice", ATTACKER) == [], "a quiet window starts the count again"


def test_an_ipv6_source_is_its_64_prefix() -> None:
    clock = Clock()
    locks = lockout(clock)
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"):
        fail(locks, "alice", ipaddress.ip_address(host))
    assert not admitted(locks, "alice", ipaddress.ip_address("2001:db8:1:2::99"))
    assert admitted(locks, "alice", ipaddress.ip_address("2001:db8:1:3::1"))


def test_a_thousand_fake_names_do_not_reset_a_locked_or_counting_pair() -> None:
    clock = Clock()
    locks = lockout(clock)
    for _ in range(3):
        fail(locks, "alice", ATTACKER)
    fail(locks, "bob", HOME)
    fail(locks, "bob", HOME)  # counting: one more locks
    for i in range(1000):
        fail(locks, f"fake-{i}", ipaddress.ip_address(0x0A000000 + i))
    assert locks.admit("alice", ATTACKER) == Refusal(why=PAIR, until=clock.now + 900)
    assert fail(locks, "bob", HOME) == [Refusal(why=PAIR, until=clock.now + 900)]


def test_full_tables_keep_every_live_entry_and_refuse_new_keys_until_room_is_due() -> None:
    clock = Clock()
    locks = lockout(clock, max_entries=50)
    for _ in range(3):
        fail(locks, "alice", ATTACKER)
    fail(locks, "bob", HOME)
    fail(locks, "bob", HOME)
    refused = []
    for i in range(1000):
        ticket = locks.admit(f"fake-{i}", ipaddress.ip_address(0x0A000000 + i))
        if isinstance(ticket, Ticket):
            locks.failed(ticket)
        else:
            refused.append(ticket)
    assert max(locks.sizes()) <= 50
    assert len(refused) > 900 and {r.why for r in refused} == {FULL}
    # Fail closed for the keys that cannot be tracked, until the earliest entry expires.
    assert refused[-1].until == pytest.approx(clock.now + 300)
    assert locks.admit("alice", ATTACKER) == Refusal(why=PAIR, until=clock.now + 900), "the lock survives"
    assert fail(locks, "bob", HOME) == [Refusal(why=PAIR, until=clock.now + 900)], "the count survives"
    assert not admitted(locks, "carol", HOME), "a new user cannot be tracked: refused unchecked"
    clock.now += 301
    assert admitted(locks, "carol", HOME), "expired counters make room"
    assert locks.admit("alice", ATTACKER) == Refusal(why=PAIR, until=clock.now - 301 + 900)


def test_tables_stay_bounded_and_successes_leave_no_entry() -> None:
    clock = Clock()
    locks = lockout(clock, max_entries=10)
    for i in range(100):
        ticket = locks.admit(f"user{i}", ipaddress.ip_address(0x0A000000 + i))
        assert isinstance(ticket, Ticket)
        locks.succeeded(ticket)
    assert locks.sizes() == (0, 0, 0)
    with pytest.raises(RuntimeError):
        locks.succeeded(ticket)
