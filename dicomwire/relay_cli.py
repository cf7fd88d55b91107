"""``dicom-relay``: relay DICOM associations unchanged, optionally tracing every PDU and DIMSE message.

    dicom-relay --listen 0.0.0.0:11112 --to pacs.example.org:4242 --trace

A tool for PACS administrators (a DICOM-aware tcpdump when ``--trace`` is on) and the one-hop
benchmark target. SIGINT/SIGTERM stop accepting and give live associations ``--shutdown-grace``
seconds to finish before they are aborted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import signal
import sys

from .aio import run
from .limits import RelayLimits
from .listener import RelayServer
from .policy import TransparentPolicy
from .trace import Fact, format_fact
from .upstream import Upstream
from .version import add_version


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _positive(kind: type[int] | type[float]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = RelayLimits()
    parser = add_version(argparse.ArgumentParser(prog="dicom-relay", description=__doc__.split("\n\n")[0]))
    parser.add_argument("--listen", required=True, type=_host_port, metavar="HOST:PORT")
    parser.add_argument("--to", required=True, type=_host_port, metavar="HOST:PORT", help="the DICOM peer to relay to")
    parser.add_argument("--trace", action="store_true", help="print one line per PDU and per DIMSE message")
    parser.add_argument("--max-associations", type=_positive(int), default=200)
    parser.add_argument("--max-pdu", type=_positive(int), default=defaults.max_pdu_length,
                        help="largest P-DATA-TF accepted (bytes); larger announced maxima are lowered to it")
    parser.add_argument("--idle-timeout", type=_positive(float), default=defaults.idle_timeout)
    parser.add_argument("--artim-timeout", type=_positive(float), default=defaults.artim_timeout)
    parser.add_argument("--connect-timeout", type=_positive(float), default=defaults.connect_timeout)
    parser.add_argument("--shutdown-grace", type=_positive(float), default=10.0)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    limits = RelayLimits(
        max_pdu_length=args.max_pdu,
        idle_timeout=args.idle_timeout,
        artim_timeout=args.artim_timeout,
        connect_timeout=args.connect_timeout,
    )
    upstream = Upstream(host=args.to[0], port=args.to[1])

    def trace(association: str, fact: Fact) -> None:
        print(f"{dt.datetime.now():%H:%M:%S.%f} #{association} {format_fact(fact)}", flush=True)

    async def serve() -> int:
        server = RelayServer(
            TransparentPolicy(upstream),
            host=args.listen[0],
            port=args.listen[1],
            limits=limits,
            max_associations=args.max_associations,
            trace=trace if args.trace else None,
        )
        try:
            await server.start()
        except OSError as error:
            logging.getLogger("dicom-relay").error("cannot listen on %s:%d: %s", *args.listen, error)
            return 2
        host, port = server.address
        print(f"dicom-relay: listening on {host}:{port}, relaying to {upstream}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        await stop.wait()
        await server.shutdown(args.shutdown_grace)
        return 0

    return int(run(serve))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
