"""The token, code and device stores: single use under races, sessions shared, bounded tables."""

from __future__ import annotations

import threading
import time

from hial_mock.config import User
from hial_mock.oauth.models import Authenticated, AuthorizationCode, DeviceRecord, TokenRecord
from hial_mock.state import CodeStore, DeviceStore, TokenStore

RAD = Authenticated(user=User(username="rad", password_hash="x"), amr=("pwd",), auth_time=0, session="s1")


def record(tokens: TokenStore, kind: str, sid: str = "s1") -> TokenRecord:
    now = time.time()
    return TokenRecord(kind=kind, client_id="c", username="rad", scope="openid", issued_at=now,  # type: ignore[arg-type]
                       expires_at=now + 60, session=tokens.session(sid))


def race(action: object, n: int = 8) -> list[bool]:
    results: list[bool] = []
    barrier = threading.Barrier(n)

    def run() -> None:
        barrier.wait()
        results.append(action())  # type: ignore[operator]

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_refresh_token_rotates_once_and_its_replay_ends_the_session() -> None:
    tokens = TokenStore()
    tokens.save("refresh-1", record(tokens, "refresh_token"))
    tokens.save("access-1", record(tokens, "access_token"))
    assert tokens.refresh("refresh-1") is not None
    assert sorted(race(lambda: tokens.rotate("refresh-1"))) == [False] * 7 + [True]
    assert tokens.find("refresh-1", "refresh_token") is None, "introspection: a used refresh token is inactive"
    assert tokens.active_access("access-1") is not None
    assert tokens.refresh("refresh-1") is None  # the replay...
    assert tokens.active_access("access-1") is None  # ...ends every token of the session


def test_a_code_is_redeemed_once_and_its_nonce_is_remembered() -> None:
    codes = CodeStore(nonce_lifetime=60)
    codes.save_code(AuthorizationCode(code="c1", client_id="app", redirect_uri="", scope="openid", user=RAD,
                                      nonce="n1", code_challenge=None, code_challenge_method=None,
                                      expires_at=time.time() + 60))
    assert codes.nonce_seen("app", "n1") and not codes.nonce_seen("other-app", "n1")
    assert sorted(race(lambda: codes.take_code("c1"))) == [False] * 7 + [True]
    assert codes.code("c1") is None


def test_a_device_decision_is_made_once_and_handed_out_once() -> None:
    devices = DeviceStore()
    devices.save_device(DeviceRecord(device_code="d1", user_code="ABCD-EFGH", client_id="ws", scope="openid",
                                     expires_at=time.time() + 60, interval=5))
    assert devices.pending("ABCD-EFGH") is not None and devices.decision("ABCD-EFGH") is None
    assert devices.decide("ABCD-EFGH", RAD, True) and not devices.decide("ABCD-EFGH", RAD, False)
    assert devices.decision("ABCD-EFGH") == (RAD, True)
    assert devices.decision("ABCD-EFGH") is None and devices.device("d1") is None


def test_sessions_live_as_long_as_their_tokens_and_tables_are_bounded() -> None:
    tokens = TokenStore(capacity=100)
    for i in range(1000):
        tokens.save(f"access-{i}", record(tokens, "access_token", sid=f"s{i}"))
    access, _, sessions = tokens.sizes()
    assert access <= 101
    assert sessions <= 101, "a session goes with its last token: no revocation list to flood"
    assert tokens.find("access-0", None) is None and tokens.find("access-999", None) is not None
