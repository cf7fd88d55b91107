"""Issue 17 items 1 and 4: the refusal codes the server agent writes and the sentences the wrapper shows."""

from __future__ import annotations

import datetime as dt
import errno
import re
from types import SimpleNamespace

import pytest

from agent import messages
from agent.messages import from_abort, from_comment, from_reject, local_time, login_message, os_message, unreachable
from audit.events import Reason
from server_agent.refusals import CODES, refusal_code, refusal_comment

ISSUER = "https://idp.example.org"
CONFIG = "/home/rad/.config/dicom-agent/workstation.toml"


def test_every_code_the_server_agent_writes_has_a_sentence_in_the_wrapper() -> None:
    assert set(messages.REFUSALS) == CODES
    for reason in Reason:
        assert refusal_code(reason) in CODES
    for pdp in ("no_care_relationship", "consent_denied", "no_role", "action_not_permitted", "not_identifiable",
                "patient_required", "unknown_action", "something new"):
        assert refusal_code(Reason.PDP, pdp) in CODES


@pytest.mark.parametrize(("text", "reason", "pdp", "expected"), [
    ("user nobody has no role known to the policy", Reason.PDP, "no_role",
     "ROLE: user nobody has no role known to the policy"),
    ("no care relationship between refdoc and this patient", Reason.PDP, "no_care_relationship",
     "NOT-IN-CARE: no care relationship between refdoc and this..."),
    ("patient consent 1.3.6.1.4.1.21367.2026.1.1 (Share only within my home organization) denies this access",
     Reason.PDP, "consent_denied", "CONSENT: patient consent 1.3.6.1.4.1.21367.2026.1.1 (Share..."),
    ("", Reason.TOKEN_INVALID, "", "SESSION-ENDED"),
    ("the token has expired", Reason.TOKEN_INVALID, "", "SESSION-ENDED: the token has expired"),
    ("x" * 200, None, "", "DENIED: " + "x" * 53 + "..."),
    ("back\\slash and\x00nul é", Reason.MALFORMED, "", "UNREADABLE: back slash and nul"),
])
def test_error_comments_are_a_code_and_whole_words_within_vr_lo(text: str, reason: Reason | None, pdp: str,
                                                                 expected: str) -> None:
    comment = refusal_comment(text, reason, pdp)
    assert comment == expected
    assert len(comment) <= 64 and "\\" not in comment and comment.isascii()


def test_a_coded_comment_becomes_the_full_sentence_and_the_next_step() -> None:
    refusal = from_comment("FINDSCU", "C-FIND", 0x0124, "NOT-IN-CARE: no care relationship between refdoc and this...")
    assert refusal.line() == (
        "dicom-agent: REFUSED FINDSCU C-FIND: this patient is not in your care (no care relationship between "
        "refdoc and this...). Next step: if this is an emergency, ask for break-glass: dicom-agent launch "
        "--break-glass REASON -- APP [ARGS].")
    session = from_comment("ECHOSCU", "C-ECHO", 0x0124, "SESSION-ENDED")
    assert session.line() == ("dicom-agent: REFUSED ECHOSCU C-ECHO: your login is no longer valid. Next step: "
                              "your session ended: log in again (start the app again with dicom-agent launch).")


def test_an_uncoded_comment_or_status_is_shown_as_it_came() -> None:
    assert from_comment("X", "C-FIND", 0x0124, "Not authorized").line() == (
        "dicom-agent: REFUSED X C-FIND: access control refused it (Not authorized). Next step: if you need this "
        "access, call the help desk.")
    assert from_comment("X", "C-STORE", 0xA700, None).line() == (
        "dicom-agent: REFUSED X C-STORE: it failed with status A700H. Next step: try again; if it persists, call "
        "the help desk.")
    # A peer's escape sequences never reach the terminal; an over-long comment is cut.
    hostile = from_comment("X", "C-FIND", 0x0124, "\x1b]0;owned\x07\x1b[2J" + "y" * 500)
    assert "\x1b" not in hostile.line() and "\x07" not in hostile.line() and len(hostile.detail) == 200
    # A lower-case or over-long prefix is no code: shown whole.
    assert from_comment("X", "C-FIND", 0x0124, "ERROR-THAT-IS-MUCH-TOO-LONG: x").detail == \
        "ERROR-THAT-IS-MUCH-TOO-LONG: x"


def test_the_pacss_own_words_are_labelled_as_the_pacss_never_ours() -> None:
    """The server agent relays a PACS's Error Comment as ``PACS: its words`` (server_agent.pacstext)."""
    assert from_comment("X", "C-FIND", 0xC000, "PACS: SESSION-ENDED: call x4444").line() == (
        'dicom-agent: REFUSED X C-FIND: the PACS could not do it (status C000H) (the PACS said: "SESSION-ENDED: '
        'call x4444"). Next step: try again; if it persists, call the help desk.')
    assert from_comment("X", "C-ECHO", 0x0124, "PACS: nope").line() == (
        'dicom-agent: REFUSED X C-ECHO: the PACS refused it (the PACS said: "nope"). Next step: if you need this '
        "access, call the help desk.")
    partial = from_comment("X", "C-MOVE", 0xB000, "PACS: ROLE: 2 failed", failed=2)
    assert (partial.reason, partial.detail) == (
        "2 image(s) of it were not delivered (refused by access control or failed at the PACS)",
        'the PACS said: "ROLE: 2 failed"')
    assert from_comment("X", "C-FIND", 0xC000, "PACS").detail == ""


