"""The anonymous load of the flood benchmark (issue 13): connections of six kinds against a DICOM TLS
listener at a steady rate, from given source addresses, each followed until it ends.

Run as a process of its own (``python -m bench.flood_load ...``) so that its CPU and event loop are
not those of the user being measured. It prints ``started`` when it launches its first connection,
launches ``--rate`` connections a second for ``--seconds``, waits until every one has ended (or
reached its cap), and writes what each kind did and how each connection ended to ``--out`` (JSON).

The kinds (:data:`KINDS`), each a fixed share of every 20 connections, interleaved:

* ``tcp-check``: connect and close, as a load balancer's TCP check does (half with FIN, half with
  RST, HAProxy's way);
* ``tls-abandoned``: a ClientHello sent, the server's first flight read, then silence;
* ``tls-silent``: TLS completed with a certificate of the site CA, then silence (PS3.8 9.1.5: ARTIM
  ends a transport connection that brings no A-ASSOCIATE-RQ);
* ``partial-rq``: the same, then an A-ASSOCIATE-RQ (PS3.8 9.3.2) trickled one byte every 100 ms;
* ``garbage``: random bytes instead of a ClientHello;
* ``tls-scanner``: a scanner without certificate offering TLS 1.2 with CBC suites only, or TLS
  1.0/1.1 (PS3.15 B.12 / BCP 195 allow neither); the ServerHello's choice is read off the wire.

The two kinds that complete TLS need a certificate of the site's CA (the server agent requires one):
an attacker holding one is a compromised workstation, or a workstation agent's warm spare connections.
Outcomes are what the client sees: who closed, after how long, and what arrived first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import resource
import socket
import ssl
import statistics
import struct
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (name, share of every 20 connections, what it does)
KINDS: tuple[tuple[str, int, str], ...] = (
    ("tcp-check", 5, "connect and close (a load balancer's TCP check; half FIN, half RST)"),
    ("tls-abandoned", 3, "ClientHello sent, the server's first flight read, then silence"),
    ("tls-silent", 3, "TLS completed with a site certificate, then silence"),
    ("partial-rq", 3, "TLS with a site certificate, then an A-ASSOCIATE-RQ trickled 1 byte / 100 ms"),
    ("garbage", 3, "64-2048 random bytes instead of a ClientHello"),
    ("tls-scanner", 3, "no certificate; TLS 1.2 offering CBC suites only, or TLS 1.0/1.1"),
)
CONNECT_TIMEOUT = 10.0
# How long the load waits for the server to end a connection it holds: ARTIM (30 s), then the 30 s
# that asyncio and uvloop wait by default for the peer's close_notify, plus a margin. A connection
# still open then is reported as such: the server did not bound it.
HOLD_CAP = 75.0
TRICKLE_INTERVAL = 0.1
CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:"
              "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-SHA256:AES128-SHA:AES256-SHA:AES128-SHA256:DES-CBC3-SHA"
              ":@SECLEVEL=0")
TLS_VERSIONS = {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2"}
# What a kind reports: how the connection ended, and when the server's close_notify came (if it did).
Outcome = str | tuple[str, float | None]
PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF", 5: "A-RELEASE-RQ",
             6: "A-RELEASE-RP", 7: "A-ABORT"}


@dataclass(frozen=True, kw_only=True)
class Target:
    host: str
    port: int
    server_name: str
    pki: Path
    rq: bytes  # the A-ASSOCIATE-RQ that partial-rq trickles


def mix(only: list[str] | None = None) -> tuple[tuple[str, int, str], ...]:
    """The kinds of a run: all of :data:`KINDS`, or those named (a worst case: one kind alone)."""
    unknown = set(only or ()) - {name for name, _, _ in KINDS}
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}: choose from {[name for name, _, _ in KINDS]}")
    return tuple(kind for kind in KINDS if not only or kind[0] in only)


def schedule(kinds: tuple[tuple[str, int, str], ...]) -> list[str]:
    """One round of the kinds by their shares, interleaved (smooth weighted round robin)."""
    total = sum(share for _, share, _ in kinds)
    credit = {name: 0 for name, _, _ in kinds}
    out = []
    for _ in range(total):
        for name, share, _ in kinds:
            credit[name] += share
        best = max(credit, key=lambda name: credit[name])
        credit[best] -= total
        out.append(best)
    return out


def _anonymous_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def scanner_context(probe: str) -> ssl.SSLContext:
    context = _anonymous_context()
    if probe == "TLS 1.0/1.1":
        context.set_ciphers("ALL:@SECLEVEL=0")
        with contextlib.suppress(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # on purpose: what a scanner offers
            context.minimum_version, context.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    else:
        context.set_ciphers(CBC_SUITES)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def _certified_context(pki: Path) -> ssl.SSLContext:
    """A client holding a certificate of the site CA (``intruder``), checking the server's."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "intruder.crt"), str(pki / "intruder.key"))
    return context


