"""The C-MOVE return path: only the PACS's C-STORE sub-operations of an outstanding move pass, and only
the images that move asked for, within the count the PACS announced (deny by default)."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

import pytest

from audit.events import Action, Reason
from dicomwire.association import Side
from dicomwire.dimse import Tag, decode_command, encode_command
from dicomwire.policy import ConnectionInfo
from dicomwire.questions import Permit, Refuse, RequestQuestion
from server_agent.authorization import Facts, read_facts
from server_agent.moves import Move, MoveRegistry
from server_agent.returns import ReturnPolicy

CT = "1.2.840.10008.5.1.4.1.1.2"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def write(self, event: Any) -> None:
        self.events.append((event.kind.value, event.record()))

    problem = None


class Owner:
    """Stands for the association that made the move: records what it is asked to decide."""

    def __init__(self, who: tuple[str, str] = ("user", "rad")) -> None:
        self.who_key = who
        self.decided: list[Facts] = []

    def decide(self, facts: Facts, move: Move) -> Permit:
        self.decided.append(facts)
        move.relayed += 1
        return Permit()


def run(value: Any) -> Any:
    """A verdict or registry answer that may come later (the shared store is asynchronous), now."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    return asyncio.run(wait())


def command(fields: dict[int, Any]) -> Any:
    return decode_command(encode_command(fields))


def store(sop: str = "1.2.3", originator: tuple[str, int] | None = ("VIEWER@WS1", 7)) -> dict[int, Any]:
    fields: dict[int, Any] = {Tag.COMMAND_FIELD: 0x0001, Tag.MESSAGE_ID: 5, Tag.PRIORITY: 0,
                              Tag.AFFECTED_SOP_CLASS_UID: CT, Tag.AFFECTED_SOP_INSTANCE_UID: sop,
                              Tag.COMMAND_DATA_SET_TYPE: 1}
    if originator:
        fields[Tag.MOVE_ORIGINATOR_AE_TITLE], fields[Tag.MOVE_ORIGINATOR_MESSAGE_ID] = originator
    return fields


ECHO = {Tag.COMMAND_FIELD: 0x0030, Tag.MESSAGE_ID: 6, Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.1.1",
        Tag.COMMAND_DATA_SET_TYPE: 0x0101}
N_ACTION = {Tag.COMMAND_FIELD: 0x0130, Tag.MESSAGE_ID: 7, Tag.REQUESTED_SOP_CLASS_UID: "1.2.840.10008.1.20.1",
            Tag.REQUESTED_SOP_INSTANCE_UID: "1.2.840.10008.1.20.1.1", Tag.ACTION_TYPE_ID: 1,
            Tag.COMMAND_DATA_SET_TYPE: 1}


def element(group: int, number: int, value: bytes, pad: bytes) -> bytes:
    """One Implicit VR LE element (PS3.5 6.2: text pads with a space, a UID with a NUL)."""
    value += pad * (len(value) % 2)
    return group.to_bytes(2, "little") + number.to_bytes(2, "little") + len(value).to_bytes(4, "little") + value


def head(patient: str = "PAT-1", study: str = "1.2.840.1") -> bytes:
    """An implicit VR LE data set head: Patient ID and Study UID (ascending tags)."""
    return element(0x0010, 0x0020, patient.encode(), b" ") + element(0x0020, 0x000D, study.encode(), b"\0")


def question(side: Side, fields: dict[int, Any], data_set: bytes = b"") -> RequestQuestion:
    return RequestQuestion(side=side, context_id=1, abstract_syntax=CT, transfer_syntax="1.2.840.10008.1.2",
                           command=command(fields), data_set=data_set, data_set_complete=False)


def move_of(owner: Owner, *, level: str = "STUDY", study: str = "1.2.840.1", message_id: int = 7,
            calling: str = "VIEWER@WS1", expires: float = 1e12) -> Move:
    move_command = command({Tag.COMMAND_FIELD: 0x0021, Tag.MESSAGE_ID: message_id, Tag.PRIORITY: 0,
                            Tag.AFFECTED_SOP_CLASS_UID: MOVE, Tag.MOVE_DESTINATION: "VIEWER@WS1",
                            Tag.COMMAND_DATA_SET_TYPE: 1})
    identifier = element(0x0008, 0x0052, level.encode(), b" ") + element(0x0020, 0x000D, study.encode(), b"\0")
    facts = read_facts(move_command, identifier, "1.2.840.10008.1.2", complete=True, action=Action.C_MOVE)
    return Move(owner=owner, facts=facts, destination="VIEWER@WS1", calling_ae=calling,  # type: ignore[arg-type]
                message_id=message_id, expires=expires)


