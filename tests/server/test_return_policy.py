"""The C-MOVE return listener's policy: only the PACS's C-STORE sub-operations pass (deny by default)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from dicomwire.aio import ConnectionInfo
from dicomwire.association import Side
from dicomwire.dimse import Tag, decode_command, encode_command
from dicomwire.relay import DimseQuestion, Permit, Refuse
from server_agent.policy import MoveRegistry, ReturnPolicy

CT = "1.2.840.10008.5.1.4.1.1.2"


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def write(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


def question(side: Side, fields: dict[int, Any]) -> DimseQuestion:
    return DimseQuestion(id=1, side=side, context_id=1, abstract_syntax=CT,
                         command=decode_command(encode_command(fields)), data_set=b"", data_set_complete=False)


STORE = {Tag.COMMAND_FIELD: 0x0001, Tag.MESSAGE_ID: 5, Tag.PRIORITY: 0, Tag.AFFECTED_SOP_CLASS_UID: CT,
         Tag.AFFECTED_SOP_INSTANCE_UID: "1.2.3", Tag.COMMAND_DATA_SET_TYPE: 1}
ECHO = {Tag.COMMAND_FIELD: 0x0030, Tag.MESSAGE_ID: 6, Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.1.1",
        Tag.COMMAND_DATA_SET_TYPE: 0x0101}
N_ACTION = {Tag.COMMAND_FIELD: 0x0130, Tag.MESSAGE_ID: 7, Tag.REQUESTED_SOP_CLASS_UID: "1.2.840.10008.1.20.1",
            Tag.REQUESTED_SOP_INSTANCE_UID: "1.2.840.10008.1.20.1.1", Tag.ACTION_TYPE_ID: 1,
            Tag.COMMAND_DATA_SET_TYPE: 1}


@pytest.mark.parametrize(("side", "fields", "allowed"), [
    (Side.CLIENT, STORE, True),  # the PACS's C-STORE sub-operation
    (Side.CLIENT, ECHO, False),
    (Side.CLIENT, N_ACTION, False),
    (Side.SERVER, STORE, False),  # nothing travels back from the workstation as a request
], ids=["store from the PACS", "echo", "n-action", "store from the workstation"])
def test_only_c_store_sub_operations_from_the_pacs_pass(side: Side, fields: dict[int, Any], allowed: bool) -> None:
    log = Recorded()
    config = SimpleNamespace(pacs={}, workstations={})
    decided: list[str] = []

    class Requests:  # the server policy: decides a C-STORE sub-operation as its C-MOVE
        async def decide_move_sub_operation(self, question: DimseQuestion, destination: str) -> Permit:
            decided.append(question.command.name)
            log.write("authorization", decision="permit")
            return Permit()

    policy = ReturnPolicy(config, MoveRegistry(), log, None, Requests())  # type: ignore[arg-type]
    verdict = asyncio.run(policy.decide(question(side, fields), ConnectionInfo(1, ("127.0.0.1", 4242), None)))
    if allowed:
        assert isinstance(verdict, Permit) and decided == ["C-STORE-RQ"]
    else:
        assert isinstance(verdict, Refuse) and "return path" in verdict.comment
        assert log.events[-1][1]["decision"] == "deny" and log.events[-1][1]["reason"] == "unsupported_service"
        assert decided == []  # refused before any policy


def test_a_pacs_configured_by_name_is_recognised_by_its_addresses() -> None:
    from server_agent.policy import pacs_addresses

    by_name = SimpleNamespace(name="PACS", host="localhost")
    by_address = SimpleNamespace(name="OTHER", host="10.9.8.7")
    unknown = SimpleNamespace(name="GONE", host="no-such-host.invalid")
    addresses = pacs_addresses([by_name, by_address, unknown])  # type: ignore[list-item]
    assert "127.0.0.1" in addresses  # what localhost resolves to: where its associations come from
    assert {"localhost", "10.9.8.7", "no-such-host.invalid"} <= addresses


def test_move_registry_finds_the_moves_a_sub_operation_may_belong_to() -> None:
    import time

    moves = MoveRegistry()
    later = time.monotonic() + 60
    moves.allow("VIEWER@WS1", 1, later, "VIEWER@WS1", 7)
    moves.allow("VIEWER@WS1", 2, later, "OTHER@WS1", 7)
    moves.allow("VIEWER@WS1", 3, later, "VIEWER@WS1", 1)
    moves.allow("VIEWER@WS2", 4, later, "VIEWER@WS2", 7)
    assert moves.origins("VIEWER@WS1", "VIEWER@WS1", 7) == [1]
    assert moves.origins("VIEWER@WS1", "VIEWER@WS1", None) == [1, 3]  # no Message ID: every move of that AE
    assert sorted(moves.origins("VIEWER@WS1", None, None)) == [1, 2, 3]
    assert moves.origins("VIEWER@WS1", "VIEWER@WS1", 9) == []
    assert moves.origins("VIEWER@WS3", None, None) == []
    moves.end(1)
    assert moves.origins("VIEWER@WS1", "VIEWER@WS1", 7) == []  # its association is over
    moves.allow("VIEWER@WS9", 5, time.monotonic() - 1, "VIEWER@WS9", 1)
    assert moves.origins("VIEWER@WS9", "VIEWER@WS9", 1) == []  # expired (move_timeout)
