"""Issue 17 items 1 and 2: refusals told to the right launch and to the desktop; one agent per login,
shared through a private socket; the app the clinician named, not a dependency's script."""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import launch as launching
from agent import notices, shared
from agent.messages import Refusal
from agent.notices import Notifier
from agent.shared import Endpoint, Guest, Host, SharingError

REFUSAL = Refusal(app="FINDSCU", what="C-FIND", reason="this patient is not in your care", step="ask <someone> & go")


def test_a_refusal_goes_to_its_launch_only_and_a_repeat_is_counted_not_repeated() -> None:
    now = [0.0]
    notifier = Notifier(desktop=False, clock=lambda: now[0])
    heard: dict[int, list[str | None]] = {1: [], 2: []}
    notifier.listeners = {1: heard[1].append, 2: heard[2].append}
    notifier.refused(REFUSAL, owner=2)
    notifier.refused(REFUSAL, owner=2)
    assert heard == {1: [], 2: [REFUSAL.line(), None]}
    now[0] = 11.0
    notifier.refused(REFUSAL, owner=None)  # whose it is unknown: everyone hears it
    assert heard[1] == [REFUSAL.line()] and heard[2][-1] == REFUSAL.line()


def test_the_owner_of_a_connection_is_the_launch_whose_process_tree_holds_it() -> None:
    notifier = Notifier(desktop=False)
    with socket.create_server(("127.0.0.1", 0)) as server:
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import socket, sys, time
            s = socket.create_connection(("127.0.0.1", {server.getsockname()[1]}))
            sys.stdout.write("up\\n"); sys.stdout.flush(); time.sleep(30)""")], stdout=subprocess.PIPE, text=True)
        other = subprocess.Popen(["sleep", "30"])  # another launch's app
        try:
            assert child.stdout is not None and child.stdout.readline() == "up\n"
            accepted, peer = server.accept()
            notifier.listeners = {other.pid: print, child.pid: print}
            assert notifier.owner(peer, accepted.getsockname()) == child.pid
            notifier.listeners = {other.pid: print, 4_194_305: print}  # above any pid_max: no process
            assert notifier.owner(peer, accepted.getsockname()) is None
            notifier.listeners = {other.pid: print}  # one launch: every connection is its own
            assert notifier.owner(peer, accepted.getsockname()) == other.pid
            accepted.close()
        finally:
            for process in (child, other):
                process.kill()
                process.wait()


@pytest.mark.skipif(not (shutil.which("dbus-run-session") and shutil.which("notify-send") and shutil.which("dunst")
                         and shutil.which("xvfb-run")), reason="dbus, libnotify-bin, dunst, xvfb: `make test` installs")
def test_a_refusal_is_a_desktop_notification_on_a_real_session_bus(tmp_path: Path) -> None:
    """A real session bus (dbus-run-session), a real notification daemon (dunst, on Xvfb) and
    dbus-monitor: the Notify call (Desktop Notifications Specification 1.2) carries the words, escaped."""
    monitor = tmp_path / "monitor.txt"
    script = tmp_path / "notify.py"
    script.write_text(textwrap.dedent("""
        import asyncio
        from agent.messages import Refusal
        from agent.notices import Notifier
        async def main():
            notifier = Notifier()
            notifier.refused(Refusal(app="FINDSCU", what="C-FIND", reason="this patient is not in your care",
                                     step="ask <someone> & go"))
            await notifier.drain()
        asyncio.run(main())
    """))
    shell = (f"dunst >/dev/null 2>&1 & D=$!; dbus-monitor --session \"interface='org.freedesktop.Notifications',"
             f"member='Notify'\" > {monitor} 2>/dev/null & M=$!; sleep 1; {sys.executable} {script}; sleep 0.5; "
             f"kill $M $D")
    subprocess.run(["dbus-run-session", "--", "xvfb-run", "-a", "sh", "-c", shell], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2], capture_output=True)
    seen = monitor.read_text()
    assert "member=Notify" in seen
    assert 'string "dicom-agent"' in seen and 'string "DICOM access refused"' in seen
    assert ('string "FINDSCU C-FIND: this patient is not in your care.\nNext step: ask &lt;someone&gt; &amp; go."'
            in seen)


def fake_notify_send(folder: Path) -> Path:
    """A notify-send that records its arguments and how many of it run at once, then waits for ``release``."""
    folder.mkdir(exist_ok=True)
    program = folder / "notify-send"
    program.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo start >> {folder}/events
        printf '%s\\n' "$@" >> {folder}/calls
        while [ ! -e {folder}/release ]; do sleep 0.05; done
        echo end >> {folder}/events
    """))
    program.chmod(0o755)
    return program


