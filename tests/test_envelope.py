"""Envelopes open only for their recipient, unmodified, in the context they were sealed for."""

import dataclasses
import struct

import pytest
from cryptography.exceptions import InvalidTag

from protocol.canonical import canonical_json
from protocol.envelope import (
    EnvelopeContext,
    generate_private_key,
    key_from_hex,
    key_to_hex,
    load_private_key,
    open_envelope,
    private_key_bytes,
    public_key_bytes,
    read_context,
    seal,
)
from protocol.errors import ProtocolError

ALICE, BOB, CAROL = generate_private_key(), generate_private_key(), generate_private_key()
CTX = EnvelopeContext(
    federation_id="fed-A",
    round=7,
    sender="alice",
    recipient="bob",
    stage="train.share",
    roster="0x" + "aa" * 32,
)
SECRET = b"share bytes " * 100


def sealed() -> bytes:
    return seal(ALICE, public_key_bytes(BOB), SECRET, context=CTX)


def rewrite_header(envelope: bytes, context: EnvelopeContext) -> bytes:
    """Replace the clear header, keep nonce and ciphertext: what a replaying attacker can do."""
    (length,) = struct.unpack_from(">H", envelope, 1)
    header = canonical_json(dataclasses.asdict(context))
    return envelope[:1] + struct.pack(">H", len(header)) + header + envelope[3 + length :]


def test_recipient_opens_what_the_sender_sealed() -> None:
    envelope = sealed()
    assert open_envelope(BOB, public_key_bytes(ALICE), envelope, context=CTX) == SECRET
    assert read_context(envelope) == CTX
    assert SECRET[:24] not in envelope


def test_each_envelope_gets_a_fresh_nonce() -> None:
    assert sealed() != sealed()


def test_wrong_recipient_cannot_open() -> None:
    envelope = sealed()
    with pytest.raises(ProtocolError, match="failed authentication") as err:
        open_envelope(CAROL, public_key_bytes(ALICE), envelope, context=CTX)
    assert isinstance(err.value.__cause__, InvalidTag)
    as_carol = dataclasses.replace(CTX, recipient="carol")
    with pytest.raises(ProtocolError, match=r"alice -> bob.*presented as alice -> carol"):
        open_envelope(CAROL, public_key_bytes(ALICE), envelope, context=as_carol)
    with pytest.raises(ProtocolError, match="failed authentication"):
        open_envelope(
            CAROL, public_key_bytes(ALICE), rewrite_header(envelope, as_carol), context=as_carol
        )


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_tampering_anywhere_is_detected(where: str) -> None:
    envelope = bytearray(sealed())
    header_end = 3 + struct.unpack_from(">H", envelope, 1)[0]
    index = {"nonce": header_end + 3, "ciphertext": header_end + 52, "tag": len(envelope) - 1}
    envelope[index[where]] ^= 0x01
    with pytest.raises(ProtocolError, match="failed authentication") as err:
        open_envelope(BOB, public_key_bytes(ALICE), bytes(envelope), context=CTX)
    assert isinstance(err.value.__cause__, InvalidTag)


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(CTX, round=8),
        dataclasses.replace(CTX, federation_id="fed-B"),
        dataclasses.replace(CTX, sender="carol"),
        dataclasses.replace(CTX, stage="train.aggregate"),
        dataclasses.replace(CTX, roster="0x" + "bb" * 32),
    ],
    ids=["other-round", "other-federation", "swapped-sender", "other-stage", "other-roster"],
)
def test_replay_into_another_context_is_rejected(other: EnvelopeContext) -> None:
    envelope = sealed()
    with pytest.raises(ProtocolError, match="misrouted, replayed or misattributed"):
        open_envelope(BOB, public_key_bytes(ALICE), envelope, context=other)
    # Rewriting the clear header to match does not help: the key and AD bind the context.
    with pytest.raises(ProtocolError, match="failed authentication") as err:
        open_envelope(BOB, public_key_bytes(ALICE), rewrite_header(envelope, other), context=other)
    assert isinstance(err.value.__cause__, InvalidTag)


def test_wrong_sender_key_fails_authentication() -> None:
    with pytest.raises(ProtocolError, match="failed authentication"):
        open_envelope(BOB, public_key_bytes(CAROL), sealed(), context=CTX)


def test_truncated_or_foreign_bytes_are_refused() -> None:
    envelope = sealed()
    for junk, message in [
        (b"", "not a version-2 envelope"),
        (b"\x01" + envelope[1:], "not a version-2 envelope"),
        (envelope[:40], "truncated"),
        (envelope[:3] + b"{not json" + envelope[12:], "unreadable envelope header"),
    ]:
        with pytest.raises(ProtocolError, match=message):
            open_envelope(BOB, public_key_bytes(ALICE), junk, context=CTX)


def test_low_order_public_key_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unusable X25519 public key"):
        seal(ALICE, bytes(32), SECRET, context=CTX)
    with pytest.raises(ProtocolError, match="unusable X25519 public key"):
        seal(ALICE, bytes(31), SECRET, context=CTX)


def test_key_serialisation_round_trips() -> None:
    raw = public_key_bytes(ALICE)
    assert len(raw) == 32
    assert key_from_hex(key_to_hex(raw)) == raw
    assert key_from_hex("0x" + raw.hex()) == raw
    restored = load_private_key(private_key_bytes(ALICE))
    assert public_key_bytes(restored) == raw
    with pytest.raises(ValueError, match="64 hex digits"):
        key_from_hex("ab" * 31)
    with pytest.raises(ValueError, match="not a hex"):
        key_from_hex("zz" * 32)
    with pytest.raises(ValueError, match="32 bytes"):
        load_private_key(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        key_to_hex(b"short")
