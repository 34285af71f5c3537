"""Unlearning certificates: canonical round-trip, signature, Merkle proof, tamper detection."""

import dataclasses
import json
from typing import Any

import pytest
from eth_account import Account

from protocol.certificate import Certificate, hex32, record_leaf
from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.merkle import merkle_proof, merkle_root

NODE_KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32
SALT = bytes(range(32))


def make_certificate(**changes: object) -> Certificate:
    """A certificate over a real 5-leaf slice whose third leaf is the forgotten record."""
    leaf = record_leaf("alice-1", "I never want to see this tweet again", "negative", SALT)
    leaves = sorted([leaf, *(keccak256(bytes([i])) for i in range(4))])
    index = leaves.index(leaf)
    remaining = [x for x in leaves if x != leaf]
    fields: dict[str, object] = {
        "request_id": "req-42",
        "federation_id": "fed-test",
        "shard": 0,
        "slice": 3,
        "slices_total": 8,
        "record_leaf": hex32(leaf),
        "leaf_index": index,
        "leaf_count": len(leaves),
        "merkle_proof": tuple(hex32(h) for h in merkle_proof(leaves, index)),
        "old_slice_root": hex32(merkle_root(leaves)),
        "new_slice_root": hex32(merkle_root(remaining)),
        "from_checkpoint_hash": hex32(keccak256(b"checkpoint 2")),
        "model_hash_before": hex32(keccak256(b"model before")),
        "model_hash_after": hex32(keccak256(b"model after")),
        "slices_retrained": (3, 4, 5, 6, 7),
        "samples_retrained": 1234,
        "wall_time_ms": 87,
        "timestamp": 1_700_000_000,
    }
    fields.update(changes)
    return Certificate(**fields).signed(NODE_KEY)  # type: ignore[arg-type]


def test_signed_certificate_verifies_and_names_the_node() -> None:
    cert = make_certificate()
    address = Account.from_key(NODE_KEY).address
    assert cert.node_address == address
    assert cert.verify() == address
    assert cert.verify(expected_signer=address) == address


def test_canonical_bytes_round_trip() -> None:
    cert = make_certificate()
    data = cert.to_bytes()
    assert json.loads(data) == cert.to_json()
    assert data == json.dumps(cert.to_json(), sort_keys=True, separators=(",", ":")).encode()
    again = Certificate.from_bytes(data)
    assert again == cert
    assert again.to_bytes() == data
    assert again.verify() == cert.node_address


def test_data_subject_recognises_their_record() -> None:
    cert = make_certificate()
    assert cert.covers("alice-1", "I never want to see this tweet again", "negative", SALT)
    assert not cert.covers("alice-1", "I never want to see this tweet again", "neutral", SALT)
    assert not cert.covers("alice-2", "I never want to see this tweet again", "negative", SALT)
    # Without the node's salt (the receipt's), nobody can recognise the record.
    assert not cert.covers("alice-1", "I never want to see this tweet again", "negative", bytes(32))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_hash_after", hex32(keccak256(b"another model"))),
        ("samples_retrained", 1),
        ("request_id", "req-43"),
        ("timestamp", 1_700_000_001),
        ("wall_time_ms", 1),
    ],
)
def test_any_edit_after_signing_is_detected(field: str, value: Any) -> None:
    changes: dict[str, Any] = {field: value}
    forged = dataclasses.replace(make_certificate(), **changes)
    with pytest.raises(ProtocolError, match="signed by 0x"):
        forged.verify()


def test_forged_leaf_fails_the_merkle_proof_even_when_re_signed() -> None:
    other_leaf = hex32(record_leaf("bob-7", "not in this slice", "positive", SALT))
    forged = make_certificate(record_leaf=other_leaf)
    with pytest.raises(ProtocolError, match="Merkle proof does not put"):
        forged.verify()


def test_certificate_signed_by_another_key() -> None:
    cert = make_certificate()
    resigned = dataclasses.replace(cert, signature="").signed(OTHER_KEY)
    assert resigned.verify() == Account.from_key(OTHER_KEY).address
    with pytest.raises(ProtocolError, match="expected 0x"):
        resigned.verify(expected_signer=cert.node_address)
    swapped = dataclasses.replace(resigned, node_address=cert.node_address)
    with pytest.raises(ProtocolError, match="not by the node"):
        swapped.verify()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"slices_retrained": (4, 5, 6, 7)}, "must run from at most slice 3"),
        ({"slices_retrained": (3, 4, 5)}, "through the last slice 7"),
        ({"slices_retrained": ()}, "slices retrained"),
        ({"slice": 8}, "not within 0..7"),
        ({"version": 3}, "version is 3"),
        ({"model_hash_before": "0x1234"}, "model_hash_before is not a 32-byte"),
        ({"new_slice_root": None}, "old and new slice roots are equal"),
        ({"leaf_count": 4}, "Merkle proof"),
        ({"leaf_index": 9}, "leaf index 9"),
        ({"request_id": ""}, "request id"),
        ({"samples_retrained": -1}, "must be ≥ 0"),
    ],
)
def test_inconsistent_fields_are_rejected(changes: dict[str, object], message: str) -> None:
    if changes.get("new_slice_root", "") is None:
        changes = {"new_slice_root": make_certificate().old_slice_root}
    cert = make_certificate(**changes)  # re-signed: only the content check can catch it
    with pytest.raises(ProtocolError, match=message):
        cert.verify()


def test_unsigned_certificate_does_not_verify() -> None:
    unsigned = dataclasses.replace(make_certificate(), signature="")
    with pytest.raises(ProtocolError, match="signature must be 65 bytes"):
        unsigned.verify()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("model_hash_after"), "missing \\['model_hash_after'\\]"),
        (lambda d: d.update(extra=1), "unknown \\['extra'\\]"),
        (lambda d: d.update(shard="0"), "shard must be an integer"),
        (lambda d: d.update(shard=True), "shard must be an integer"),
        (lambda d: d.update(merkle_proof="0x00"), "merkle_proof must be a list of str"),
        (lambda d: d.update(slices_retrained=[3.0]), "slices_retrained must be a list of int"),
    ],
)
def test_malformed_json_is_rejected(edit: object, message: str) -> None:
    data = make_certificate().to_json()
    edit(data)  # type: ignore[operator]
    with pytest.raises(ProtocolError, match=message):
        Certificate.from_json(data)


def test_non_json_bytes_are_rejected() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        Certificate.from_bytes(b"\xff{")
    with pytest.raises(ProtocolError, match="JSON object"):
        Certificate.from_bytes(b"[1, 2]")
