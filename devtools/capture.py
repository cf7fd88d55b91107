"""Capture the first PDU a real DICOM client sends (its A-ASSOCIATE-RQ), for golden-byte tests.

    python -m devtools.capture storescu --user alice --password secret -- FILE.dcm  > tests/golden/x.hex

A one-shot TCP listener reads one whole PDU, answers A-ABORT and closes.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading

from .peers import DCMTK_BIN, dcmtk_env


def _read_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed before a whole PDU arrived")
        data += chunk
    return data


def read_pdu(conn: socket.socket) -> bytes:
    """Read one whole PDU (PS3.8 9.3.1: 6-byte header, then the length it declares)."""
    header = _read_exact(conn, 6)
    (length,) = struct.unpack(">I", header[2:6])
    return header + _read_exact(conn, length)


def capture_first_pdu(tool: str, *args: str, files: tuple[str, ...] = (), timeout: float = 20.0) -> bytes:
    """Run DCMTK ``tool`` against a one-shot listener; return the bytes of its first PDU."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(timeout)
    port = listener.getsockname()[1]
    result: dict[str, bytes] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(timeout)
            result["pdu"] = read_pdu(conn)
            conn.sendall(bytes.fromhex("07000000000400000000"))  # A-ABORT, service user

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    subprocess.run([str(DCMTK_BIN / tool), *args, "-aec", "CAPTURE", "127.0.0.1", str(port), *files],
                   capture_output=True, timeout=timeout, env=dcmtk_env())
    thread.join(timeout)
    listener.close()
    if "pdu" not in result:
        raise RuntimeError(f"{tool} sent no PDU")
    return result["pdu"]


if __name__ == "__main__":
    argv = sys.argv[2:]
    files: tuple[str, ...] = ()
    if "--" in argv:
        files = tuple(argv[argv.index("--") + 1 :])
        argv = argv[: argv.index("--")]
    pdu = capture_first_pdu(sys.argv[1], *argv, files=files)
    for offset in range(0, len(pdu), 32):
        print(pdu[offset : offset + 32].hex(" "))
