"""Issue 17 item 3 end to end: `dicom-agent launch` with no terminal, as from a desktop icon.

A real X display (Xvfb) shows the sign-in dialog; xdotool finds it by its title and types as a person
would; the app is DCMTK's echoscu through the workstation agent to a server-agent double and Orthanc,
signed in at a live HIAL. Screenshots of the dialog are kept under the test's tmp folder (each path is
printed). With no display either, the device flow (RFC 8628) opens the browser: here a script named in
``BROWSER`` that signs in at the verification page with requests, as a person in a browser would.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import jwt
import pyotp
import pytest
import requests

from agent import certs
from agent.device import WINDOW_TITLE
from agent.dialog import TITLE
from devtools.dicomdata import make_ct_study
from devtools.hial import HialProcess
from devtools.peers import DCMTK_BIN, Orthanc, dcmtk_env, free_port
from devtools.server_double import ServerDouble
from devtools.site import workstation_config
from tests.support.xvfb import Xvfb, missing, near, read_text, squeezed
from tomlconf import write

PROJECT = Path(__file__).resolve().parents[2]
MFA_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # mfarad's TOTP secret in the demo HIAL's users

pytestmark = pytest.mark.skipif(bool(missing()), reason=f"missing Debian packages {missing()}: run `make test`")


class Desktop:
    def __init__(self, root: Path, hial: HialProcess, double: ServerDouble, agent_port: int, config: Path,
                 device_config: Path, xvfb: Xvfb) -> None:
        self.root, self.hial, self.double, self.agent_port = root, hial, double, agent_port
        self.config, self.device_config, self.xvfb = config, device_config, xvfb
        self.launched: list[subprocess.Popen[str]] = []

    def launch(self, *app: str, user: str | None = "rad", display: bool = True, config: Path | None = None,
               browser: Path | None = None, tz: str | None = None) -> subprocess.Popen[str]:
        """`dicom-agent launch` with standard input not a terminal (/dev/null), as a desktop starts it."""
        env = self.xvfb.env(dcmtk_env()) if display else {k: v for k, v in dcmtk_env().items()
                                                           if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.pop("BROWSER", None)
        if browser is not None:
            env["BROWSER"] = str(browser)
        if tz is not None:
            env["TZ"] = tz
        who = ["--user", user] if user else []
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(config or self.config),
                                    "launch", *who, "--", *app], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT)
        self.launched.append(process)
        return process

    def stop_launched(self) -> None:
        """After a failed test: no launch left waiting at a dialog."""
        for process in self.launched:
            if process.poll() is None:
                process.kill()
                process.communicate()

    def echo(self) -> tuple[str, ...]:
        return str(DCMTK_BIN / "echoscu"), "-aec", "ORTHANC@GW1", "127.0.0.1", str(self.agent_port)

    def last_user(self) -> str:
        identity = self.double.policy.seen[-1].identity
        assert identity is not None, "the app's association carried no identity"
        return str(jwt.decode(identity.primary, options={"verify_signature": False})["preferred_username"])


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desktop]:
    root = tmp_path_factory.mktemp("desktop")
    pki = root / "pki"
    certs.init_ca(pki)
    certs.issue(pki, "gw1", ["127.0.0.1"])
    certs.issue(pki, "ws1", ["127.0.0.1"])
    xvfb = Xvfb(root / "xvfb.log").start()
    hial = HialProcess(root / "hial").start()
    forward_port, double_return, agent_port, agent_return = (free_port() for _ in range(4))
    orthanc = Orthanc(root / "orthanc", modalities={})
    orthanc.start()
    orthanc.upload(make_ct_study(root / "study", slices=1, patient_id="DESK001", accession="DESKACC"))
    double = ServerDouble(pki, ("127.0.0.1", orthanc.dicom_port), forward_port, double_return,
                          ("127.0.0.1", agent_return)).start()
    config = workstation_config(pki=pki, issuer=hial.issuer, listen=agent_port, route_port=forward_port,
                                return_port=agent_return, session_file=root / "session.json")
    device = config.model_copy(update={"identity_provider": config.identity_provider.model_copy(
        update={"login": "device"})})
    desktop = Desktop(root, hial, double, agent_port, write(root / "workstation.toml", config),
                      write(root / "device.toml", device), xvfb)
    yield desktop
    double.stop()
    orthanc.stop()
    hial.stop()
    xvfb.stop()


@pytest.fixture(autouse=True)
def _one_test_at_a_time(desktop: Desktop) -> Iterator[None]:
    """A launch that a failed test left at its dialog is ended: the next test sees its own window only."""
    yield
    desktop.stop_launched()


def _dialog(desktop: Desktop, process: subprocess.Popen[str]) -> str:
    try:
        window = desktop.xvfb.find_window(TITLE, timeout=30)
        # Visible is not yet ready for keys: Tk gives its field the keyboard once it has drawn the window.
        # Under load, keys typed at once were lost ("invalid username or password" instead of the
        # one-time code prompt, in one full run).
        time.sleep(1.0)
        return window
    except TimeoutError:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"no sign-in dialog appeared; launch said: {err}") from None


def _shot(desktop: Desktop, window: str, path: Path) -> Path:
    time.sleep(0.3)  # the last keystroke drawn
    desktop.xvfb.screenshot(window, path)
    print(f"screenshot of the sign-in dialog: {path}")
    return path


def _shows(desktop: Desktop, window: str, path: Path, words: str, timeout: float = 30) -> str:
    """What the dialog reads (OCR of a screenshot kept at ``path``) once ``words`` are on it, and no
    attempt is under way."""
    deadline = time.monotonic() + timeout
    while True:
        text = read_text(_shot(desktop, window, path))
        if near(words, text) and squeezed("Signing in") not in text:  # exact: "Sign in in your" is near it
            return text
        assert time.monotonic() < deadline, f"the dialog does not say {words!r}: it reads {text!r} (see {path})"


def test_dialog_signs_in_and_the_app_runs_through_the_agent(desktop: Desktop, tmp_path: Path) -> None:
    launch = desktop.launch(*desktop.echo())
    window = _dialog(desktop, launch)
    desktop.xvfb.type_into(window, "demo-rad")
    text = _shows(desktop, window, tmp_path / "sign-in-dialog.png", f"Identity provider: {desktop.hial.issuer}")
    assert near("Sign in to open DICOM images", text) and near("User name rad", text)
    # The password is not shown; no error before an attempt.
    assert not near("demo-rad", text) and not near("Invalid username", text)
    desktop.xvfb.key(window, "Return")
    out, err = launch.communicate(timeout=120)
    assert launch.returncode == 0, err
    assert "demo-rad" not in out + err  # the password is never echoed
    assert desktop.last_user() == "rad"  # echoscu's association carried rad's token
    assert not desktop.xvfb.windows(TITLE)  # the dialog is gone


def test_other_programs_on_the_display_cannot_script_the_dialog(desktop: Desktop) -> None:
    """Tk's `send` would let any X client run Tcl in the dialog (read the password as it is typed); a Tk
    program of our own on the same display lists the Tk interpreters there: the dialog's is not one."""
    import tkinter

    launch = desktop.launch(*desktop.echo())
    window = _dialog(desktop, launch)
    other = tkinter.Tk(screenName=desktop.xvfb.display, className="other")
    try:
        interps = other.tk.splitlist(other.tk.call("winfo", "interps"))
    finally:
        other.destroy()
    assert list(interps) == ["other"]  # our own only: the dialog (`dicom-agent`) takes no scripts
    desktop.xvfb.key(window, "Escape")
    assert launch.wait(60) == 3