def returns(moves: MoveRegistry) -> tuple[Any, Recorded]:
    log = Recorded()
    config = SimpleNamespace(pacs={}, workstations={})
    policy = ReturnPolicy(config, moves, log, None, pacs_hosts={"127.0.0.1"})  # type: ignore[arg-type]
    association = policy.open(ConnectionInfo(association_id="9", peer=("127.0.0.1", 4242), local=None))
    association.destination = "VIEWER@WS1"
    return association, log


@pytest.mark.parametrize(("side", "fields"), [(Side.CLIENT, ECHO), (Side.CLIENT, N_ACTION), (Side.SERVER, store())],
                         ids=["echo", "n-action", "store from the workstation"])
def test_anything_but_the_pacss_c_store_is_refused(side: Side, fields: dict[int, Any]) -> None:
    moves = MoveRegistry()
    owner = Owner()
    run(moves.add(move_of(owner)))
    association, log = returns(moves)
    verdict = run(association.request(question(side, fields, head())))
    assert isinstance(verdict, Refuse) and "return path" in verdict.comment
    assert log.events[-1][1]["decision"] == "deny" and log.events[-1][1]["reason"] == "unsupported_service"
    assert owner.decided == []  # refused before any policy


def test_a_store_of_the_moved_study_is_decided_as_its_move() -> None:
    moves = MoveRegistry()
    owner = Owner()
    run(moves.add(move_of(owner)))
    association, _ = returns(moves)
    assert isinstance(run(association.request(question(Side.CLIENT, store(), head()))), Permit)
    assert [f.patient for f in owner.decided] == ["PAT-1"]


@pytest.mark.parametrize(("fields", "data_set", "reason"), [
    (store(originator=("OTHER@WS1", 7)), head(), Reason.NO_MATCHING_MOVE),  # another app's move
    (store(originator=("VIEWER@WS1", 8)), head(), Reason.NO_MATCHING_MOVE),  # another Message ID
    (store(), head(study="1.2.840.999"), Reason.NOT_IN_MOVE),  # an image of a study nobody moved
], ids=["other originator", "other message id", "other study"])
def test_an_image_nobody_asked_for_is_refused(fields: dict[int, Any], data_set: bytes, reason: Reason) -> None:
    moves = MoveRegistry()
    owner = Owner()
    run(moves.add(move_of(owner)))
    association, log = returns(moves)
    assert isinstance(run(association.request(question(Side.CLIENT, fields, data_set))), Refuse)
    assert log.events[-1][1]["reason"] == reason.value and owner.decided == []


def test_no_more_images_than_the_pacs_announced() -> None:
    moves = MoveRegistry()
    owner = Owner()
    move = move_of(owner)
    run(moves.add(move))
    run(moves.respond(move, command({
                          Tag.COMMAND_FIELD: 0x8021, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 7, Tag.STATUS: 0xFF00,
                          Tag.AFFECTED_SOP_CLASS_UID: MOVE, Tag.COMMAND_DATA_SET_TYPE: 0x0101,
                          Tag.NUMBER_OF_REMAINING_SUBOPERATIONS: 1, Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS: 1,
                          Tag.NUMBER_OF_FAILED_SUBOPERATIONS: 0, Tag.NUMBER_OF_WARNING_SUBOPERATIONS: 0}), False))
    association, log = returns(moves)
    for n in range(2):
        assert isinstance(run(association.request(question(Side.CLIENT, store(f"1.2.3.{n}"), head()))), Permit)
    assert isinstance(run(association.request(question(Side.CLIENT, store("1.2.3.9"), head()))), Refuse)
    assert log.events[-1][1]["reason"] == Reason.NOT_IN_MOVE.value


def test_moves_of_two_users_to_one_destination_are_ambiguous() -> None:
    moves = MoveRegistry()
    run(moves.add(move_of(Owner(("user", "rad")))))
    run(moves.add(move_of(Owner(("user", "refdoc")))))
    association, log = returns(moves)
    assert isinstance(run(association.request(question(Side.CLIENT, store(), head()))), Refuse)
    assert log.events[-1][1]["reason"] == Reason.AMBIGUOUS_MOVE.value


