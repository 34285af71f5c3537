"""Unlearning certificate, schema v2: what a node proves after forgetting (docs/certificate.md).

A certificate names the forgotten record only by its leaf
``keccak256(domain ‖ salt ‖ keccak256(content) ‖ record_id)`` (content: the canonical JSON
of its text and label; salt: 32 bytes only the node can derive), so it can be published by
CID without letting anyone holding candidate ids or a public corpus recognise the record;
the data subject, who knows id, text and label and gets the salt in the node's receipt
(``protocol.receipt``), checks the leaf with :meth:`Certificate.covers`.
The Merkle proof shows the leaf was in the slice's root before the forget; the model
hashes and retrained slices tie the forget to the node's next round commitment, which must
equal ``model_hash_after``.

Signing: the node signs an EIP-712 ``Certificate`` (protocol.typed_data) in the domain of
the deployment it certifies on (``chain_id``, ``contract``, both in the body): the main
fields in the clear, so a wallet shows them, and ``bodyHash``, the keccak256 of the
canonical JSON of every field but the signature. A certificate cannot be replayed to another
contract or chain; :data:`~protocol.typed_data.UNBOUND` (chain 0) marks one never meant for
a chain. Integers only in the signed body (milliseconds, Unix seconds): no float formatting
can make two encoders disagree.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from eth_account import Account

from protocol.canonical import canonical_json
from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.merkle import proof_length, verify_proof
from protocol.typed_data import CERTIFICATE_TYPES, UNBOUND, Domain, recover_typed, sign_typed

VERSION = 2
_HASH = re.compile(r"^0x[0-9a-f]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE = re.compile(r"^0x[0-9a-f]{130}$")
MAX_REQUEST_ID = 200


def record_content_hash(text: str, label: str) -> bytes:
    """keccak256 of a record's content: the canonical JSON ``{"label": …, "text": …}``."""
    return keccak256(canonical_json({"label": label, "text": text}))


LEAF_DOMAIN = b"lethe.leaf.v2\x00"


def record_leaf(record_id: str, text: str, label: str, salt: bytes) -> bytes:
    """A record's Merkle leaf: ``keccak256(domain ‖ salt ‖ keccak256(content) ‖ utf8(id))``.

    ``salt`` is the node's 32-byte per-record salt: without it, no list of candidate ids
    and texts can be hashed into a leaf. Salt and content hash have fixed lengths ahead of
    the id, so the concatenation is unambiguous.
    """
    if not record_id:
        raise ProtocolError("record id must not be empty")
    if len(salt) != 32:
        raise ProtocolError("a record salt is 32 bytes")
    return keccak256(LEAF_DOMAIN + salt + record_content_hash(text, label) + record_id.encode())


def hex32(value: bytes) -> str:
    """32 bytes as the ``0x``-prefixed lowercase hex the certificate uses."""
    if len(value) != 32:
        raise ProtocolError(f"expected 32 bytes, got {len(value)}")
    return "0x" + value.hex()


