"""Issue 17 items 1, 2 and 4 end to end: the live HIAL, Orthanc, both agents and real DCMTK apps
through `dicom-agent launch`. A refusal reaches the clinician's terminal in words, with the next step,
whatever the app shows; the app is DCMTK's even with the project's scripts first on PATH; two apps
share one agent and one login; a launch is quiet by default; every login failure is a sentence."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent import certs
from devtools.dicomdata import make_ct_study
from devtools.peers import free_port
from devtools.site import DCMTK_BIN, PROJECT, Site, write_workstation_config
from dicomwire.dimse import error_comment

BREAK_GLASS_STEP = "Next step: if this is an emergency, ask for break-glass: dicom-agent launch --break-glass REASON " \
                   "-- APP [ARGS]."


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("wrapper")
    site = Site(root).start()
    assert site.orthanc is not None
    site.orthanc.upload(make_ct_study(root / "data", slices=1, patient_id="WRAP-1", accession="WRAPACC", seed=5))
    yield site
    site.stop()


def run(site: Site, *args: str, stdin: str = "", env: dict[str, str] | None = None,
        config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(config or site.root / "workstation.toml"),
                           *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=PROJECT,
                          env={**os.environ, "TCP_NODELAY": "1", **(env or {})})


def launch(site: Site, user: str, *app: str, stdin: str | None = None, **options: object) -> \
        subprocess.CompletedProcess[str]:
    return run(site, "launch", "--user", user, "--password-stdin", "--", *app,
               stdin=f"demo-{user}\n" if stdin is None else stdin, **options)  # type: ignore[arg-type]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr.replace("Error Comment", "")


def test_a_refused_find_shows_the_reason_and_the_next_step(site: Site) -> None:
    result = launch(site, "refdoc", str(DCMTK_BIN / "findscu"), "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                    "PatientID=WRAP-1", "-k", "StudyInstanceUID", "-aec", "ORTHANC@GW1", "127.0.0.1",
                    str(site.ports["agent"]))
    assert result.stderr.splitlines() == [
        "dicom-agent: REFUSED FINDSCU C-FIND: this patient is not in your care (no care relationship between "
        f"refdoc and this...). {BREAK_GLASS_STEP}"]
    assert result.returncode == 4  # findscu exits 0 on a refusal: the wrapper's status says it
    no_traceback(result)


def test_a_refused_echo_shows_the_reason(site: Site) -> None:
    result = launch(site, "nobody", str(DCMTK_BIN / "echoscu"), "-aec", "ORTHANC@GW1", "127.0.0.1",
                    str(site.ports["agent"]))
    assert ("dicom-agent: REFUSED ECHOSCU C-ECHO: your role does not allow this (user nobody has no role known to "
            "the policy). Next step: if your work needs it, ask your department's access administrator.") \
        in result.stderr
    assert result.returncode != 0
    no_traceback(result)


def test_a_refused_store_shows_the_reason(site: Site, tmp_path: Path) -> None:
    files = make_ct_study(tmp_path / "new", slices=2, patient_id="WRAP-2", accession="WRAPACC2", seed=9)
    result = launch(site, "rad", str(DCMTK_BIN / "storescu"), "-aec", "ORTHANC@GW1", "127.0.0.1",
                    str(site.ports["agent"]), *map(str, files))
    line = ("dicom-agent: REFUSED STORESCU C-STORE: your role does not allow this (C-STORE is not permitted for role "
            "radiologist). Next step: if your work needs it, ask your department's access administrator.")
    assert line in result.stderr
    assert result.stderr.count(line) == 1  # the second image's refusal is counted, not repeated
    assert result.returncode != 0
    no_traceback(result)


def test_the_error_comment_the_app_gets_is_short_and_whole(site: Site) -> None:
    result = launch(site, "refdoc", str(DCMTK_BIN / "findscu"), "-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                    "PatientID=WRAP-1", "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]))
    comments = re.findall(r"\(0000,0902\) LO \[([^\]]*)\]", result.stdout + result.stderr)
    assert comments == ["NOT-IN-CARE: no care relationship between refdoc and this..."]
    assert error_comment(comments[0]) == comments[0]


def test_a_launch_prints_only_the_apps_output_and_verbose_shows_the_relay(site: Site) -> None:
    echo = (str(DCMTK_BIN / "echoscu"), "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]))
    quiet = launch(site, "rad", *echo)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    verbose = run(site, "launch", "--verbose", "--user", "rad", "--password-stdin", "--", *echo, stdin="demo-rad\n")
    assert verbose.returncode == 0
    assert "rad logged in; starting" in verbose.stderr and "association closed" in verbose.stderr


def test_the_app_is_dcmtks_even_with_the_projects_scripts_first_on_path(site: Site) -> None:
    ours = Path(sys.executable).parent
    assert (ours / "findscu").exists(), "pynetdicom's findscu is installed beside us: the shadow this test is about"
    path = f"{ours}:{DCMTK_BIN}:/usr/bin:/bin"
    result = launch(site, "rad", "findscu", "--version", env={"PATH": path})
    assert result.returncode == 0, result.stderr
    assert "dcmtk" in result.stdout.lower()  # pynetdicom's would print its own version, not DCMTK's


def test_two_apps_at_once_share_one_agent_and_one_login(site: Site) -> None:
    """The first launch logs in (its password on stdin); the second, started while the first app runs,
    gives no password at all and still works: it joined. The agent lives until the last app ends."""
    echo = f"{DCMTK_BIN / 'echoscu'} -aec ORTHANC@GW1 127.0.0.1 {site.ports['agent']}"
    started = site.root / "first-app-started"
    first = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--config", str(site.root / "workstation.toml"), "launch", "--user",
         "rad", "--password-stdin", "--", "/bin/sh", "-c", f"{echo} && touch {started} && sleep 2 && {echo}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)
    assert first.stdin is not None
    first.stdin.write("demo-rad\n")
    first.stdin.flush()
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # No --user, no password, no terminal: a login would fail; joining needs none.
    second = run(site, "launch", "--", "/bin/sh", "-c", f"{echo} && sleep 4 && {echo}")
    _, err = first.communicate(timeout=60)
    # Its last echo ran after the first app had ended; it says whose login it uses (a shared account).
    assert (second.returncode, second.stderr) == (0, "dicom-agent: this app runs as rad, on the login of another "
                                                     "window\n")
    assert first.returncode == 0, err
    assert err == "dicom-agent: 1 other app(s) use this login; it ends when they end\n"


def host(site: Site, user: str, *options: str, seconds: float = 5, session: bool = False) -> subprocess.Popen[str]:
    """A launch of ``user`` whose app waits ``seconds``; returns once that app runs (the agent is up).
    ``session``: in a process group of its own, as a terminal's foreground job is."""
    started = site.root / f"started-{time.monotonic_ns()}"
    first = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--config", str(site.root / "workstation.toml"), "launch", "--user",
         user, "--password-stdin", *options, "--", "/bin/sh", "-c", f"touch {started}; sleep {seconds}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT,
        start_new_session=session)
    assert first.stdin is not None
    first.stdin.write(f"demo-{user}\n")
    first.stdin.flush()
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return first


