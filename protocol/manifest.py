"""The round manifest: what a finalized round consisted of, stored by CID and named on chain.

``proposeRound`` puts the manifest's CID, the global model's CID and keccak256 hash, and
``updatesRoot`` on chain. The manifest lists every node update of the round (address,
model hash, sample count, slice roots, EIP-712 signature of its ``Update``), in the order
of the Merkle tree whose root is ``updatesRoot`` (sorted by address), plus the roster,
threshold, who answered each stage and who dropped out, and the round's transcript (every
signed masked vector and reveal), from which ``protocol.recompute`` recomputes the global
model. With it and the chain's events anyone can re-check a round without trusting the
coordinator.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from protocol.canonical import canonical_json
from protocol.commitments import Update
from protocol.errors import ProtocolError
from protocol.merkle import merkle_proof, merkle_root
from protocol.typed_data import Domain

SCHEMA = "lethe.manifest.v3"


@dataclass(frozen=True)
class NodeUpdate:
    """One node's signed commitment to the model it contributed to a round."""

    address: str
    model_hash: str
    n_samples: int
    signature: str
    slice_roots: list[str]
    """The node's slice roots (0x hex), shard-major: shard s, slice k at ``s·slices + k``."""

    def update(self, federation_id: str, round_no: int) -> Update:
        """The typed update this entry records."""
        try:
            return Update(
                federation_id,
                round_no,
                self.address,
                bytes.fromhex(self.model_hash.removeprefix("0x")),
                self.n_samples,
                tuple(bytes.fromhex(r.removeprefix("0x")) for r in self.slice_roots),
            )
        except (ValueError, AttributeError, TypeError) as exc:
            raise ProtocolError(f"malformed update of {self.address}: {exc}") from exc

    def leaf(self, federation_id: str, round_no: int) -> bytes:
        """The Merkle leaf of this update."""
        return self.update(federation_id, round_no).leaf()

    def slice_root(self, shard: int, slice_: int, slices: int) -> str | None:
        """The committed root of one slice, ``None`` if the update has no such slice."""
        index = shard * slices + slice_
        if not 0 <= slice_ < slices or not 0 <= index < len(self.slice_roots):
            return None
        return self.slice_roots[index].lower()

    def signer(self, domain: Domain, federation_id: str, round_no: int) -> str:
        """Address that signed this update (EIP-712, in the deployment ``domain``)."""
        return self.update(federation_id, round_no).signer(domain, self.signature)


@dataclass(frozen=True)
class RoundManifest:
    """Everything about one round that is public; canonical JSON, stored by CID."""

    federation_id: str
    round: int
    threshold: int
    roster: list[dict[str, Any]]
    updates: list[NodeUpdate]
    responders: dict[str, list[str]]
    dropped: list[str]
    global_model_cid: str
    global_model_hash: str
    n_total: int
    fixed_point: dict[str, Any]
    forget_requests: list[str] = field(default_factory=list)
    transcript: dict[str, Any] = field(default_factory=dict)
    """Every sender's signed masked vector and agreement, every signed reveal
    (``protocol.recompute.Transcript``): what anyone recomputes the global model from."""
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        addresses = [u.address.lower() for u in self.updates]
        if addresses != sorted(addresses) or len(set(addresses)) != len(addresses):
            raise ProtocolError("manifest updates must be sorted by address, one per node")

    def leaves(self) -> list[bytes]:
        """The update leaves, in tree order."""
        return [u.leaf(self.federation_id, self.round) for u in self.updates]

    def updates_root(self) -> bytes:
        """Merkle root of the update leaves: the round's ``updatesRoot`` on chain."""
        return merkle_root(self.leaves())

    def proof_for(self, address: str) -> tuple[int, list[bytes]]:
        """Index and inclusion proof of one node's update."""
        for index, update in enumerate(self.updates):
            if update.address.lower() == address.lower():
                return index, merkle_proof(self.leaves(), index)
        raise ProtocolError(f"no update from {address} in round {self.round}")

    def update_of(self, address: str) -> NodeUpdate | None:
        """The update a node contributed, if any."""
        return next((u for u in self.updates if u.address.lower() == address.lower()), None)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON object."""
        return asdict(self)

    def to_bytes(self) -> bytes:
        """Canonical bytes: what is stored and named by CID."""
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundManifest:
        """Parse stored bytes; ProtocolError on anything that is not a manifest of this schema."""
        try:
            raw = json.loads(data)
            if raw.get("schema") != SCHEMA:
                raise ProtocolError(f"not a {SCHEMA} document")
            raw["updates"] = [NodeUpdate(**u) for u in raw["updates"]]
            return cls(**raw)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ProtocolError(f"malformed round manifest: {exc}") from exc
