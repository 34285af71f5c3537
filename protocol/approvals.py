"""Round approvals signed off chain: EIP-712 ``RoundApproval``, carried on chain in bulk.

A node that has checked a round's content signs exactly what ``proposeRound`` records
(round, global model hash and CID, updates root, manifest CID) in the Lethe domain; the
coordinator sends every signature with the proposal in one transaction
(``proposeRoundSigned``), and the contract recovers each signer. One transaction per round
instead of one per node (docs/rounds.md); a node whose signature is left out still approves
by itself with ``approveRound`` (docs/trust.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.errors import ProtocolError
from protocol.typed_data import Domain, recover_typed, sign_typed

APPROVAL_TYPES: dict[str, list[dict[str, str]]] = {
    "RoundApproval": [
        {"name": "round", "type": "uint64"},
        {"name": "globalModelHash", "type": "bytes32"},
        {"name": "globalModelCid", "type": "string"},
        {"name": "updatesRoot", "type": "bytes32"},
        {"name": "manifestCid", "type": "string"},
    ]
}
"""The contract's ``ROUND_APPROVAL_TYPEHASH`` type: every field ``proposeRound`` records."""


@dataclass(frozen=True)
class RoundApproval:
    """The content of one round's proposal, as a node approves it."""

    round: int
    global_model_hash: bytes
    global_model_cid: str
    updates_root: bytes
    manifest_cid: str

    def fields(self) -> tuple[int, bytes, str, bytes, str]:
        """The content in the contract's argument order (``proposeRound*``'s first five)."""
        return (
            self.round,
            self.global_model_hash,
            self.global_model_cid,
            self.updates_root,
            self.manifest_cid,
        )

    def message(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "globalModelHash": self.global_model_hash,
            "globalModelCid": self.global_model_cid,
            "updatesRoot": self.updates_root,
            "manifestCid": self.manifest_cid,
        }

    def sign(self, domain: Domain, private_key: str | bytes) -> str:
        """The node's approval (0x hex, 65 bytes) of this content in ``domain``."""
        return sign_typed(domain, APPROVAL_TYPES, self.message(), private_key)

    def signer(self, domain: Domain, signature: str) -> str:
        """Checksummed address that signed this approval; ProtocolError if unreadable."""
        return recover_typed(domain, APPROVAL_TYPES, self.message(), signature)


def compact(signature: str) -> bytes:
    """EIP-2098 form of a 65-byte signature: r, then s with ``v - 27`` in its top bit.

    64 bytes instead of 65 (and no ABI padding): what ``proposeRoundSigned`` reads.
    """
    raw = bytes.fromhex(signature.removeprefix("0x"))
    if len(raw) != 65 or raw[64] not in (27, 28):
        raise ProtocolError("a signature is 65 bytes ending in v = 27 or 28")
    r, s, v = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    if s >> 255:
        raise ProtocolError("signature s has its top bit set")
    return r + (s | (v - 27) << 255).to_bytes(32, "big")