def test_a_second_user_cannot_join_anothers_login(site: Site) -> None:
    first = host(site, "rad")
    other = launch(site, "tech", "/bin/true")
    first.communicate(timeout=30)
    assert other.returncode == 2
    assert other.stderr.splitlines()[-1] == ("dicom-agent: rad is logged in for the apps already running from "
                                             "another window: close them first to log in as tech")


def test_an_ordinary_app_never_inherits_a_break_glass_login(site: Site) -> None:
    """Found by the attacker review: an ordinary launch joined a break-glass login and ran with its rights,
    told only on stderr. Break-glass is asked for app by app."""
    first = host(site, "erdoc", "--break-glass", "trauma bay 1")
    joined = run(site, "launch", "--", "/bin/true")
    first.communicate(timeout=30)
    assert joined.returncode == 2
    assert joined.stderr.splitlines()[-1] == ("dicom-agent: a BREAK-GLASS login runs in another window: launch this "
                                              "app with --break-glass REASON to join it, or wait until it ends")


def test_a_joiner_without_a_terminal_is_told_on_the_desktop_too(site: Site, tmp_path: Path) -> None:
    """Found by the attacker review: an app started from a desktop icon joins a login and is told whose it is
    (or why it may not join) on stderr only, which nobody reads there. Now a desktop notification too."""
    calls = tmp_path / "notify-send-calls"
    fake = tmp_path / "bin" / "notify-send"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nprintf '%s|' \"$@\" >> {calls}\necho >> {calls}\n")
    fake.chmod(0o755)
    desktop = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"}
    first = host(site, "rad", seconds=8)
    joined = run(site, "launch", "--", "/bin/true", env=desktop)  # stderr a pipe: no terminal
    refused = run(site, "launch", "--user", "tech", "--", "/bin/true", env=desktop)
    first.communicate(timeout=60)
    assert (joined.returncode, refused.returncode) == (0, 2)
    assert calls.read_text().splitlines() == [
        "--app-name=dicom-agent|--urgency=normal|--icon=dialog-information|--|DICOM app started|this app runs as rad, "
        "on the login of another window|",
        "--app-name=dicom-agent|--urgency=critical|--icon=dialog-warning|--|DICOM app not started|rad is logged in "
        "for the apps already running from another window: close them first to log in as tech|"]