def most_at_once(events: list[str]) -> int:
    running = peak = 0
    for event in events:
        running += 1 if event == "start" else -1
        peak = max(peak, running)
    return peak


def test_a_burst_of_refusals_runs_a_bounded_number_of_notify_sends(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the attacker review: one notify-send per refusal, unbounded (a storescu of 500 images, each
    refused for its own reason, started 500 processes). Now a few at once; the rest merged into one."""
    fake = fake_notify_send(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")

    async def burst() -> None:
        notifier = Notifier(desktop=True)
        assert notifier._notify_send == str(fake)
        for n in range(50):  # each its own words: no repeat to count
            notifier.refused(Refusal(app=f"APP{n}", what="C-STORE", reason="refused", step="call"))
        await asyncio.sleep(1.0)  # let them all start that would
        (fake.parent / "release").touch()
        await notifier.drain()

    asyncio.run(burst())
    events = (fake.parent / "events").read_text().split()
    calls = (fake.parent / "calls").read_text()
    assert most_at_once(events) <= 2
    assert events.count("start") == 3 == events.count("end")  # 2, then the merged one
    assert notices.MAX_NOTIFYING == 2
    assert "APP0 C-STORE: refused." in calls and "APP1 C-STORE: refused." in calls
    assert "APP49 C-STORE: refused.\nNext step: call.\n(47 more before it: see the terminal window)" in calls


def test_without_a_session_bus_no_desktop_notification_is_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    assert Notifier()._notify_send is None


def test_the_runtime_directory_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = shared.runtime_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o755)
    with pytest.raises(SharingError, match="is not a private folder of this user"):
        shared.runtime_dir()


NOBODY = 65534  # another user (the tests run as root, who can make folders in a stranger's name)


@pytest.mark.skipif(os.getuid() != 0, reason="making another user's folder needs root")
def test_without_xdg_runtime_dir_a_folder_another_user_made_first_is_refused_in_a_sentence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the attacker review: with XDG_RUNTIME_DIR unset another user could create
    /tmp/dicom-agent-UID first. logind's /run/user/UID is used when it exists (nobody else can make it);
    else the temporary folder, and a squatted one is named, with its owner, in a sentence."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    temporary.chmod(0o1777)  # as /tmp is
    monkeypatch.setattr(shared.tempfile, "tempdir", str(temporary))
    logind = tmp_path / "run-user"
    monkeypatch.setattr(shared, "USER_RUNTIME", logind)
    squatted = temporary / f"dicom-agent-{os.getuid()}"
    squatted.mkdir()
    squatted.chmod(0o777)
    os.chown(squatted, NOBODY, NOBODY)
    with pytest.raises(SharingError) as refused:
        shared.runtime_dir()
    assert str(refused.value) == (
        f"{squatted} is not a private folder of this user (it is a folder of user {pwd.getpwuid(NOBODY).pw_name}, "
        "mode 0777; it must be yours, mode 0700): another user may be blocking you. Ask the help desk to remove it, "
        "or set XDG_RUNTIME_DIR to a private directory of yours")
    (logind / str(os.getuid())).mkdir(parents=True, mode=0o700)
    assert shared.runtime_dir() == logind / str(os.getuid()) / "dicom-agent"  # the squatter is out of the way


@pytest.mark.skipif(os.getuid() != 0, reason="making another user's folder needs root")
def test_every_folder_above_the_runtime_folder_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the attacker review: only the last folder was checked; one above it that another user can
    write lets them swap it (rename the folder, put theirs in its place)."""
    shared_above = tmp_path / "open"
    (shared_above / "run").mkdir(parents=True, mode=0o700)
    shared_above.chmod(0o777)  # writable by all, no sticky bit
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared_above / "run"))
    with pytest.raises(SharingError, match=f"^{shared_above} may be changed by another user, so "
                                           f"{shared_above}/run/dicom-agent cannot be trusted"):
        shared.runtime_dir()
    shared_above.chmod(0o755)
    os.chown(shared_above, NOBODY, NOBODY)  # another user's folder: they may rename what is in it
    with pytest.raises(SharingError, match="may be changed by another user"):
        shared.runtime_dir()
    os.chown(shared_above, 0, 0)
    assert shared.runtime_dir() == shared_above / "run" / "dicom-agent"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "gone"))
    with pytest.raises(SharingError, match=f"^{tmp_path}/gone does not exist: set XDG_RUNTIME_DIR"):
        shared.runtime_dir()


