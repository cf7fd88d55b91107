"""A foreign OpenID provider for the tests (issue 14): panva's ``oidc-provider`` from the npm registry,
installed by ``make foreign-idp`` (``npm ci`` from the committed lock file) and run by ``server.mjs``
on loopback. Its access tokens are RFC 9068 JWTs (``typ`` ``at+jwt``) for the resources it is told of.

Users log in through its development login form (any account id it knows, no password): enough to
get real tokens of a provider we did not write, never a model of authentication.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.peers import free_port

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node") or "/usr/bin/node"


def installed() -> str | None:
    """None when the provider can run, else why not (for a test's skip reason)."""
    if not Path(NODE).exists():
        return "node is not installed: run `make test` (Debian packages nodejs npm)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider is not installed: run `make foreign-idp` (npm ci in devtools/foreign_idp)"
    return None


@dataclass
class ForeignIdp:
    """One running provider. ``clients``: RFC 7591 metadata; ``accounts``: id -> claims its tokens carry;
    ``resources``: resource indicator (RFC 8707, the ``aud``) -> ``{"scope": ..., "ttl": ...}``;
    ``default_resources``: client id -> the resource its tokens are for when it names none."""

    folder: Path
    clients: list[dict[str, Any]]
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_resources: dict[str, str] = field(default_factory=dict)
    issuer: str = ""
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> ForeignIdp:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "foreign-idp.json"
        config.write_text(json.dumps({"port": free_port(), "clients": self.clients, "accounts": self.accounts,
                                      "resources": self.resources, "default_resources": self.default_resources}))
        self.process = subprocess.Popen([NODE, str(HERE / "server.mjs"), str(config)], cwd=HERE, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("oidc-provider exited: " + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("issuer: "):
                self.issuer = line.split(" ", 1)[1].strip()
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise TimeoutError("oidc-provider did not print its issuer: " + "".join(self.lines))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def client_credentials(self, client_id: str, secret: str, scope: str, resource: str = "") -> dict[str, Any]:
        form = {"grant_type": "client_credentials", "scope": scope} | ({"resource": resource} if resource else {})
        response = httpx.post(f"{self.issuer}/token", auth=(client_id, secret), timeout=10, data=form)
        if response.status_code != 200:
            raise RuntimeError(f"client credentials at {self.issuer}: HTTP {response.status_code} {response.text}")
        return dict(response.json())

    def approve_device(self, user_code: str, account: str) -> str:
        """RFC 8628 section 3.3 as the user does it: the verification page, the user code, the
        development login and consent, the confirmation; the last page's text."""
        with httpx.Client(timeout=10, follow_redirects=True) as browser:
            page = browser.get(f"{self.issuer}/device")
            for _ in range(8):
                form = re.search(r'<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>', page.text, re.S)
                if form is None:
                    return page.text
                fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"',
                                         form.group(2)))
                if 'name="user_code"' in form.group(2):
                    fields["user_code"] = user_code
                if 'name="login"' in form.group(2):
                    fields |= {"login": account, "password": "x"}
                page = browser.post(urllib.parse.urljoin(str(page.url), form.group(1)), data=fields)
            raise RuntimeError(f"device approval at {self.issuer} did not end: {page.text[:300]}")
