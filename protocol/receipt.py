"""A forget receipt: what the data subject needs to check a certificate is about them.

Certificate leaves and on-chain commitments are salted, so nobody can recognise a record
from a list of candidate ids. The owner node hands back, for each request, the two salts of
the forgotten record (through the coordinator's API, to the token holder, never in public):

- ``record_salt``: the node's per-record salt in the certificate's leaf
  (``protocol.certificate.record_leaf``);
- ``commitment_salt``: the record's salt under the federation's record key, in the
  on-chain ``ForgetRequested`` commitment (``protocol.commitments.record_commitment``).

With the receipt, its record id, text and label, the subject checks the certificate
(:meth:`Receipt.check`) and, if they like, the commitment on chain
(:meth:`Receipt.commitment`). A salt reveals nothing about other records nor the key.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from protocol.commitments import record_commitment
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from protocol.certificate import Certificate

_HEX32 = re.compile(r"^0x[0-9a-f]{64}$")


@dataclass(frozen=True)
class Receipt:
    """One forget request's receipt, as the owner node returned it."""

    request_id: str
    federation_id: str
    node_address: str
    certificate_cid: str
    record_salt: str
    commitment_salt: str

    def __post_init__(self) -> None:
        for name in ("record_salt", "commitment_salt"):
            if not _HEX32.match(getattr(self, name)):
                raise ProtocolError(f"receipt field {name} must be 32 bytes as 0x-prefixed hex")
        if not self.request_id or not self.certificate_cid or not self.federation_id:
            raise ProtocolError("receipt needs a request id, a federation id and a certificate CID")

    def to_json(self) -> dict[str, Any]:
        """The receipt as a JSON object."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Receipt:
        """Parse a JSON object with exactly the receipt's fields."""
        names = set(cls.__dataclass_fields__)
        if not isinstance(data, dict) or set(data) != names:
            raise ProtocolError(f"a receipt is a JSON object with exactly {sorted(names)}")
        if not all(isinstance(v, str) for v in data.values()):
            raise ProtocolError("every receipt field is a string")
        return cls(**data)

    def commitment(self, record_id: str) -> bytes:
        """The record commitment the chain's ``ForgetRequested`` must hold for this request."""
        salt = bytes.fromhex(self.commitment_salt[2:])
        return record_commitment(self.federation_id, salt, record_id)

    def check(self, certificate: Certificate, record_id: str, text: str, label: str) -> str:
        """Check ``certificate`` is this request's, valid, signed by the node, and about the
        record (id, text, label); return the signer. ProtocolError says what failed."""
        signer = certificate.verify(expected_signer=self.node_address)
        if certificate.request_id != self.request_id:
            raise ProtocolError(
                f"the certificate is for request {certificate.request_id!r}, "
                f"the receipt for {self.request_id!r}"
            )
        if certificate.federation_id != self.federation_id:
            raise ProtocolError("the certificate is for another federation than the receipt")
        if not certificate.covers(record_id, text, label, bytes.fromhex(self.record_salt[2:])):
            raise ProtocolError(
                "the certificate's record leaf is not this record under the receipt's salt "
                "(another record, another text or label, or another receipt)"
            )
        return signer
