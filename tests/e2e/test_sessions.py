"""Issue 14 item 5 end to end: associations live as long as the user's OIDC session, and end within
seconds when it ends. A live HIAL (identity provider, PDP, sender of back-channel logout tokens), the
server agent with its back-channel logout endpoint, Orthanc behind it, pynetdicom as the client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from devtools.site import Site

LIFETIME = 4  # seconds an access token lives here: readings below outlast it


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("sessions"), hial_server={"access_token_lifetime": LIFETIME}, leeway=0,
                sessions={"max_lifetime": 60}).start()
    yield site
    site.stop()


def login(site: Site, user: str = "rad") -> dict[str, Any]:
    assert site.hial is not None
    answer = requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": user, "password": f"demo-{user}",
        "scope": "openid offline_access user/ImagingStudy.rs"})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def logout(site: Site, tokens: dict[str, Any]) -> None:
    """What ``dicom-agent logout`` does: revoke the refresh token (RFC 7009), which ends the session."""
    assert site.hial is not None
    assert requests.post(f"{site.hial.issuer}/revoke", timeout=10, data={
        "token": tokens["refresh_token"], "client_id": "workstation-agent"}).status_code == 200


def associate(site: Site, token: str) -> Association:
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(Verification)
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 5
    identity.primary_field = token.encode()
    return ae.associate("127.0.0.1", site.ports["plain"], ae_title="ORTHANC", ext_neg=[identity])


def aborted_within(assoc: Association, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if assoc.is_aborted or not assoc.is_alive():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def ended_records(site: Site) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, site.decisions().splitlines()) if r.get("event") == "association-end"]


def test_a_reading_longer_than_the_access_token_is_not_interrupted(site: Site) -> None:
    tokens = login(site)
    assoc = associate(site, tokens["access_token"])
    assert assoc.is_established
    expires = time.time() + tokens["expires_in"]
    statuses = []
    while time.time() < expires + 2.5:  # well past the token's exp, the user still logged in
        statuses.append(assoc.send_c_echo().Status)
        time.sleep(0.5)
    assert statuses and all(s == 0x0000 for s in statuses), statuses
    assoc.release()


def test_logout_ends_the_live_association_and_refuses_the_next_within_2_s(site: Site) -> None:
    tokens = login(site)
    assoc = associate(site, tokens["access_token"])
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    logout(site, tokens)
    took = aborted_within(assoc, 2.0)
    assert took is not None, "the association outlived the session by more than 2 s"
    again = associate(site, tokens["access_token"])  # the access token itself has not expired
    assert again.is_rejected
    assert any(r.get("detail") == "session ended (logout or revocation)" for r in ended_records(site))


def test_another_session_of_the_same_user_is_not_ended(site: Site) -> None:
    first, second = login(site), login(site)
    kept = associate(site, second["access_token"])
    ended = associate(site, first["access_token"])
    assert kept.is_established and ended.is_established
    logout(site, first)
    assert aborted_within(ended, 2.0) is not None
    assert kept.send_c_echo().Status == 0x0000
    assert jwt.decode(first["access_token"], options={"verify_signature": False})["sid"] != \
        jwt.decode(second["access_token"], options={"verify_signature": False})["sid"]
    kept.release()


def test_a_forged_logout_token_ends_nothing(site: Site) -> None:
    tokens = login(site)
    assoc = associate(site, tokens["access_token"])
    sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    now = int(time.time())
    forged = jwt.encode({"iss": site.issuer, "aud": "server-agent", "iat": now, "exp": now + 60, "jti": "x",
                         "sid": sid, "events": {"http://schemas.openid.net/event/backchannel-logout": {}}},
                        "attacker-chosen-secret-of-32-bytes!", algorithm="HS256", headers={"typ": "logout+jwt"})
    answer = requests.post(f"http://127.0.0.1:{site.ports['logout']}/backchannel-logout", timeout=5,
                           data={"logout_token": forged})
    assert answer.status_code == 400
    assert assoc.send_c_echo().Status == 0x0000 and not assoc.is_aborted
    assoc.release()


def test_without_back_channel_logout_introspection_refuses_within_2_s(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The fallback for providers without back-channel logout: RFC 7662 on every request, cached 1 s."""
    site = Site(tmp_path_factory.mktemp("introspecting"), identity={"introspect": True, "introspect_cache": 1.0},
                leeway=0).start()
    try:
        tokens = login(site)
        assoc = associate(site, tokens["access_token"])
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        logout(site, tokens)
        time.sleep(1.2)  # the cache's bound
        assert assoc.send_c_echo().Status == 0x0124
        assoc.release()
        assert associate(site, tokens["access_token"]).is_rejected
    finally:
        site.stop()
