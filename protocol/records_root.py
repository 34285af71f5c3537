"""A node's signed records root: what lets a forget request name it, and nothing else.

Each train reply carries the node's keyed record commitments (``RecordKey.commitment``),
sorted and distinct, and its EIP-712 ``RecordsRoot(round, root, count, certifications)``
over them: ``root`` is their Merkle root (``protocol.merkle``), ``certifications`` how many
forget requests the node had certified on chain when it signed. ``requestForget`` on chain
takes a :class:`RecordsProof` and accepts it only for a finalized round, a count equal to the
node's current one, and a commitment under the root: the coordinator cannot open a request
(and so a deadline, and a slash) for a record the node never committed to, nor replay a root
from before the node forgot a record. The commitments are keyed, so the root reveals nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocol.approvals import compact
from protocol.errors import ProtocolError
from protocol.merkle import merkle_proof, merkle_root
from protocol.typed_data import RECORDS_ROOT_TYPES, Domain, recover_typed, sign_typed

MAX_RECORDS = 2**32 - 1


@dataclass(frozen=True)
class RecordsProof:
    """The ``RecordsProof`` argument of ``requestForget``: a commitment's place in a signed root."""

    round: int
    count: int
    certifications: int
    index: int
    root: bytes
    signature: bytes
    """EIP-2098 (64 bytes)."""
    proof: tuple[bytes, ...]

    def abi(self) -> tuple[Any, ...]:
        """The struct as the contract call takes it."""
        return (
            self.round,
            self.count,
            self.certifications,
            self.index,
            self.root,
            self.signature,
            list(self.proof),
        )


@dataclass(frozen=True)
class RecordsRoot:
    """A node's records in one round, sorted and distinct, and its certification count."""

    round: int
    leaves: tuple[bytes, ...]
    certifications: int

    def __post_init__(self) -> None:
        if self.round < 1 or self.round >= 2**64:
            raise ProtocolError(f"round {self.round} out of range")
        if not 0 <= self.certifications <= MAX_RECORDS:
            raise ProtocolError(f"certifications {self.certifications} out of range")
        if len(self.leaves) > MAX_RECORDS:
            raise ProtocolError(f"{len(self.leaves)} records: at most {MAX_RECORDS}")
        if any(len(leaf) != 32 for leaf in self.leaves):
            raise ProtocolError("record commitments are 32 bytes each")
        if any(a >= b for a, b in zip(self.leaves, self.leaves[1:], strict=False)):
            raise ProtocolError("a records root is over sorted, distinct commitments")

    @classmethod
    def of(cls, round_no: int, commitments: Iterable[bytes], certifications: int) -> RecordsRoot:
        """The root over ``commitments`` in canonical order (sorted, duplicates dropped)."""
        return cls(round_no, tuple(sorted({bytes(c) for c in commitments})), certifications)

    @classmethod
    def unpack(cls, round_no: int, records: bytes, certifications: int) -> RecordsRoot:
        """From a reply's ``records`` field (32 bytes a commitment, in canonical order)."""
        if len(records) % 32:
            raise ProtocolError("records must be whole 32-byte commitments")
        leaves = tuple(records[i : i + 32] for i in range(0, len(records), 32))
        return cls(round_no, leaves, certifications)

    @property
    def root(self) -> bytes:
        return merkle_root(self.leaves)

    def packed(self) -> bytes:
        """The leaves concatenated: a reply's ``records`` field."""
        return b"".join(self.leaves)

    def typed(self) -> dict[str, Any]:
        """The EIP-712 ``RecordsRoot`` message."""
        return {
            "round": self.round,
            "root": self.root,
            "count": len(self.leaves),
            "certifications": self.certifications,
        }

    def sign(self, domain: Domain, private_key: str | bytes) -> str:
        """The node's signature (65 bytes, hex), bound to the deployment ``domain``."""
        return sign_typed(domain, RECORDS_ROOT_TYPES, self.typed(), private_key)

    def signer(self, domain: Domain, signature: str) -> str:
        """Who signed this root in ``domain``; ProtocolError on a malformed signature."""
        return recover_typed(domain, RECORDS_ROOT_TYPES, self.typed(), signature)

    def proof(self, commitment: bytes, signature: str) -> RecordsProof:
        """The proof that ``commitment`` is under this root; ProtocolError if it is not."""
        try:
            index = self.leaves.index(bytes(commitment))
        except ValueError:
            raise ProtocolError(
                f"commitment 0x{bytes(commitment).hex()} is not among the node's records"
            ) from None
        return RecordsProof(
            round=self.round,
            count=len(self.leaves),
            certifications=self.certifications,
            index=index,
            root=self.root,
            signature=compact(signature),
            proof=tuple(merkle_proof(self.leaves, index)),
        )
