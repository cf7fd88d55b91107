"""Issue 13, case 4: everyone locked out by anyone. Failed logins are counted per user and per source,
never per shared OAuth client: five wrong passwords for a name that does not exist must not stop a
real user's login, neither through the server agent (identity type 2, PS3.7 D.3.3.7, checked by the
server agent's password grant) nor at the HIAL with the public ``workstation-agent`` client (RFC 6749
4.3). The attacker comes from 127.0.0.2, the users from 127.0.0.1."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterator

import pytest

from devtools.site import Site

from .conftest import start_site, stop_site
from .support import (
    ATTACKER,
    VERIFICATION,
    Accepted,
    Ended,
    Message,
    Peer,
    Proposal,
    associate_rq,
    describe,
    echo_rq,
    message,
    password_identity,
)

pytestmark = pytest.mark.e2e

WRONG = 5  # the HIAL's lockout.max_failures on the demo site


@pytest.fixture(scope="module")
def lock_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site of its own: on today's code these attacks lock shared clients for 15 minutes."""
    site = start_site(tmp_path_factory.mktemp("lockout"))
    yield site
    stop_site(site)


def type2_association(site: Site, user: str, password: str, source: str | None = None) -> Accepted | Ended:
    with Peer.connect(site.ports["plain"], source=source) as peer:
        return peer.associate(associate_rq(called="ORTHANC", calling="LOCKOUT", proposals=(
            Proposal(id=1, abstract=VERIFICATION),), identity=password_identity(user, password)))


def test_wrong_type2_passwords_for_a_made_up_user_do_not_lock_out_real_users(lock_site: Site) -> None:
    for n in range(WRONG):
        got = type2_association(lock_site, "mallory", f"guess-{n}", source=ATTACKER)
        assert isinstance(got, Ended) and got.kind == "reject", f"a wrong password was accepted: {describe(got)}"
    with Peer.connect(lock_site.ports["plain"]) as peer:
        got = peer.associate(associate_rq(called="ORTHANC", calling="RADIOLOGY", proposals=(
            Proposal(id=1, abstract=VERIFICATION),), identity=password_identity("rad", "demo-rad")))
        assert isinstance(got, Accepted), f"rad's correct type-2 login after mallory's guesses: {describe(got)}"
        peer.send(message(1, echo_rq(1)))
        echo = peer.read_message()
        assert isinstance(echo, Message) and echo.status == 0x0000, describe(echo)


def wrong_password_grant(site: Site, user: str, password: str) -> int:
    """A password grant of the public ``workstation-agent`` client at the HIAL, from the attacker's
    address; the HTTP status."""
    assert site.hial is not None
    issuer = urllib.parse.urlsplit(site.hial.issuer)
    connection = http.client.HTTPConnection(issuer.hostname or "127.0.0.1", issuer.port, timeout=10,
                                            source_address=(ATTACKER, 0))
    try:
        body = urllib.parse.urlencode({"grant_type": "password", "client_id": "workstation-agent",
                                       "username": user, "password": password})
        connection.request("POST", f"{issuer.path}/token", body,
                           {"Content-Type": "application/x-www-form-urlencoded"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_wrong_passwords_at_the_hial_do_not_lock_out_other_clinicians(lock_site: Site) -> None:
    for n in range(WRONG):
        assert wrong_password_grant(lock_site, "eve", f"guess-{n}") == 400
    login = lock_site.agent("login", "--user", "refdoc", "--password-stdin", stdin="demo-refdoc\n", timeout=30)
    lock_site.agent("logout", timeout=30)
    said = login.stderr.strip().splitlines()[-1:]  # its last line says why (httpx logs its requests first)
    assert login.returncode == 0, f"refdoc's `dicom-agent login` after eve's guesses: {said}"