def test_a_wrong_password_is_said_in_the_dialog_which_stays_for_another_try(desktop: Desktop,
                                                                              tmp_path: Path) -> None:
    launch = desktop.launch(*desktop.echo())
    window = _dialog(desktop, launch)
    desktop.xvfb.type_into(window, "not-the-password")
    desktop.xvfb.key(window, "Return")
    _shows(desktop, window, tmp_path / "sign-in-dialog-wrong-password.png", "Invalid username or password")
    assert launch.poll() is None, "launch gave up after one wrong password"
    desktop.xvfb.type_into(window, "demo-rad")  # the refused password was cleared: typed afresh
    desktop.xvfb.key(window, "Return")
    _, err = launch.communicate(timeout=120)
    assert launch.returncode == 0, err
    assert desktop.last_user() == "rad"


def test_a_lockout_says_until_when_in_local_time(desktop: Desktop, tmp_path: Path) -> None:
    first = time.time()
    for _ in range(5):  # the HIAL's max_failures for this user from this address (127.0.0.1, as the agent)
        refused = requests.post(f"{desktop.hial.issuer}/token", timeout=30, data={
            "grant_type": "password", "username": "researcher", "password": "guess", "client_id": "workstation-agent"})
        assert refused.status_code == 400
    launch = desktop.launch(*desktop.echo(), user="researcher", tz="Europe/Brussels")
    window = _dialog(desktop, launch)
    desktop.xvfb.type_into(window, "demo-researcher")
    locked = time.time()
    desktop.xvfb.key(window, "Return")
    text = _shows(desktop, window, tmp_path / "sign-in-dialog-locked.png", "locked until")
    # Locked for lock_seconds (900) from the fifth failure, said in the desktop's zone (TZ), to the minute.
    # From the fifth failure (or the refused attempt, were it to renew the lock), to the minute, +1 s for the
    # HIAL's rounding up to the second.
    until = {squeezed(_brussels(moment + 900 + extra)) for moment in (first, locked) for extra in (0, 1)}
    # "01:37 (in 15 min)": the clock and the wait exact, the "(in" between them as OCR reads it ("gn" once).
    assert any(re.search(f"{clock}.{{0,3}}{squeezed('15 min')}", text) for clock in until), text
    desktop.xvfb.key(window, "Escape")
    _, err = launch.communicate(timeout=60)
    assert launch.returncode == 3 and "sign-in cancelled" in err