def test_a_move_leaves_the_registry_with_its_end_and_when_it_expires() -> None:
    now = [100.0]
    moves = MoveRegistry(clock=lambda: now[0])
    owner = Owner()
    ended, expiring = move_of(owner), move_of(owner, message_id=8, expires=150.0)
    run(moves.add(ended))
    run(moves.add(expiring))
    assert run(moves.match("VIEWER@WS1", "VIEWER@WS1", 7, {"study_instance_uid": "1.2.840.1"}))[0] is ended
    run(moves.remove(ended))  # its association is over (ServerAssociation.close)
    assert run(moves.match("VIEWER@WS1", "VIEWER@WS1", 7, {"study_instance_uid": "1.2.840.1"}))[0] is None
    assert run(moves.active("VIEWER@WS1"))
    now[0] = 151.0
    assert not run(moves.active("VIEWER@WS1"))  # move_timeout passed


def test_a_pacs_configured_by_name_is_recognised_by_its_addresses() -> None:
    from server_agent.routing import pacs_addresses

    by_name = SimpleNamespace(name="PACS", host="localhost")
    by_address = SimpleNamespace(name="OTHER", host="10.9.8.7")
    unknown = SimpleNamespace(name="GONE", host="no-such-host.invalid")
    addresses = pacs_addresses([by_name, by_address, unknown])  # type: ignore[list-item]
    assert "127.0.0.1" in addresses  # what localhost resolves to: where its associations come from
    assert {"localhost", "10.9.8.7", "no-such-host.invalid"} <= addresses


def test_a_move_goes_with_the_association_that_made_it_and_never_to_another() -> None:
    """Issue 12: the registry holds the Move objects of their associations; closing one association takes its
    moves away, and another association's moves to the same destination stay its own."""
    from dicomwire.policy import Ending
    from server_agent.association import ServerPolicy

    async def body() -> None:
        moves = MoveRegistry()
        factory = ServerPolicy(SimpleNamespace(), None, None, moves, Recorded())  # type: ignore[arg-type]
        first = factory.open(ConnectionInfo(association_id="1", peer=None, local=None))
        second = factory.open(ConnectionInfo(association_id="2", peer=None, local=None))
        mine, theirs = move_of(first, message_id=7), move_of(second, message_id=8)  # type: ignore[arg-type]
        for association, move in ((first, mine), (second, theirs)):
            association.moves.append(move)
            await moves.add(move)
        image = {"study_instance_uid": "1.2.840.1"}
        assert (await moves.match("VIEWER@WS1", "VIEWER@WS1", 7, image))[0] is mine
        first.close(Ending(reason="released", established=True))
        await asyncio.sleep(0)  # the shared store is told at once, in the background
        assert await moves.match("VIEWER@WS1", "VIEWER@WS1", 7, image) == (None, Reason.NO_MATCHING_MOVE)
        assert (await moves.match("VIEWER@WS1", "VIEWER@WS1", 8, image))[0] is theirs  # untouched by the other's end
        second.close(Ending(reason="released", established=True))
        await asyncio.sleep(0)
        assert not await moves.active("VIEWER@WS1")

    asyncio.run(body())


def test_without_the_shared_state_the_return_path_refuses_each_store(tmp_path: Any) -> None:
    """Fail closed: a Redis that does not answer (nothing listens on its port) refuses every sub-operation
    (0124H), logged with the reason, instead of guessing which move it belongs to."""
    from devtools.redis_server import RedisServer
    from server_agent.config import ThrottleConfig
    from server_agent.shared_config import SharedSection
    from server_agent.shared_redis import RedisShared, connect

    down = RedisServer(tmp_path / "redis")  # never started
    shared = RedisShared(connect(SharedSection(redis=down.url, timeout=0.5)), "t:", ThrottleConfig())
    association, log = returns(MoveRegistry(shared))
    verdict = run(association.request(question(Side.CLIENT, store(), head())))
    assert isinstance(verdict, Refuse) and "shared state unavailable" in verdict.comment
    assert log.events[-1][1]["reason"] == Reason.SHARED_STATE_UNAVAILABLE.value
    assert "Redis unreachable" in log.events[-1][1]["detail"]