def test_a_second_launch_joins_the_first_and_hears_its_own_refusals(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    endpoint = Endpoint.of(tmp_path / "workstation.toml")
    lock = endpoint.try_lock()
    assert lock is not None and endpoint.try_lock() is None  # the host holds it; anyone else joins

    async def scenario() -> tuple[dict | None, dict | None, list]:
        notifier = Notifier(desktop=False)
        host = Host(endpoint, lambda request: None if request.get("user") in (None, "rad") else "other user", "rad",
                    notifier)
        await host.start()
        assert stat.S_IMODE(endpoint.socket.stat().st_mode) == 0o600
        guest, stranger = Guest(endpoint), Guest(endpoint)
        welcome = await asyncio.to_thread(guest.join, {"user": None})
        refused = await asyncio.to_thread(stranger.join, {"user": "tech"})
        assert list(notifier.listeners) == [os.getpid()]  # known by the pid the kernel gives, before its app runs
        notifier.refused(REFUSAL, owner=os.getpid())
        heard = [await asyncio.to_thread(guest.receive)]
        guest.close()
        while host.guests:
            await host.changed.wait()
            host.changed.clear()
        host.close()
        return welcome, refused, heard

    welcome, refused, heard = asyncio.run(scenario())
    os.close(lock)
    assert welcome == {"welcome": {"user": "rad", "break_glass": False}}
    assert refused == {"refused": "other user"}
    assert heard == [{"line": REFUSAL.line()}]
    assert not endpoint.socket.exists()


def test_a_launch_joining_while_the_host_closes_is_told_so_never_welcomed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the attacker review: a launch that connected just before the host closed (its last app
    ended) was welcomed by an agent about to stop, and its app ran on a dead agent."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    endpoint = Endpoint.of(tmp_path / "workstation.toml")

    async def scenario() -> tuple[dict | None, int]:
        host = Host(endpoint, lambda request: None, "rad", Notifier(desktop=False))
        await host.start()
        late = Guest(endpoint)
        late.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.get_running_loop().sock_connect(late.sock, str(endpoint.socket))  # accepted...
        await asyncio.sleep(0.05)
        host.close()  # ...and then the host's last app ended
        late.sock.sendall(shared.encode({"user": None}))
        answer = await asyncio.to_thread(late.receive)
        late.close()
        await asyncio.sleep(0.05)
        return answer, len(host.guests)

    assert asyncio.run(scenario()) == ({"closing": "the agent is stopping"}, 0)


def test_a_launch_told_the_host_is_closing_waits_and_logs_in_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    endpoint = Endpoint.of(tmp_path / "workstation.toml")
    held = endpoint.try_lock()  # the closing host's
    assert held is not None
    answers = iter([{"closing": "the agent is stopping"}, {"closing": "the agent is stopping"}])

    def join(guest: Guest, request: dict) -> dict | None:
        answer = next(answers, None)
        if answer is None:
            os.close(held)  # the host has logged out and let go of the lock
        return answer

    hosted: list[list[str]] = []
    monkeypatch.setattr(Guest, "join", join)
    monkeypatch.setattr(launching, "_host", lambda config, endpoint, args, app, login: hosted.append(app) or 0)
    args = argparse.Namespace(user=None, break_glass=None)
    assert launching.launch(None, endpoint, args, ["/bin/true"], None) == 0  # type: ignore[arg-type]
    assert hosted == [["/bin/true"]]  # it became the host: a login of its own
    assert capsys.readouterr().err == ("dicom-agent: the agent of another window is stopping; this app logs in "
                                       "anew once it has\ndicom-agent: waiting for the login in progress in another "
                                       "window\n")


def test_another_uid_is_not_answered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    endpoint = Endpoint.of(tmp_path / "workstation.toml")

    async def scenario() -> dict | None:
        host = Host(endpoint, lambda request: None, "rad", Notifier(desktop=False))
        await host.start()
        real = os.getuid()
        monkeypatch.setattr(shared.os, "getuid", lambda: real + 1)  # the host now sees a stranger's uid
        try:
            return await asyncio.to_thread(Guest(endpoint).join, {"user": None})
        except SharingError:
            return {"guest": "refused the host"}
        finally:
            host.close()

    # The guest checks the host's uid too: with getuid patched both ways the first check to run wins.
    assert asyncio.run(scenario()) in (None, {"guest": "refused the host"})


def test_the_app_is_found_outside_the_projects_own_scripts(tmp_path: Path) -> None:
    ours = Path(sys.executable).parent
    shadow = ours / "findscu"  # pynetdicom's, installed beside us by its package
    assert shadow.exists() and shadow.resolve() in launching.installed_scripts("findscu")
    theirs = tmp_path / "dcmtk"
    theirs.mkdir()
    program = theirs / "findscu"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert shutil.which("findscu", path=f"{ours}:{theirs}") == str(shadow)  # what PATH alone picks
    assert launching.resolve_app("findscu", f"{ours}:{theirs}") == str(program)
    assert launching.resolve_app("findscu", str(ours)) is None
    assert launching.resolve_app("./anything") == "./anything"


def test_a_program_beside_the_python_of_a_system_install_is_found(tmp_path: Path) -> None:
    """Found by the attacker review: with a system (non-venv) install, the folder of the interpreter and of
    the scripts is /usr/bin (or /usr/local/bin), and excluding it dropped DCMTK's apps with it. Only the
    files the installation's packages put there are passed over, not their folder."""
    beside = Path(sys.executable).parent / "dcmtk-beside-python-probe"  # as /usr/bin/findscu beside /usr/bin/python3
    beside.write_text("#!/bin/sh\n")
    beside.chmod(0o755)
    try:
        assert launching.resolve_app(beside.name, f"{beside.parent}:{tmp_path}") == str(beside)
    finally:
        beside.unlink()


def test_the_exit_status_says_refusal_only_when_the_app_said_success() -> None:
    assert launching.exit_status(0, 0) == 0
    assert launching.exit_status(0, 2) == launching.REFUSED == 4
    assert launching.exit_status(1, 2) == 1
    assert launching.exit_status(-15, 0) == 143


def test_who_may_join_a_login() -> None:
    from agent.oidc import Tokens

    ordinary = Tokens(access_token="a", refresh_token=None, expires_at=0, username="rad")
    assert launching._welcome(ordinary, {"user": None}) is None
    assert launching._welcome(ordinary, {"user": "rad"}) is None
    assert "close them first to log in as tech" in (launching._welcome(ordinary, {"user": "tech"}) or "")
    assert "break-glass needs a login of its own" in (launching._welcome(ordinary, {"break_glass": True}) or "")
    emergency = Tokens(access_token="a", refresh_token=None, expires_at=0, username="rad", purpose_of_use="BTG")
    assert launching._welcome(emergency, {"break_glass": True}) is None
    assert "BREAK-GLASS login runs in another window" in (launching._welcome(emergency, {"user": None}) or "")