def revocations(site: Site, user: str) -> int:
    """The sessions of ``user`` the HIAL has ended at a revocation request (RFC 7009), from its log."""
    assert site.hial is not None
    return site.hial.log.count(f"revoked the session of {user}'s refresh token")


@pytest.mark.parametrize("how", ["terminal closed", "SIGTERM"])
def test_a_host_that_is_hung_up_or_terminated_logs_out(site: Site, how: str) -> None:
    """Found by the attacker review: closing the host's terminal (SIGHUP to its process group, the app
    included) killed the launch without the logout; its tokens lived on until they expired."""
    before = revocations(site, "rad")
    first = host(site, "rad", "--verbose", seconds=60, session=True)
    if how == "terminal closed":
        os.killpg(first.pid, signal.SIGHUP)  # what the kernel does to the foreground job when the terminal goes
    else:
        first.send_signal(signal.SIGTERM)  # a session manager, or kill
    _, err = first.communicate(timeout=60)
    assert "dicom-agent: rad logged out" in err
    assert first.returncode == 128 + (signal.SIGHUP if how == "terminal closed" else signal.SIGTERM)
    deadline = time.monotonic() + 5
    while revocations(site, "rad") == before and time.monotonic() < deadline:  # the HIAL's log lags a little
        time.sleep(0.1)
    assert revocations(site, "rad") == before + 1  # its session ended at the provider: no token of it lives on
    no_traceback(SimpleNamespace(stderr=err))  # type: ignore[arg-type]


def test_wrong_password_is_a_sentence(site: Site) -> None:
    result = launch(site, "tech", "/bin/true", stdin="not-the-password\n")
    assert (result.returncode, result.stderr) == (3, "dicom-agent: Wrong user name or password. Check them (and Caps "
                                                      "Lock) and try again; repeated failures lock the login for a "
                                                      "while.\n")


def test_wrong_one_time_code_is_a_sentence(site: Site) -> None:
    result = launch(site, "mfarad", "/bin/true", stdin="demo-mfarad\n000000\n")
    assert (result.returncode, result.stderr) == (3, "dicom-agent: The one-time code is wrong or was already used. "
                                                      "Wait for the next code in your authenticator app and try "
                                                      "again.\n")


def test_lockout_says_until_when_in_local_time(site: Site) -> None:
    for _ in range(5):  # the HIAL's max_failures per user and address
        launch(site, "researcher", "/bin/true", stdin="wrong\n")
    before = time.time()
    result = launch(site, "researcher", "/bin/true", stdin="demo-researcher\n", env={"TZ": "Asia/Tokyo"})
    match = re.fullmatch(r"dicom-agent: Your login is locked for now \(too many failed logins for this user from "
                         r"this address\)\. Try again after (\d\d:\d\d:\d\d) \(local time\), or ask the help desk to "
                         r"unlock it\.\n", result.stderr)
    assert result.returncode == 3 and match, result.stderr
    tokyo = dt.timezone(dt.timedelta(hours=9))
    shown = dt.datetime.combine(dt.datetime.now(tokyo).date(), dt.time.fromisoformat(match.group(1)), tokyo)
    assert before < shown.timestamp() < before + 24 * 3600  # a time in Tokyo, later today


def test_an_unreachable_provider_names_it_without_a_traceback(site: Site, tmp_path: Path) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"
    config = write_workstation_config(tmp_path / "ws.toml", pki=site.pki, issuer=issuer, listen=free_port(),
                                      route_port=site.ports["server"], return_port=free_port())
    result = launch(site, "rad", "/bin/true", config=config)
    assert (result.returncode, result.stderr) == (
        3, f"dicom-agent: The identity provider at {issuer} cannot be reached. Check this computer's network "
           f"connection and the issuer address in {config}; if it persists, call the help desk.\n")


