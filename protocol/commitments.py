"""The hashes node and coordinator agree on: record commitments and round updates.

A record commitment lets the coordinator, the API and the chain name a record without
holding its id in the clear. It is keyed with the federation's record key
(:class:`RecordKey`), which only the coordinator and the nodes hold and which never goes
on chain or into the content store: an outsider with a list of candidate record ids cannot
recompute a commitment, so cannot tell which records are held or forgotten. An update
binds a node's model hash, sample count and slice roots to a round: the node signs it as
EIP-712 typed data bound to the deployment, and the round's ``updatesRoot`` on chain is the
Merkle root of the updates' leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.typed_data import UPDATE_TYPES, Domain, recover_typed, sign_typed

_RECORD_DOMAIN = b"lethe.record.v2\x00"
_RECORD_SALT_DOMAIN = b"lethe.record-salt.v1\x00"
_UPDATE_DOMAIN = b"lethe.update.v2\x00"
RECORD_KEY_BYTES = 32


@dataclass(frozen=True)
class RecordKey:
    """The federation's record key: 32 secret bytes shared by the coordinator and the nodes.

    The coordinator needs it to find a record's owner among the nodes' announced
    commitments, the nodes to announce them and to check a request's commitment on chain.
    Nobody else holds it; it is never put on chain nor in the content store. There is no
    rotation: a new key changes every commitment, so it means a new federation.
    """

    federation_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != RECORD_KEY_BYTES:
            raise ProtocolError(f"a record key is {RECORD_KEY_BYTES} bytes, got {len(self.key)}")

    @staticmethod
    def generate() -> bytes:
        """32 fresh random bytes, written hex-encoded to a key file."""
        return secrets.token_hex(RECORD_KEY_BYTES).encode()

    @classmethod
    def load(cls, path: str | Path, federation_id: str) -> RecordKey:
        """The key in ``path`` (64 hex digits); ProtocolError naming the file otherwise."""
        if not str(path):
            raise ProtocolError(
                "no record key file configured (record_key_file): the federation's record "
                "key is shared by the coordinator and the nodes"
            )
        try:
            text = Path(path).read_text().strip().removeprefix("0x")
            return cls(federation_id, bytes.fromhex(text))
        except (OSError, ValueError, ProtocolError) as exc:
            raise ProtocolError(f"cannot read the record key {path}: {exc}") from exc

    def salt(self, record_id: str) -> bytes:
        """The record's commitment salt: HMAC-SHA256(key, domain ‖ federation ‖ 0 ‖ id)."""
        if not record_id:
            raise ProtocolError("record id must not be empty")
        message = _RECORD_SALT_DOMAIN + self.federation_id.encode() + b"\x00" + record_id.encode()
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def commitment(self, record_id: str) -> bytes:
        """What nodes announce and the chain stores for a request (:func:`record_commitment`)."""
        return record_commitment(self.federation_id, self.salt(record_id), record_id)

    def commitment_hex(self, record_id: str) -> str:
        """:meth:`commitment` as ``0x``-prefixed hex."""
        return "0x" + self.commitment(record_id).hex()


def record_commitment(federation_id: str, salt: bytes, record_id: str) -> bytes:
    """keccak256(domain ‖ federation ‖ 0 ‖ salt ‖ record id), salt from :class:`RecordKey`.

    Whoever holds the record's 32-byte salt (a node's receipt carries it) can check the
    commitment against its record id; without the key no salt can be computed.
    """
    if not record_id:
        raise ProtocolError("record id must not be empty")
    if len(salt) != 32:
        raise ProtocolError("a record salt is 32 bytes")
    return keccak256(_RECORD_DOMAIN + federation_id.encode() + b"\x00" + salt + record_id.encode())


def slice_roots_hash(slice_roots: Sequence[bytes]) -> bytes:
    """keccak256 of a node's slice roots, concatenated shard by shard, slice by slice."""
    if not slice_roots or any(len(r) != 32 for r in slice_roots):
        raise ProtocolError("slice roots must be one or more 32-byte Merkle roots")
    return keccak256(b"".join(slice_roots))


def update_leaf(
    federation_id: str,
    round_no: int,
    node_address: str,
    model_hash: bytes,
    n_samples: int,
    slice_roots: Sequence[bytes],
) -> bytes:
    """The Merkle leaf of one node's update in one round.

    It commits to the node's slice roots too: the data it holds, in public, so a later
    certificate's old slice root can be checked against what the node committed before.
    """
    if len(model_hash) != 32:
        raise ProtocolError("model hash must be 32 bytes")
    address = bytes.fromhex(node_address.removeprefix("0x"))
    if len(address) != 20:
        raise ProtocolError(f"not an Ethereum address: {node_address!r}")
    return keccak256(
        _UPDATE_DOMAIN
        + federation_id.encode()
        + b"\x00"
        + round_no.to_bytes(8, "big")
        + address
        + model_hash
        + n_samples.to_bytes(8, "big")
        + slice_roots_hash(slice_roots)
    )


@dataclass(frozen=True)
class Update:
    """A node's commitment to its model and its data in one round: what it signs (EIP-712
    ``Update``) and what the round's updates root holds (:func:`update_leaf`)."""

    federation_id: str
    round: int
    node_address: str
    model_hash: bytes
    n_samples: int
    slice_roots: tuple[bytes, ...]

    def leaf(self) -> bytes:
        """The Merkle leaf in the round's updates root."""
        return update_leaf(
            self.federation_id,
            self.round,
            self.node_address,
            self.model_hash,
            self.n_samples,
            self.slice_roots,
        )

    def typed(self) -> dict[str, Any]:
        """The EIP-712 ``Update`` message."""
        return {
            "federationId": self.federation_id,
            "round": self.round,
            "node": self.node_address,
            "modelHash": self.model_hash,
            "nSamples": self.n_samples,
            "sliceRootsHash": slice_roots_hash(self.slice_roots),
        }

    def sign(self, domain: Domain, private_key: str | bytes) -> str:
        """The node's EIP-712 signature, bound to the deployment ``domain``."""
        self.leaf()  # checks the fields
        return sign_typed(domain, UPDATE_TYPES, self.typed(), private_key)

    def signer(self, domain: Domain, signature: str) -> str:
        """Who signed this update in ``domain``; ProtocolError on a malformed signature."""
        self.leaf()
        return recover_typed(domain, UPDATE_TYPES, self.typed(), signature)


def sign_leaf(leaf: bytes, private_key: str | bytes) -> str:
    """EIP-191 signature (hex) of a 32-byte leaf by a node's Ethereum key."""
    signed = Account.sign_message(encode_defunct(primitive=leaf), private_key=private_key)
    return "0x" + bytes(signed.signature).hex()


def recover_leaf_signer(leaf: bytes, signature: str) -> str:
    """Checksummed address that signed ``leaf``; raises ProtocolError on a malformed signature."""
    try:
        return str(Account.recover_message(encode_defunct(primitive=leaf), signature=signature))
    except Exception as exc:
        raise ProtocolError(f"unreadable signature: {exc}") from exc
