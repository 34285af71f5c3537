"""EIP-712 typed signatures bound to one deployment: chain id and contract address.

Every signature a node makes for the public record (its round updates, its unlearning
certificates) is EIP-712 typed data in the domain ``{name: "Lethe", version: "1", chainId,
verifyingContract}``, the ecosystem's convention: a wallet or explorer shows the fields
being signed, and a signature made for one federation's contract on one chain cannot be
replayed to another contract, or to another chain with the same contract address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account import Account
from eth_account.messages import encode_typed_data

from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from eth_account.messages import SignableMessage

    from protocol.ledger import Ledger

NAME = "Lethe"
VERSION = "1"
ZERO_ADDRESS = "0x" + "00" * 20

UPDATE_TYPES: dict[str, list[dict[str, str]]] = {
    "Update": [
        {"name": "federationId", "type": "string"},
        {"name": "round", "type": "uint64"},
        {"name": "node", "type": "address"},
        {"name": "modelHash", "type": "bytes32"},
        {"name": "nSamples", "type": "uint64"},
        {"name": "sliceRootsHash", "type": "bytes32"},
    ]
}
"""A node's commitment to its model and its data in one round."""

RECORDS_ROOT_TYPES: dict[str, list[dict[str, str]]] = {
    "RecordsRoot": [
        {"name": "round", "type": "uint64"},
        {"name": "root", "type": "bytes32"},
        {"name": "count", "type": "uint32"},
        {"name": "certifications", "type": "uint32"},
    ]
}
"""A node's commitment to the records it announced in one round (protocol/records_root.py)."""

CERTIFICATE_TYPES: dict[str, list[dict[str, str]]] = {
    "Certificate": [
        {"name": "requestId", "type": "string"},
        {"name": "federationId", "type": "string"},
        {"name": "node", "type": "address"},
        {"name": "shard", "type": "uint32"},
        {"name": "slice", "type": "uint32"},
        {"name": "recordLeaf", "type": "bytes32"},
        {"name": "oldSliceRoot", "type": "bytes32"},
        {"name": "newSliceRoot", "type": "bytes32"},
        {"name": "modelHashBefore", "type": "bytes32"},
        {"name": "modelHashAfter", "type": "bytes32"},
        {"name": "bodyHash", "type": "bytes32"},
    ]
}
"""An unlearning certificate: its main fields, and the keccak256 of its whole body."""


@dataclass(frozen=True)
class Domain:
    """The deployment a signature is bound to."""

    chain_id: int
    contract: str

    @classmethod
    def of(cls, ledger: Ledger) -> Domain:
        """The domain of the contract a ledger talks to."""
        return cls(ledger.chain_id, ledger.address)

    def data(self) -> dict[str, Any]:
        """The EIP712Domain values."""
        return {
            "name": NAME,
            "version": VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.contract,
        }

    def matches(self, chain_id: int, contract: str) -> bool:
        return self.chain_id == chain_id and self.contract.lower() == contract.lower()


UNBOUND = Domain(0, ZERO_ADDRESS)
"""No deployment: what an offline (never certified on chain) signature is bound to."""


def _message(
    domain: Domain, types: dict[str, list[dict[str, str]]], message: dict[str, Any]
) -> SignableMessage:
    return encode_typed_data(domain.data(), types, message)


def sign_typed(
    domain: Domain,
    types: dict[str, list[dict[str, str]]],
    message: dict[str, Any],
    private_key: str | bytes,
) -> str:
    """EIP-712 signature (0x hex, 65 bytes) of ``message`` in ``domain``."""
    signed = Account.sign_message(_message(domain, types, message), private_key=private_key)
    return "0x" + bytes(signed.signature).hex()


def recover_typed(
    domain: Domain, types: dict[str, list[dict[str, str]]], message: dict[str, Any], signature: str
) -> str:
    """Checksummed address that signed ``message`` in ``domain``; ProtocolError if unreadable."""
    try:
        return str(Account.recover_message(_message(domain, types, message), signature=signature))
    except Exception as exc:
        raise ProtocolError(f"unreadable signature: {exc}") from exc