def _brussels(moment: float) -> str:
    """The minute a lock ending at ``moment`` is said to end, in Brussels: the next whole minute."""
    return dt.datetime.fromtimestamp(math.ceil(moment / 60) * 60, ZoneInfo("Europe/Brussels")).strftime("%H:%M")


def test_the_one_time_code_is_asked_for_in_the_dialog(desktop: Desktop, tmp_path: Path) -> None:
    launch = desktop.launch(*desktop.echo(), user="mfarad")
    window = _dialog(desktop, launch)
    desktop.xvfb.type_into(window, "demo-mfarad")
    desktop.xvfb.key(window, "Return")
    text = _shows(desktop, window, tmp_path / "sign-in-dialog-one-time-code.png",
                  "Enter the one-time code from your authenticator")
    assert near("Password One-time code", text)  # the field's label too
    desktop.xvfb.type_into(window, pyotp.TOTP(MFA_SECRET).now())
    desktop.xvfb.key(window, "Return")
    _, err = launch.communicate(timeout=120)
    assert launch.returncode == 0, err
    assert desktop.last_user() == "mfarad"


def test_cancel_starts_nothing_and_says_so(desktop: Desktop, tmp_path: Path) -> None:
    marker = tmp_path / "app-ran"
    launch = desktop.launch("/bin/sh", "-c", f"touch {marker}")
    window = _dialog(desktop, launch)
    desktop.xvfb.key(window, "Escape")
    _, err = launch.communicate(timeout=60)
    assert launch.returncode == 3
    assert "sign-in cancelled; nothing was started" in err
    assert "Traceback" not in err
    assert not marker.exists()