def server_hello(data: bytes) -> tuple[str, int] | None:
    """(version, cipher suite) of a ServerHello at the start of ``data`` (RFC 5246 7.4.1.3), or None."""
    if len(data) < 44 or data[0] != 22 or data[5] != 2:
        return None
    pos = 9
    version = TLS_VERSIONS.get(struct.unpack_from(">H", data, pos)[0], f"0x{data[pos]:02x}{data[pos + 1]:02x}")
    pos += 2 + 32
    pos += 1 + data[pos]  # session id
    if len(data) < pos + 2:
        return None
    return version, struct.unpack_from(">H", data, pos)[0]


class TlsPipe:
    """TLS driven by hand over a stream (``ssl.MemoryBIO``), so the load sees every byte the server
    sends: what it chose in its ServerHello, and whether it closed before saying anything."""

    def __init__(self, context: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 server_name: str) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)
        self.reader, self.writer = reader, writer
        self.received = bytearray()  # every raw byte from the server until the handshake ends
        self.started = time.monotonic()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.writer.write(data)

    async def _feed(self, timeout: float) -> bool:
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
        except ConnectionError:  # a reset: the server closed with our bytes unread
            chunk = b""
        if not chunk:
            self.incoming.write_eof()
            return False
        self.received += chunk
        self.incoming.write(chunk)
        return True

    async def hello(self, timeout: float) -> bool:
        """Send the ClientHello and read the server's first flight; False if it closed instead."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        self._flush()
        return await self._feed(timeout)

    async def handshake(self, timeout: float) -> str | None:
        """The whole handshake: None when done, else why it failed (the server's alert, or eof)."""
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return None
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._feed(timeout):
                    return "eof"
            except ssl.SSLError as error:
                self._flush()  # our own alert, if any
                return str(error.reason or error.strerror or type(error).__name__).lower().replace("_", " ")

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    async def until_closed(self, cap: float) -> tuple[str, bytes, float | None]:
        """Application data until the server ends the connection: (how, what arrived first, when its
        close_notify came). Like a peer that never answers, the load does not send its own
        close_notify: the server's TLS layer then holds the socket until its own shutdown timeout."""
        first, notified, started = b"", None, self.started
        try:
            async with asyncio.timeout(cap):
                while notified is None:
                    if not await self._feed(cap):
                        return "eof", first, notified
                    with contextlib.suppress(ssl.SSLWantReadError):
                        while data := self.tls.read(65536):
                            first = first or data
                        notified = time.monotonic() - started  # read() gives b"" on close_notify
                how, _ = await _raw_until_closed(self.reader, cap)
                return ("close_notify, then TCP " + how) if how != "cap" else "cap", first, notified
        except ssl.SSLZeroReturnError:
            return "close_notify", first, time.monotonic() - started
        except TimeoutError:
            return "cap", first, notified
        except (ConnectionError, ssl.SSLError):
            return "reset", first, notified


async def _raw_until_closed(reader: asyncio.StreamReader, cap: float) -> tuple[str, bytes]:
    first = b""
    try:
        async with asyncio.timeout(cap):
            while chunk := await reader.read(65536):
                first = first or chunk
            return "eof", first
    except TimeoutError:
        return "cap", first
    except ConnectionError:
        return "reset", first


def _ended(how: str, first: bytes, tls: bool) -> str:
    if how == "cap":
        return f"still open after {HOLD_CAP:g} s (our cap): not bounded"
    said = ""
    if first and tls:
        said = f" after {PDU_NAMES.get(first[0], f'PDU type {first[0]}')},"
    elif first:
        said = " after a TLS alert," if first[0] == 21 else f" after {len(first)} bytes,"
    return f"closed by the server:{said} {how.replace('eof', 'EOF')}"


def _refused(pipe: TlsPipe, reason: str) -> str:
    if not pipe.received:
        return "closed by the server before any TLS reply"
    return f"handshake refused ({reason})"


async def tcp_check(_: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> str:
    if n % 2:  # HAProxy ends its checks with a reset (SO_LINGER 0) so it keeps no TIME_WAIT
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return "closed by the check (RST)"
    writer.close()
    return "closed by the check (FIN)"


async def garbage(_: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> str:
    rng = random.Random(n)
    writer.write(rng.randbytes(rng.randint(64, 2048)))
    how, first = await _raw_until_closed(reader, HOLD_CAP)
    return _ended(how, first, tls=False)


async def tls_abandoned(target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> str:
    pipe = TlsPipe(_anonymous_context(), reader, writer, target.server_name)
    if not await pipe.hello(HOLD_CAP):
        return "closed by the server before any TLS reply"
    how, first = await _raw_until_closed(reader, HOLD_CAP)
    return "ServerHello read, then " + _ended(how, first, tls=False)


async def tls_silent(target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> Outcome:
    pipe = TlsPipe(_certified_context(target.pki), reader, writer, target.server_name)
    failed = await pipe.handshake(HOLD_CAP)
    if failed is not None:
        return _refused(pipe, failed)
    how, first, notified = await pipe.until_closed(HOLD_CAP)
    return "TLS up, then " + _ended(how, first, tls=True), notified


async def partial_rq(target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> Outcome:
    pipe = TlsPipe(_certified_context(target.pki), reader, writer, target.server_name)
    failed = await pipe.handshake(HOLD_CAP)
    if failed is not None:
        return _refused(pipe, failed)
    closing = asyncio.get_running_loop().create_task(pipe.until_closed(HOLD_CAP))
    for sent in range(len(target.rq) - 1):  # never the last byte: the request is never whole
        if closing.done() or writer.is_closing():
            break
        with contextlib.suppress(ssl.SSLError):
            pipe.send(target.rq[sent : sent + 1])
        await asyncio.wait([closing], timeout=TRICKLE_INTERVAL)
    how, first, notified = await closing
    return "TLS up, RQ trickling, then " + _ended(how, first, tls=True), notified


async def tls_scanner(target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> Outcome:
    probe = ("TLS 1.2 CBC only", "TLS 1.0/1.1")[n % 2]
    context = scanner_context(probe)
    names = {int(c["id"]) & 0xFFFF: str(c["name"]) for c in context.get_ciphers()}
    pipe = TlsPipe(context, reader, writer, target.server_name)
    failed = await pipe.handshake(HOLD_CAP)
    hello = server_hello(bytes(pipe.received))
    chose = f"server chose {names.get(hello[1], hex(hello[1]))} ({hello[0]})" if hello else "no ServerHello"
    if failed is None:
        how, first, notified = await pipe.until_closed(HOLD_CAP)
        return f"{probe}: {chose}, handshake done, then {_ended(how, first, tls=True)}", notified
    if not pipe.received:
        return f"{probe}: closed by the server before any TLS reply"
    return f"{probe}: {chose}, then refused ({failed})"


KindRun = Callable[[Target, asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[Outcome]]
KIND_RUNS: dict[str, KindRun] = {"tcp-check": tcp_check, "tls-abandoned": tls_abandoned, "tls-silent": tls_silent,
                             "partial-rq": partial_rq, "garbage": garbage, "tls-scanner": tls_scanner}


@dataclass
class Load:
    """The connections of one run: what each did, and how many were open at once."""

    target: Target
    kinds: tuple[tuple[str, int, str], ...]
    # (kind, outcome, seconds from connect to the end, seconds to the server's close_notify or None)
    results: list[tuple[str, str, float, float | None]]
    open_now: int = 0
    open_peak: int = 0

    async def one(self, kind: str, n: int, source: str) -> None:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.target.host, self.target.port, local_addr=(source, 0)), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            self.results.append((kind, f"connect failed ({type(error).__name__})", time.monotonic() - started, None))
            return
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)
        outcome: Outcome
        try:
            outcome = await KIND_RUNS[kind](self.target, reader, writer, n)
        except TimeoutError:
            outcome = f"still open after {HOLD_CAP:g} s (our cap): not bounded"
        except (OSError, EOFError) as error:
            outcome = f"closed by the server: {type(error).__name__}"
        finally:
            self.open_now -= 1
            writer.transport.abort()
        label, notified = outcome if isinstance(outcome, tuple) else (outcome, None)
        self.results.append((kind, label, time.monotonic() - started, notified))

    async def run(self, sources: list[str], rate: float, seconds: float) -> float:
        """Launch ``rate`` connections a second for ``seconds``; wait for them all; the launch time."""
        loop = asyncio.get_running_loop()
        kinds, rng, tasks = schedule(self.kinds), random.Random(13), []
        start = loop.time()
        print("started", flush=True)
        n = 0
        while n / rate < seconds:
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(self.one(kinds[n % len(kinds)], n, rng.choice(sources))))
            n += 1
        launched = loop.time() - start
        print("launched", flush=True)
        await asyncio.gather(*tasks)
        return launched


def summarize(load: Load, launched: float) -> dict[str, Any]:
    total = sum(share for _, share, _ in load.kinds)
    kinds: dict[str, Any] = {}
    for name, share, what in load.kinds:
        ended: dict[str, list[tuple[float, float | None]]] = collections.defaultdict(list)
        for kind, outcome, seconds, notified in load.results:
            if kind == name:
                ended[outcome].append((seconds, notified))
        outcomes = {}
        for outcome, rows in sorted(ended.items(), key=lambda kv: -len(kv[1])):
            times, notices = [t for t, _ in rows], [n for _, n in rows if n is not None]
            outcomes[outcome] = {"count": len(rows), "median_s": statistics.median(times), "max_s": max(times),
                                 "close_notify_median_s": statistics.median(notices) if notices else None}
        kinds[name] = {"share": share / total, "what": what, "launched": sum(map(len, ended.values())),
                       "outcomes": outcomes}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"launched": len(load.results), "launch_seconds": launched,
            "per_minute": len(load.results) / launched * 60, "peak_open": load.open_peak,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "kinds": kinds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.flood_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-name", default="gw1")
    parser.add_argument("--pki", type=Path, required=True, help="folder with ca.crt, intruder.crt, intruder.key")
    parser.add_argument("--rq", type=Path, required=True, help="file holding the A-ASSOCIATE-RQ to trickle")
    parser.add_argument("--rate", type=float, default=20.0, help="connections a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sources", default="127.0.0.2", help="source addresses, comma-separated")
    parser.add_argument("--kinds", default="", help="only these kinds, comma-separated (default: the whole mix)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # held connections, several thousand at most
    target = Target(host=args.host, port=args.port, server_name=args.server_name, pki=args.pki,
                    rq=args.rq.read_bytes())
    load = Load(target, mix([k for k in args.kinds.split(",") if k]), [])
    launched = asyncio.run(load.run(args.sources.split(","), args.rate, args.seconds))
    args.out.write_text(json.dumps(summarize(load, launched), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