@pytest.mark.parametrize(("code", "words"), [
    ((1, 1, 7), "knows no such PACS"),
    ((1, 1, 3), "does not recognize this workstation"),
    ((1, 2, 1), "did not accept your login"),
    ((2, 2, 1), "cannot take it right now"),
    ((2, 3, 1), "cannot take it right now"),
    ((1, 3, 9), "refused it (result 1, source 3, reason 9)"),
    ((), "refused it (result 0, source 0, reason 0)"),
])
def test_rejections_are_told_by_their_codes(code: tuple[int, ...], words: str) -> None:
    line = from_reject("ECHOSCU", "GW1", code).line()
    assert words in line and line.startswith("dicom-agent: REFUSED ECHOSCU the connection: ")


def test_abort_and_unreachable_and_certificate_lines() -> None:
    assert "the server side of route GW1 ended it" in from_abort("A", "GW1").line()
    assert unreachable("A", "GW1", "10.0.0.5:11112").line() == (
        "dicom-agent: REFUSED A the connection: the server agent of route GW1 at 10.0.0.5:11112 cannot be reached. "
        "Next step: check this computer's network connection; if it persists, call the help desk.")
    assert "did not prove who it is" in unreachable("A", "GW1", "h:1", "[SSL: CERTIFICATE_VERIFY_FAILED]").line()


def test_lockout_says_until_when_in_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    import time
    time.tzset()
    try:
        now = dt.datetime(2026, 12, 3, 19, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
        assert local_time("2026-12-03T10:15:00Z", now) == "19:15:00"
        assert local_time("2026-12-04T10:15:00Z", now) == "2026-12-04 19:15:00"
        text = login_message("too many failed logins for this user from this address: locked until "
                             "2026-12-03T10:15:00Z", "invalid_grant", ISSUER, CONFIG)
        assert re.fullmatch(r"Your login is locked for now \(too many failed logins for this user from this "
                            r"address\)\. Try again after (2026-12-03 )?19:15:00 \(local time\), or ask the help "
                            r"desk to unlock it\.", text)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(("message", "code", "expected"), [
    ("invalid username or password", "invalid_grant",
     "Wrong user name or password. Check them (and Caps Lock) and try again; repeated failures lock the login for "
     "a while."),
    ("invalid one-time password", "invalid_grant",
     "The one-time code is wrong or was already used. Wait for the next code in your authenticator app and try "
     "again."),
    ("identity provider unreachable: https://idp.example.org/token: ConnectError: [Errno 111] Connection refused",
     "", f"The identity provider at {ISSUER} cannot be reached. Check this computer's network connection and the "
         f"issuer address in {CONFIG}; if it persists, call the help desk."),
    ("identity provider unreachable: https://idp.example.org/.well-known/openid-configuration: ConnectError: "
     "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "",
     f"The identity provider at {ISSUER} presented a certificate this computer does not trust. Nothing was sent. "
     f"Check [identity_provider] ca_file in {CONFIG}, or call the help desk."),
    ("device code expired", "expired_token",
     "The sign-in code expired before the sign-in was completed. Run the command again and sign in sooner."),
    ("break-glass refused: none of your roles may use break-glass", "invalid_grant",
     "Break-glass was refused: none of your roles may use break-glass. Ask your supervisor or the help desk."),
    ("One-time code expected on standard input", "",
     "One-time code expected on standard input: give it on the line after the password."),
    ("server_error", "server_error", "The login failed: server_error. Try again; if it persists, call the help desk."),
])
def test_each_login_failure_is_a_sentence_with_the_next_step(message: str, code: str, expected: str) -> None:
    assert login_message(message, code, ISSUER, CONFIG) == expected


def test_a_taken_port_names_the_address_and_what_to_do() -> None:
    config = SimpleNamespace(listen=("127.0.0.1", 11112))
    assert os_message(OSError(errno.EADDRINUSE, "Address already in use"), config) == (
        "the agent's address 127.0.0.1:11112 is taken by another program (is `dicom-agent serve` running? then start "
        "the app without launch); otherwise close that program, or call the help desk")


def test_a_partly_refused_retrieval_is_told_with_its_count() -> None:
    refusal = from_comment("GETSCU", "C-GET", 0xB000, None, failed=3)
    assert "3 image(s) of it were not delivered" in refusal.line()
    coded = from_comment("GETSCU", "C-GET", 0xB000, "NOT-DEIDENT: pixels may identify", failed=1)
    assert "identity in its pixels" in coded.line()  # the server agent's own code still wins
