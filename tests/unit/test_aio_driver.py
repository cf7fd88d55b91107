"""The asyncio driver over real loopback sockets, in process: backpressure and upstream failures."""

from __future__ import annotations

import asyncio
import struct

from dicomwire.aio import WRITE_HIGH_WATER
from dicomwire.association import Side
from dicomwire.dimse import Tag, encode_command
from dicomwire.listener import RelayServer
from dicomwire.pdv import Pdv, encode_p_data
from dicomwire.policy import TransparentPolicy
from dicomwire.upstream import Upstream
from tests.unit.test_relay_core import AC, RQ


async def _read_pdu(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(6)
    return header + await reader.readexactly(struct.unpack(">I", header[2:])[0])


def test_backpressure_stops_reading_the_client_while_upstream_is_full() -> None:
    async def scenario() -> None:
        upstream_ready = asyncio.Event()
        stall = asyncio.Event()
        got: dict[str, int] = {"bytes": 0}

        async def slow_pacs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_pdu(reader)  # the A-ASSOCIATE-RQ
            writer.write(AC)
            await writer.drain()
            upstream_ready.set()
            await stall.wait()  # a PACS that stops reading
            while chunk := await reader.read(1 << 16):
                got["bytes"] += len(chunk)

        pacs = await asyncio.start_server(slow_pacs, "127.0.0.1", 0)
        pacs_port = pacs.sockets[0].getsockname()[1]
        server = RelayServer(TransparentPolicy(Upstream(host="127.0.0.1", port=pacs_port)))
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(RQ)
        assert (await _read_pdu(reader))[0] == 0x02
        await upstream_ready.wait()
        command = encode_command({Tag.COMMAND_FIELD: 0x0001, Tag.MESSAGE_ID: 1, Tag.PRIORITY: 0,
                                  Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.1.2",
                                  Tag.AFFECTED_SOP_INSTANCE_UID: "1.2.3", Tag.COMMAND_DATA_SET_TYPE: 1})
        writer.write(encode_p_data([Pdv(3, 0x03, command)]))  # a C-STORE-RQ (CT, context 3) whose data set never ends
        pdu = encode_p_data([Pdv(3, 0x00, b"\0" * 16000)])
        # Push 64 MiB while the PACS reads nothing: the relay must stop reading us, not buffer it all.
        sent = 0
        async def push() -> None:
            nonlocal sent
            for _ in range(4096):
                writer.write(pdu)
                await writer.drain()
                sent += len(pdu)
        pusher = asyncio.create_task(push())
        await asyncio.sleep(1.0)
        (association,) = server.associations
        buffered = association.transports[Side.SERVER].get_write_buffer_size()  # type: ignore[union-attr]
        assert buffered <= WRITE_HIGH_WATER + 512 * 1024
        assert not association.reading[Side.CLIENT]
        assert sent < 32 * 1024 * 1024, "the client was never slowed down"
        stall.set()  # the PACS reads again: everything flows
        await asyncio.wait_for(pusher, 30)
        assert association.reading[Side.CLIENT] or sent == 4096 * len(pdu)
        writer.close()
        await server.shutdown(1)
        pacs.close()

    asyncio.run(scenario())


def test_a_server_raises_a_low_open_file_limit_for_its_associations() -> None:
    """Debian's default soft limit (1024) would fail the 500th association with EMFILE."""
    import subprocess
    import sys

    script = """
import asyncio, resource
from dicomwire.listener import RelayServer
from dicomwire.policy import TransparentPolicy
from dicomwire.upstream import Upstream
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
async def main():
    server = RelayServer(TransparentPolicy(Upstream(host="127.0.0.1", port=9)), max_associations=600)
    await server.start()
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
    await server.shutdown(0.1)
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    soft, hard = map(int, out.stdout.split())
    assert soft == hard and soft >= 2 * 600


def test_a_warm_connection_carries_the_association_and_is_replaced_only_after_it() -> None:
    """The spare's replacement is opened when the association ends: its handshake must not take the
    CPU while the association is being set up."""
    from dicomwire.pdu import RELEASE_RP_BYTES, RELEASE_RQ_BYTES

    async def scenario() -> None:
        accepted: list[float] = []
        carried: list[int] = []

        async def pacs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            number = len(accepted)
            accepted.append(asyncio.get_running_loop().time())
            try:
                await _read_pdu(reader)
            except asyncio.IncompleteReadError:
                return  # a spare closed unused
            carried.append(number)
            writer.write(AC)
            if (await _read_pdu(reader))[0] == 0x05:
                writer.write(RELEASE_RP_BYTES)
                await writer.drain()
            writer.close()

        upstream_server = await asyncio.start_server(pacs, "127.0.0.1", 0)
        target = Upstream(host="127.0.0.1", port=upstream_server.sockets[0].getsockname()[1], warm=2)
        server = RelayServer(TransparentPolicy(target))
        await server.start()
        server.pool.refill(target)
        for _ in range(100):
            if len(server.pool.ready.get(target, [])) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(accepted) == 2
        opened_before = asyncio.get_running_loop().time()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(RQ)
        assert (await _read_pdu(reader))[0] == 0x02
        await asyncio.sleep(0.2)
        assert carried == [0] and len(accepted) == 2  # a spare carried it; no replacement yet
        writer.write(RELEASE_RQ_BYTES)
        assert (await _read_pdu(reader))[0] == 0x06
        writer.close()
        for _ in range(100):
            if len(accepted) == 3:
                break
            await asyncio.sleep(0.01)
        assert len(accepted) == 3 and accepted[2] > opened_before + 0.2  # replaced once it was over
        await server.shutdown(1)
        upstream_server.close()

    asyncio.run(scenario())
