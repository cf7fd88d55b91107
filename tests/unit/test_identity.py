"""User Identity Negotiation sub-items 0x58/0x59 (PS3.7 D.3.3.7)."""

from __future__ import annotations

import pytest
from pynetdicom import pdu as pn_pdu
from pynetdicom import pdu_items as pn_items

from dicomwire.errors import EncodeError, ProtocolError
from dicomwire.identity import (
    UserIdentity,
    UserIdentityType,
    add_identity_response,
    extract_user_identity,
    identity_response,
    insert_user_identity,
    strip_user_identity,
)
from dicomwire.items import ItemType
from dicomwire.pdu import PduType, decode_associate
from tests.support.wire import golden, hex_bytes, pynetdicom_ac, pynetdicom_rq

# PS3.7 Table D.3-14 for type 2, annotated.
USER_PASSCODE_ITEM = hex_bytes("""
    58 00 00 10     # User Identity RQ sub-item, reserved, item length 16
    02              # type 2: username and passcode
    01              # positive response requested
    00 05           # primary field length 5
    61 6c 69 63 65  # "alice"
    00 05           # secondary field length 5
    73 33 63 72 74  # "s3crt"
""")


def test_annotated_type_2_item_decodes_and_encodes() -> None:
    from dicomwire.items import decode_items

    (item,) = decode_items(USER_PASSCODE_ITEM, 0, len(USER_PASSCODE_ITEM), where="test")
    identity = UserIdentity.from_item(item)
    assert identity.kind is UserIdentityType.USERNAME_AND_PASSCODE
    assert (identity.primary, identity.secondary, identity.positive_response_requested) == (b"alice", b"s3crt", True)
    assert identity.to_item().encode() == USER_PASSCODE_ITEM
    theirs = pn_items.UserIdentitySubItemRQ()
    theirs.decode(USER_PASSCODE_ITEM)
    assert (theirs.primary_field, theirs.secondary_field) == (b"alice", b"s3crt")


@pytest.mark.parametrize("kind", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("positive", [False, True])
def test_insert_matches_pynetdicom_and_round_trips(kind: int, positive: bool) -> None:
    primary = b"eyJhbGciOi.x.y" if kind == 5 else b"alice"
    secondary = b"s3cret" if kind == 2 else b""
    bare = decode_associate(pynetdicom_rq())
    ours = insert_user_identity(bare, UserIdentity(type=kind, primary=primary, secondary=secondary,
                                                   positive_response_requested=positive))
    theirs = pynetdicom_rq(identity=(kind, primary, secondary, positive))
    assert ours.encode() == theirs  # same sub-item, same place (after the implementation version name)
    found = extract_user_identity(decode_associate(theirs))
    assert found == UserIdentity(type=kind, primary=primary, secondary=secondary, positive_response_requested=positive)
    stripped = strip_user_identity(decode_associate(theirs))
    assert stripped.encode() == bare.encode()
    assert extract_user_identity(stripped) is None


@pytest.mark.parametrize(("name", "kind", "primary", "secondary"), [
    ("dcmtk-storescu-user-password.hex", 2, b"alice", b"s3cret"),
    ("dcmtk-storescu-jwt.hex", 5, None, b""),
])
def test_identity_from_real_dcmtk_requests(name: str, kind: int, primary: bytes | None, secondary: bytes) -> None:
    data = golden(name)
    rq = decode_associate(data)
    identity = extract_user_identity(rq)
    assert identity is not None and identity.type == kind and identity.secondary == secondary
    if primary is not None:
        assert identity.primary == primary
    else:
        assert identity.primary.startswith(b"eyJ")  # DCMTK sends the file as it is, newline included
    # Strip then insert again gives back the very same bytes (the sub-item was last).
    again = insert_user_identity(strip_user_identity(rq), identity)
    assert again.encode() == data


def test_second_user_identity_is_refused() -> None:
    rq = decode_associate(pynetdicom_rq(identity=(1, b"alice", b"", False)))
    info = rq.user_information
    assert info is not None
    doubled = rq.with_user_information(type(info)((*info.sub_items, info.find(ItemType.USER_IDENTITY_RQ))))
    with pytest.raises(ProtocolError, match="more than one"):
        extract_user_identity(decode_associate(doubled.encode()))


def test_sixteen_bit_lengths_are_respected() -> None:
    rq = decode_associate(pynetdicom_rq())
    insert_user_identity(rq, UserIdentity(type=5, primary=b"j" * 60000))  # fits
    with pytest.raises(EncodeError):
        UserIdentity(type=5, primary=b"j" * 70000).to_item()
    with pytest.raises(EncodeError):
        UserIdentity(type=2, primary=b"u" * 40000, secondary=b"p" * 30000).to_item()


def test_truncated_identity_fields_are_protocol_errors() -> None:
    from dicomwire.items import Item

    with pytest.raises(ProtocolError):
        UserIdentity.from_item(Item(0x58, bytes.fromhex("0200 00ff 6162")))
    with pytest.raises(ProtocolError):
        UserIdentity.from_item(Item(0x58, bytes.fromhex("05")))


def test_identity_ac_item_built_stripped_and_read_by_pynetdicom() -> None:
    ac_bytes = pynetdicom_ac()
    ac = decode_associate(ac_bytes)
    with_response = add_identity_response(ac, b"")
    assert identity_response(with_response) == b""
    theirs = pn_pdu.A_ASSOCIATE_AC()
    theirs.decode(with_response.encode())
    assert any(isinstance(i, pn_items.UserIdentitySubItemAC) for i in theirs.user_information.user_data)
    assert strip_user_identity(with_response).encode() == ac_bytes
    assert with_response.pdu_type == PduType.ASSOCIATE_AC


def test_repr_never_shows_secrets() -> None:
    identity = UserIdentity(type=2, primary=b"alice", secondary=b"hunter2")
    assert "hunter2" not in repr(identity) and "alice" not in repr(identity)
