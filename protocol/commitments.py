"""The hashes node and coordinator agree on: record commitments and round update leaves.

A record commitment lets the coordinator, the API and the chain name a record without
holding its id in the clear; an update leaf binds a node's model hash and sample count to
a round, and the round's ``updatesRoot`` on chain is the Merkle root of those leaves.
"""

from collections.abc import Sequence

from eth_account import Account
from eth_account.messages import encode_defunct

from protocol.errors import ProtocolError
from protocol.hashing import keccak256

_RECORD_DOMAIN = b"lethe.record.v1\x00"
_UPDATE_DOMAIN = b"lethe.update.v2\x00"


def record_commitment(federation_id: str, record_id: str) -> bytes:
    """keccak256 of (domain, federation id, record id): what the chain stores for a request."""
    if not record_id:
        raise ProtocolError("record id must not be empty")
    return keccak256(_RECORD_DOMAIN + federation_id.encode() + b"\x00" + record_id.encode())


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
