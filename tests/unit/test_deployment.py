"""Issue 15 item 4: the systemd units and docs/deployment.md's installation steps, as far as a machine
whose init is not systemd allows. The page's commands are run against a temporary root (users, folders,
certificates, configuration, enabling the units: what systemd's offline tools do with ``--root``); the
ones only a running systemd can do (start, reload, journal) have their files and units checked. Then
``systemd-analyze verify`` and ``systemd-analyze security`` on the units as shipped."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from server_agent.config import load

PROJECT = Path(__file__).resolve().parents[2]
DOC = PROJECT / "docs" / "deployment.md"
UNITS = PROJECT / "packaging" / "systemd"
SYSTEM_UNITS = ("dicom-server-agent.service", "hial.service")
VENV_BIN = Path(sys.executable).parent
# What only a running systemd (or the network, or a person) can do: checked for names, not run here.
REAL_MACHINE_ONLY = ("python3 -m venv", "/opt/dicom-identity-agents/bin/pip", "systemctl daemon-reload",
                     "systemctl start", "systemctl reload", "systemctl --user", "journalctl", "check-config",
                     "decision-log verify", "dicom-agent login")
# The security rating systemd-analyze gives the system units (0 nothing exposed .. 10 unconfined), x 10:
# what remains at 1.1 is what a network service needs (network access, Internet and local sockets, no IP
# allow list, the host's root read-only); above 1.5 a hardening line has been lost.
EXPOSURE_LIMIT = 15

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None or shutil.which("systemd-sysusers") is None,
                                reason="systemd's tools are missing: `make test` installs them (APT_PACKAGES)")


def commands() -> list[str]:
    """The lines of the page's ``sh`` code blocks, in order."""
    return [line.strip() for block in re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), re.M | re.S)
            for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def localized(line: str, root: Path) -> str:
    """``line`` aimed at ``root`` instead of this machine, with this checkout's programs."""
    line = line.replace("/opt/dicom-identity-agents/bin/", f"{VENV_BIN}/")
    line = re.sub(r"(?<=[\s\"'=])/(etc|usr|var)/", lambda m: f"{root}/{m.group(1)}/", line)
    return re.sub(r"^(systemd-sysusers|systemd-tmpfiles|systemctl)\b", lambda m: f"{m.group(1)} --root={root}", line)


def test_every_file_and_unit_the_page_names_exists() -> None:
    lines = commands()
    assert len(lines) > 15 and any(line.startswith("systemctl reload") for line in lines)
    text = DOC.read_text()
    named = re.findall(r"(?<![\w/.-])(?:packaging|configs|docs|dicomwire|server_agent|agent)/[\w./-]+\w", text)
    for path in sorted(set(named)):
        assert (PROJECT / path).exists(), path
    for unit in sorted(set(re.findall(r"\b[\w-]+\.service\b", text))):
        assert (UNITS / unit).is_file(), unit
    for line in lines:
        for program in re.findall(r"/opt/dicom-identity-agents/bin/([\w-]+)", line):
            assert program == "pip" or (VENV_BIN / program).exists(), program  # a console script of the wheel


def test_the_installation_steps_run_against_a_temporary_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles gives files to the services' group: that needs root, even in a temporary root")
    root, home = tmp_path / "root", tmp_path / "home"
    home.mkdir()
    (root / "etc").mkdir(parents=True)
    script = ["set -euo pipefail"] + [localized(line, root) for line in commands()
                                      if not any(marker in line for marker in REAL_MACHINE_ONLY)]
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=PROJECT, capture_output=True, text=True,
                            env={**os.environ, "HOME": str(home), "SERVER_AGENT_CLIENT_SECRET": "from-the-provider"},
                            timeout=120)
    assert result.returncode == 0, result.stderr

    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "group").read_text().splitlines()}
    assert {"dicom-agent", "dicom-hial"} <= users.keys() and users["dicom-agent"][6] == "/usr/sbin/nologin"
    assert set(groups["dicom-agents"][3].split(",")) == {"dicom-agent", "dicom-hial"}
    gid = int(groups["dicom-agents"][2])
    folder = root / "etc" / "dicom-agents"
    for path, mode in ((folder, 0o750), (folder / "pki", 0o750), (folder / "server-agent.toml", 0o640),
                       (folder / "server-agent.secret", 0o640), (folder / "pki" / "gw1.key", 0o600)):
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, gid, mode), path
    wanted = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "dicom-server-agent.service"
    assert wanted.is_symlink() and os.readlink(wanted) == "/etc/systemd/system/dicom-server-agent.service"
    assert (home / ".config" / "systemd" / "user" / "dicom-agent.service").is_file()

    # The configuration as installed is valid where it was installed (paths under the temporary root).
    config_text = (folder / "server-agent.toml").read_text()
    moved = tmp_path / "server-agent.toml"
    moved.write_text(re.sub(r'"/(etc|var)/', lambda m: f'"{root}/{m.group(1)}/', config_text))
    config = load(moved)
    assert config.identity.client_secret == "from-the-provider"
    assert config.tls.certificate == folder / "pki" / "gw1.crt"
    assert str(config.server.decision_log).startswith(f"{root}/var/log/dicom-server-agent/")


def unit_for_this_machine(unit: str, folder: Path) -> Path:
    """The unit with its programs taken from this checkout (``verify`` checks that they exist)."""
    path = folder / unit
    path.write_text((UNITS / unit).read_text().replace("/opt/dicom-identity-agents/bin/", f"{VENV_BIN}/"))
    return path


@pytest.mark.parametrize("unit", [*SYSTEM_UNITS, "dicom-agent.service"])
def test_systemd_analyze_verify_accepts_each_unit(unit: str, tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(unit_for_this_machine(unit, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("unit", SYSTEM_UNITS)
def test_each_system_unit_is_hardened_below_the_exposure_limit(unit: str) -> None:
    text = (UNITS / unit).read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes", "SystemCallFilter=@system-service"):
        assert line in text, line
    assert "DynamicUser" not in text and re.search(r"^User=dicom-", text, re.M)
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--threshold={EXPOSURE_LIMIT}",
                             str(UNITS / unit)], capture_output=True, text=True, timeout=60)
    rating = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout + result.stderr)
    assert rating is not None, result.stdout + result.stderr
    assert result.returncode == 0 and float(rating.group(1)) * 10 <= EXPOSURE_LIMIT, rating.group(0)


def test_the_units_groups_are_the_ones_sysusers_makes() -> None:
    made = (UNITS / "dicom-agents.sysusers.conf").read_text()
    for unit in SYSTEM_UNITS:
        user = re.search(r"^User=(\S+)", (UNITS / unit).read_text(), re.M)
        assert user is not None and re.search(rf"^u {user.group(1)} ", made, re.M), unit
    assert "dicom-agents" in (UNITS / "dicom-agents.tmpfiles.conf").read_text() and "g dicom-agents" in made