@dataclass(frozen=True)
class Certificate:
    """One forgotten record's certificate; unsigned until :meth:`signed`."""

    request_id: str
    federation_id: str
    shard: int
    slice: int
    slices_total: int
    record_leaf: str
    leaf_index: int
    leaf_count: int
    merkle_proof: tuple[str, ...]
    old_slice_root: str
    new_slice_root: str
    from_checkpoint_hash: str
    model_hash_before: str
    model_hash_after: str
    slices_retrained: tuple[int, ...]
    samples_retrained: int
    wall_time_ms: int
    timestamp: int
    node_address: str = ""
    chain_id: int = 0
    contract: str = UNBOUND.contract
    version: int = VERSION
    signature: str = ""

    # -- encoding ---------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """Every field except the signature, as JSON values: what is signed."""
        data = asdict(self)
        del data["signature"]
        data["merkle_proof"] = list(self.merkle_proof)
        data["slices_retrained"] = list(self.slices_retrained)
        return data

    def to_json(self) -> dict[str, Any]:
        """The full certificate as a JSON object."""
        return {**self.body(), "signature": self.signature}

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes: what is stored by CID."""
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> Certificate:
        """Parse a JSON object, checking field names and types (not yet the content)."""
        if not isinstance(data, dict):
            raise ProtocolError("a certificate must be a JSON object")
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        missing = sorted(set(names) - set(data))
        if unknown or missing:
            raise ProtocolError(
                f"certificate fields: unknown {unknown or 'none'}, missing {missing or 'none'}"
            )
        values: dict[str, Any] = {}
        for name, f in names.items():
            value = data[name]
            if f.type == "int":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ProtocolError(f"certificate field {name} must be an integer")
            elif f.type == "str":
                if not isinstance(value, str):
                    raise ProtocolError(f"certificate field {name} must be a string")
            else:
                item = str if name == "merkle_proof" else int
                if not isinstance(value, list) or not all(
                    isinstance(v, item) and not isinstance(v, bool) for v in value
                ):
                    raise ProtocolError(
                        f"certificate field {name} must be a list of {item.__name__}"
                    )
                value = tuple(value)
            values[name] = value
        return cls(**values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        """Parse stored certificate bytes."""
        try:
            return cls.from_json(json.loads(data))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"certificate is not JSON: {exc}") from exc

    # -- signing ----------------------------------------------------------------------

    @property
    def domain(self) -> Domain:
        """The deployment this certificate is bound to."""
        return Domain(self.chain_id, self.contract)

    def typed(self) -> dict[str, Any]:
        """The EIP-712 ``Certificate`` message the node signs."""

        def b32(value: str) -> bytes:
            return bytes.fromhex(value.removeprefix("0x")) if _HASH.match(value) else bytes(32)

        return {
            "requestId": self.request_id,
            "federationId": self.federation_id,
            "node": self.node_address if _ADDRESS.match(self.node_address) else UNBOUND.contract,
            "shard": self.shard,
            "slice": self.slice,
            "recordLeaf": b32(self.record_leaf),
            "oldSliceRoot": b32(self.old_slice_root),
            "newSliceRoot": b32(self.new_slice_root),
            "modelHashBefore": b32(self.model_hash_before),
            "modelHashAfter": b32(self.model_hash_after),
            "bodyHash": keccak256(canonical_json(self.body())),
        }

    def signed(self, private_key: str | bytes, domain: Domain = UNBOUND) -> Certificate:
        """This certificate bound to ``domain``, ``node_address`` set to the key's, signed."""
        address = str(Account.from_key(private_key).address)
        unsigned = replace(
            self,
            node_address=address,
            chain_id=domain.chain_id,
            contract=domain.contract,
            signature="",
        )
        signature = sign_typed(domain, CERTIFICATE_TYPES, unsigned.typed(), private_key)
        return replace(unsigned, signature=signature)

    def signer(self) -> str:
        """The checksummed address that produced ``signature``."""
        if not _SIGNATURE.match(self.signature):
            raise ProtocolError("signature must be 65 bytes as 0x-prefixed lowercase hex")
        if not _ADDRESS.match(self.contract) or self.chain_id < 0:
            raise ProtocolError("chain id and contract do not name a deployment")
        return recover_typed(self.domain, CERTIFICATE_TYPES, self.typed(), self.signature)

    # -- checks -----------------------------------------------------------------------

    def covers(self, record_id: str, text: str, label: str, salt: bytes) -> bool:
        """Whether this certificate is about the record with that id, text and label;
        ``salt`` is the record salt from the node's receipt."""
        return hex32(record_leaf(record_id, text, label, salt)) == self.record_leaf

    def _field_problems(self) -> list[str]:
        problems = []
        if self.version != VERSION:
            problems.append(f"version is {self.version}, this verifier reads {VERSION}")
        if not self.request_id or len(self.request_id) > MAX_REQUEST_ID:
            problems.append(f"request id must have 1..{MAX_REQUEST_ID} characters")
        if not self.federation_id:
            problems.append("federation id is empty")
        if not _ADDRESS.match(self.node_address):
            problems.append(f"node address {self.node_address!r} is not an Ethereum address")
        named = {
            "record_leaf": self.record_leaf,
            "old_slice_root": self.old_slice_root,
            "new_slice_root": self.new_slice_root,
            "from_checkpoint_hash": self.from_checkpoint_hash,
            "model_hash_before": self.model_hash_before,
            "model_hash_after": self.model_hash_after,
            **{f"merkle_proof[{i}]": h for i, h in enumerate(self.merkle_proof)},
        }
        problems += [
            f"{name} is not a 32-byte 0x-prefixed lowercase hex hash"
            for name, value in named.items()
            if not _HASH.match(value)
        ]
        if self.old_slice_root == self.new_slice_root:
            problems.append("old and new slice roots are equal: the slice did not change")
        if not 0 <= self.slice < self.slices_total:
            problems.append(f"slice {self.slice} is not within 0..{self.slices_total - 1}")
        if self.shard < 0:
            problems.append("shard must be ≥ 0")
        retrained = list(self.slices_retrained)
        if (
            not retrained
            or retrained != list(range(retrained[0], self.slices_total))
            or retrained[0] > self.slice
        ):
            problems.append(
                f"slices retrained {retrained} must run from at most slice {self.slice} "
                f"through the last slice {self.slices_total - 1}"
            )
        if not 0 <= self.leaf_index < self.leaf_count:
            problems.append(f"leaf index {self.leaf_index} is not within 0..{self.leaf_count - 1}")
        elif len(self.merkle_proof) != proof_length(self.leaf_index, self.leaf_count):
            problems.append(
                f"Merkle proof has {len(self.merkle_proof)} hashes, leaf {self.leaf_index} "
                f"of {self.leaf_count} needs {proof_length(self.leaf_index, self.leaf_count)}"
            )
        if self.samples_retrained < 0 or self.wall_time_ms < 0 or self.timestamp <= 0:
            problems.append("samples retrained and wall time must be ≥ 0, timestamp > 0")
        return problems

    def verify(self, *, expected_signer: str | None = None) -> str:
        """Check fields, Merkle proof and signature; return the signer's address.

        Raises ProtocolError naming everything that failed.
        """
        problems = self._field_problems()
        if not problems:
            proof = [bytes.fromhex(h[2:]) for h in self.merkle_proof]
            if not verify_proof(
                bytes.fromhex(self.old_slice_root[2:]),
                bytes.fromhex(self.record_leaf[2:]),
                self.leaf_index,
                self.leaf_count,
                proof,
            ):
                problems.append("Merkle proof does not put the record leaf in the old slice root")
        signer = ""
        try:
            signer = self.signer()
        except ProtocolError as exc:
            problems.append(str(exc))
        if signer and signer.lower() != self.node_address.lower():
            problems.append(f"signed by {signer}, not by the node {self.node_address}")
        if signer and expected_signer is not None and signer.lower() != expected_signer.lower():
            problems.append(f"signed by {signer}, expected {expected_signer}")
        if problems:
            raise ProtocolError("certificate does not verify: " + "; ".join(problems))
        return signer