def test_an_untrusted_provider_certificate_is_a_sentence(site: Site, tmp_path: Path) -> None:
    """A provider whose certificate is from a CA this workstation does not trust."""
    certs.init_ca(tmp_path / "rogue")
    cert, key = certs.issue(tmp_path / "rogue", "idp", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                context.wrap_socket(connection, server_side=True).close()
            except (ssl.SSLError, OSError):
                connection.close()

    threading.Thread(target=serve, daemon=True).start()
    issuer = f"https://127.0.0.1:{listener.getsockname()[1]}"
    config = write_workstation_config(tmp_path / "ws.toml", pki=site.pki, issuer=issuer, listen=free_port(),
                                      route_port=site.ports["server"], return_port=free_port())
    try:
        result = launch(site, "rad", "/bin/true", config=config)
    finally:
        stop.set()
        listener.close()
    assert (result.returncode, result.stderr) == (
        3, f"dicom-agent: The identity provider at {issuer} presented a certificate this computer does not trust. "
           f"Nothing was sent. Check [identity_provider] ca_file in {config}, or call the help desk.\n")


def test_no_route_and_an_unreachable_server_agent_are_sentences(site: Site, tmp_path: Path) -> None:
    echo = (str(DCMTK_BIN / "echoscu"), "-aec", "ORTHANC@NOWHERE", "127.0.0.1", str(site.ports["agent"]))
    result = launch(site, "rad", *echo)
    assert ("dicom-agent: REFUSED ECHOSCU the connection: the called AE title 'ORTHANC@NOWHERE' names no route of "
            "this workstation. Next step: check the called AE title in the app's settings (PACS@ROUTE).") \
        in result.stderr
    no_traceback(result)
    closed, listen = free_port(), free_port()
    config = write_workstation_config(tmp_path / "ws.toml", pki=site.pki, issuer=site.issuer, listen=listen,
                                      route_port=closed, return_port=free_port())
    result = launch(site, "rad", str(DCMTK_BIN / "echoscu"), "-aec", "ORTHANC@GW1", "127.0.0.1", str(listen),
                    config=config)
    assert (f"dicom-agent: REFUSED ECHOSCU the connection: the server agent of route GW1 at 127.0.0.1:{closed} "
            "cannot be reached. Next step: check this computer's network connection; if it persists, call the help "
            "desk.") in result.stderr
    assert result.returncode != 0
    no_traceback(result)


def test_an_app_that_does_not_exist_is_a_sentence(site: Site) -> None:
    result = launch(site, "rad", "no-such-viewer-here")
    assert (result.returncode, result.stderr) == (
        2, "dicom-agent: no program 'no-such-viewer-here' found on PATH (this project's own scripts are not looked "
           "in): install the app (DCMTK: apt install dcmtk) or give its full path\n")


def test_an_install_exposes_the_products_commands_and_no_dependencys_script(tmp_path: Path) -> None:
    """`make install` as a hospital package does it: a private environment, the product's commands linked."""
    prefix = tmp_path / "usr"
    subprocess.run(["make", "-s", "install", f"PREFIX={prefix}", f"PYTHON={sys.executable.rsplit('/', 1)[-1]}"],
                   cwd=PROJECT, check=True, capture_output=True, text=True, timeout=900,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert sorted(p.name for p in (prefix / "bin").iterdir()) == [
        "decision-log", "dicom-agent", "dicom-relay", "dicom-server-agent", "pseudonymizer"]
    assert (prefix / "lib" / "dicom-identity-agents" / "bin" / "findscu").exists()  # pynetdicom's, kept private
    path = f"{prefix / 'bin'}:{DCMTK_BIN}:/usr/bin:/bin"
    assert shutil.which("findscu", path=path) == str(DCMTK_BIN / "findscu")
    version = subprocess.run([str(prefix / "bin" / "dicom-agent"), "--version"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip()


def test_a_refusal_is_told_in_the_terminal_of_the_app_refused_only(site: Site, tmp_path: Path) -> None:
    first = host(site, "rad", seconds=8)
    files = make_ct_study(tmp_path / "new", slices=1, patient_id="WRAP-3", accession="WRAPACC3", seed=11)
    joined = run(site, "launch", "--", str(DCMTK_BIN / "storescu"), "-aec", "ORTHANC@GW1", "127.0.0.1",
                 str(site.ports["agent"]), *map(str, files))
    _, err = first.communicate(timeout=60)
    assert ("dicom-agent: REFUSED STORESCU C-STORE: your role does not allow this (C-STORE is not permitted for role "
            "radiologist). Next step: if your work needs it, ask your department's access administrator.") \
        in joined.stderr
    assert (first.returncode, err) == (0, "")  # the first window's app was not refused: it hears nothing


def test_a_server_agent_whose_certificate_is_not_the_routes_is_a_sentence(site: Site, tmp_path: Path) -> None:
    from agent.config import Route

    listen = free_port()
    route = Route(host="127.0.0.1", port=site.ports["server"], server_name="gw2")  # gw1 answers: not the one named
    config = write_workstation_config(tmp_path / "ws.toml", pki=site.pki, issuer=site.issuer, listen=listen,
                                      route_port=site.ports["server"], return_port=free_port(), routes={"GW1": route})
    result = launch(site, "rad", str(DCMTK_BIN / "echoscu"), "-aec", "ORTHANC@GW1", "127.0.0.1", str(listen),
                    config=config)
    assert (f"dicom-agent: REFUSED ECHOSCU the connection: the server agent of route GW1 at 127.0.0.1:"
            f"{site.ports['server']} did not prove who it is (its certificate is not trusted here, or ours is "
            "refused); nothing was sent. Next step: call the help desk.") in result.stderr, result.stderr
    no_traceback(result)