def _browser(tmp_path: Path, issuer: str, user: str | None) -> tuple[Path, Path]:
    """A script that plays the user's browser: opens the verification URI it is given, then (for a
    ``user``) signs in there and approves (the HIAL's /device form, RFC 8628 section 3.3), as a person would."""
    seen = tmp_path / "browser-opened"
    script = tmp_path / "browser"
    script.write_text(f"""#!{sys.executable}
import sys, requests
url = sys.argv[1]
open({str(seen)!r}, "w").write(url)
page = requests.get(url, timeout=10)
assert page.ok and url.startswith({issuer!r})
if {user!r} is not None:
    sys.path.insert(0, {str(PROJECT)!r})
    from tests.e2e.test_desktop_login import approve
    sys.exit(0 if approve({issuer!r}, url, {user!r}) else 1)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, seen


def approve(issuer: str, url: str, user: str) -> bool:
    """Sign in at the verification page the URI names and approve, as a person in the browser."""
    code = parse_qs(urlsplit(url).query).get("user_code", [""])[0]
    answer = requests.post(f"{issuer}/device", timeout=10, data={
        "user_code": code, "username": user, "password": f"demo-{user}", "action": "approve"})
    return "Approved" in answer.text


def test_no_terminal_and_no_display_signs_in_with_the_device_flow_in_the_browser(desktop: Desktop,
                                                                                  tmp_path: Path) -> None:
    browser, seen = _browser(tmp_path, desktop.hial.issuer, "rad")
    launch = desktop.launch(*desktop.echo(), user=None, display=False, browser=browser)
    _, err = launch.communicate(timeout=120)
    assert launch.returncode == 0, err
    assert "no terminal and no display" in err and "signing in with the device flow" in err
    opened = seen.read_text()
    assert f"To sign in, open {opened} and enter the code " in err  # printed too, for a person to type
    assert desktop.last_user() == "rad"


def test_device_login_configured_shows_the_code_while_the_browser_signs_in(desktop: Desktop, tmp_path: Path) -> None:
    browser, seen = _browser(tmp_path, desktop.hial.issuer, None)  # opens the page; the person signs in below
    launch = desktop.launch(*desktop.echo(), user=None, config=desktop.device_config, browser=browser)
    try:
        window = desktop.xvfb.find_window(WINDOW_TITLE, timeout=30)
    except TimeoutError:
        launch.kill()
        raise AssertionError(f"no device sign-in window; launch said: {launch.communicate()[1]}") from None
    deadline = time.monotonic() + 30
    while not seen.exists():
        assert time.monotonic() < deadline, "the browser was not opened"
        time.sleep(0.2)
    code = parse_qs(urlsplit(seen.read_text()).query)["user_code"][0]
    text = _shows(desktop, window, tmp_path / "device-sign-in-window.png", code)
    assert near("Sign in in your browser", text)
    # The address it opened, not another (the attacker review: it opened verification_uri_complete and
    # showed verification_uri).
    assert seen.read_text() == f"{desktop.hial.issuer}/device?user_code={code}"
    assert near(f"Open {desktop.hial.issuer}/device?user_code={code}", text), text
    assert not desktop.xvfb.windows(TITLE)  # no password dialog: the provider's page asks
    assert approve(desktop.hial.issuer, seen.read_text(), "tech")
    _, err = launch.communicate(timeout=120)
    assert launch.returncode == 0, err
    assert not desktop.xvfb.windows(WINDOW_TITLE)
    assert desktop.last_user() == "tech"


def test_cancel_in_the_device_window_starts_nothing(desktop: Desktop, tmp_path: Path) -> None:
    browser, _ = _browser(tmp_path, desktop.hial.issuer, None)
    marker = tmp_path / "app-ran"
    launch = desktop.launch("/bin/sh", "-c", f"touch {marker}", user=None, config=desktop.device_config,
                            browser=browser)
    window = desktop.xvfb.find_window(WINDOW_TITLE, timeout=30)
    desktop.xvfb.key(window, "Escape")
    _, err = launch.communicate(timeout=60)
    assert launch.returncode == 3 and "sign-in cancelled; nothing was started" in err
    assert not marker.exists()
