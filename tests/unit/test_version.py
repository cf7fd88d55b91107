"""Every command says which version it is (issue 15 item 8): what an administrator quotes in a ticket."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

COMMANDS = {"dicom-relay": "dicomwire.relay_cli", "dicom-agent": "agent.cli", "dicom-server-agent": "server_agent.cli",
            "decision-log": "audit.cli", "hial-mock": "hial_mock.cli", "pseudonymizer": "pseudonymizer.cli"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_prints_its_version(command: str) -> None:
    out = subprocess.run([sys.executable, "-m", COMMANDS[command], "--version"], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.startswith(f"{command} {metadata.version('dicom-identity-agents')} (Python 3.")
