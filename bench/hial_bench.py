"""HIAL benchmark (issue 3): PDP decisions and password-grant logins on loopback.

The client keeps one HTTP/1.1 connection with TCP_NODELAY, as a policy enforcement point in
production would; each figure is measured from the client, so it includes the loopback round trip.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
import urllib.parse
from pathlib import Path

from devtools.hial import HialProcess

from .stats import Measure


class _Client:
    def __init__(self, issuer: str) -> None:
        parts = urllib.parse.urlsplit(issuer)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
        self.conn.connect()
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        self.conn.request("POST", path, body, headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def run(work: Path, quick: bool) -> list[Measure]:
    hial = HialProcess(work / "hial", lockout={"max_failures": 1_000_000, "slow_after": 1_000_000}).start()
    try:
        client = _Client(hial.issuer)
        basic = base64.b64encode(b"server-agent:demo-server-agent-secret").decode()
        status, raw = client.post("/token", b"grant_type=client_credentials&scope=authzen%3Aevaluate",
                                  {"Authorization": f"Basic {basic}",
                                   "Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise RuntimeError(f"client credentials failed: {status} {raw[:200]!r}")
        token = json.loads(raw)["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        single = json.dumps({"subject": {"type": "user", "id": "refdoc"}, "action": {"name": "C-MOVE"},
                             "resource": {"type": "patient", "id": "PAT-REF-1"},
                             "context": {"purpose_of_use": "TREAT"}}).encode()
        batch = json.dumps({"subject": {"type": "user", "id": "refdoc"}, "action": {"name": "C-FIND"},
                            "evaluations": [{"resource": {"type": "patient", "id": f"PAT-{i}"}}
                                            for i in range(100)]}).encode()

        def measure(name: str, path: str, body: bytes, count: int, target: float | None,
                    hdrs: dict[str, str] = headers, expect: int = 200) -> Measure:
            for _ in range(min(20, count)):
                client.post(path, body, hdrs)  # warm up
            samples = []
            for _ in range(count):
                started = time.perf_counter()
                status, raw = client.post(path, body, hdrs)
                samples.append(time.perf_counter() - started)
                if status != expect:
                    raise RuntimeError(f"{name}: HTTP {status} {raw[:200]!r}")
            return Measure(name, samples, target)

        n = 300 if quick else 2000
        rows = [
            measure("PDP single evaluation", "/access/v1/evaluation", single, n, 2.0),
            measure("PDP batch of 100 evaluations", "/access/v1/evaluations", batch, n // 10, 20.0),
            measure("password grant (scrypt, no MFA)", "/token",
                    b"grant_type=password&client_id=workstation-agent&username=rad&password=demo-rad",
                    20 if quick else 60, None, {"Content-Type": "application/x-www-form-urlencoded"}),
        ]
        return rows
    finally:
        hial.stop()


def report(rows: list[Measure]) -> str:
    lines = ["| HIAL | p50 ms | p90 ms | p99 ms | per second | target p50 | met |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        target = f"<= {row.target_p50_ms:g} ms" if row.target_p50_ms is not None else "-"
        met = "-" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.name} | {row.p50:.2f} | {row.pct(0.9):.2f} | {row.pct(0.99):.2f} | "
                     f"{row.per_second:.0f} | {target} | {met} |")
    return "\n".join(lines)
