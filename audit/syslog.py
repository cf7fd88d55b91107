"""Audit messages to the site's audit record repository by syslog, spooled so none is lost.

RFC 5424 messages (facility 10 authpriv, severity 5 notice: ``<85>``; MSGID ``DICOM+RFC3881``; the
XML after a UTF-8 BOM), sent over TLS with octet counting (RFC 5425: ``LEN SP MSG``) or over UDP
(RFC 5426, one message per datagram). Every message is first written to the spool directory; a
sender thread delivers them in order and removes each once sent, retrying with a growing delay
while the repository is down. Before each send over TCP the connection is checked for a close from
the other side, so a restarted repository does not swallow the first message.

``decision-log alerts`` sends its own messages the same way (:func:`rfc5424` with its own MSGID,
severity and STRUCTURED-DATA, :meth:`SpooledSender.submit_message`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dicomwire.tls import client_context

log = logging.getLogger("audit.syslog")

FACILITY = 10  # security/authorization (authpriv), RFC 5424 6.2.1
NOTICE, WARNING = 5, 4
PRI = FACILITY * 8 + NOTICE  # authpriv.notice
BOM = b"\xef\xbb\xbf"
_SD_NAME = re.compile(r"[!#-<>-\\^-~]{1,32}")  # PRINTUSASCII except = SP ] " (RFC 5424 6.3.2-6.3.3)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyslogTarget:
    host: str
    port: int
    transport: str = "tls"  # "tls" (RFC 5425) | "udp" (RFC 5426)
    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None
    server_name: str | None = None


def rfc5424(message: bytes, app: str, hostname: str | None = None, when: dt.datetime | None = None, *,
            msgid: str = "DICOM+RFC3881", severity: int = NOTICE, structured: str = "-") -> bytes:
    """An RFC 5424 (section 6) message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD BOM MSG``."""
    stamp = (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="microseconds")
    host = _header_field(hostname or socket.gethostname(), 255)
    header = (f"<{FACILITY * 8 + severity}>1 {stamp.replace('+00:00', 'Z')} {host} {_header_field(app, 48)} "
              f"{os.getpid()} {_header_field(msgid, 32)} {structured} ")
    return header.encode() + BOM + message


def _header_field(value: str, limit: int) -> str:
    """A header field: PRINTUSASCII only, at most ``limit`` characters, NILVALUE when empty (RFC 5424 6)."""
    printable = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return printable or "-"


def structured_data(sd_id: str, params: dict[str, object]) -> str:
    """One SD-ELEMENT (RFC 5424 6.3): ``[ID name="value" ...]``. Values are escaped (``"``, ``\\``, ``]``)
    and their control characters written as ``\\xNN``, so a value from the log (a user name, an AE
    title) can neither end the element nor start another line; names that are no SD-NAME are dropped."""
    if not _SD_NAME.fullmatch(sd_id):
        raise ValueError(f"not an SD-ID: {sd_id!r}")
    parts = [sd_id]
    for name, value in params.items():
        if _SD_NAME.fullmatch(name):
            escaped = plain(str(value)).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
            parts.append(f'{name}="{escaped}"')
    return "[" + " ".join(parts) + "]"


def plain(value: str) -> str:
    """Text with its control characters (line breaks included) written as ``\\xNN``: one line, always."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", value)


class SpooledSender:
    def __init__(self, target: SyslogTarget, spool: Path, app: str = "dicom-server-agent") -> None:
        self.target = target
        self.spool = spool
        self.app = app
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        existing = sorted(spool.glob("*.msg"))
        self._next = int(existing[-1].stem) + 1 if existing else 1
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._context: ssl.SSLContext | None = None
        if target.transport == "tls":
            # RFC 5425 5.1 with the profile of PS3.15 B.12 (dicomwire.tls): the repository verified, and
            # our certificate presented where one is configured (mutual authentication).
            self._context = client_context(ca=target.ca, certificate=target.certificate if target.key else None,
                                           key=target.key)
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()

    def submit(self, xml: bytes) -> None:
        """Spool one audit message (durably) and wake the sender."""
        self.submit_message(rfc5424(xml, self.app))

    def submit_message(self, payload: bytes) -> None:
        """Spool one whole syslog message (made by :func:`rfc5424`) and wake the sender."""
        with self._lock:
            name = self.spool / f"{self._next:012d}.msg"
            self._next += 1
        tmp = name.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, name)
        self._wake.set()

    def pending(self) -> int:
        return len(list(self.spool.glob("*.msg")))

    def _connect(self) -> socket.socket:
        t = self.target
        if t.transport == "udp":
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw = socket.create_connection((t.host, t.port), timeout=5)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self._context is not None
        return self._context.wrap_socket(raw, server_hostname=t.server_name or t.host)

    def _alive(self, sock: socket.socket) -> bool:
        if self.target.transport == "udp":
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return True
        try:
            sock.setblocking(False)
            data = sock.recv(1)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except OSError:
            return False
        finally:
            sock.setblocking(True)
        return bool(data)

    def _send(self, payload: bytes) -> None:
        if self._sock is None or not self._alive(self._sock):
            if self._sock is not None:
                self._sock.close()
            self._sock = self._connect()
        if self.target.transport == "udp":
            self._sock.sendto(payload, (self.target.host, self.target.port))
        else:
            self._sock.sendall(str(len(payload)).encode() + b" " + payload)  # RFC 5425 octet counting

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            files = sorted(self.spool.glob("*.msg"))
            if not files:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                for file in files:
                    self._send(file.read_bytes())
                    file.unlink()
                delay = 0.2
            except OSError as error:
                log.warning("audit repository %s:%d unreachable (%s); %d message(s) spooled", self.target.host,
                            self.target.port, error, self.pending())
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
