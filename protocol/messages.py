"""The message stages node and coordinator exchange over Flower, and their wire form.

Every Flower message of Lethe carries one ``Payload``: a JSON header (small, canonical,
human-readable in logs) and named binary blobs (envelopes, shares, commitments). Flower's
``RecordDict`` is built only at the edges (``to_record_dict``/``from_record_dict``) so
the rest of the protocol stays free of Flower imports.

Stages (Flower message type → what the node does):

- ``train``            forget the requested records I hold (certify each on chain), train
                       through the requested slice; reply n_i, model hash, signed leaf
- ``train.share``      Shamir-share α_i·w_i to the roster, one envelope per recipient
- ``train.aggregate``  open the envelopes addressed to me, reply the summed share
- ``query.approve``    check my leaf is in the round's root and the model CID's bytes hash to
                       the proposed hash, evaluate it, send ``approveRound`` with my own key
"""

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.canonical import canonical_json
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from flwr.app import RecordDict

TRAIN = "train"
SHARE = "train.share"
AGGREGATE = "train.aggregate"
APPROVE = "query.approve"
STAGES = (TRAIN, SHARE, AGGREGATE, APPROVE)

_RECORD = "lethe"
_HEADER = "header"
_BLOB_PREFIX = "blob:"


@dataclass
class Payload:
    """A stage's content: a JSON-able header and named byte blobs."""

    header: dict[str, Any]
    blobs: dict[str, bytes] = field(default_factory=dict)

    def require(self, *keys: str) -> None:
        """Raise ProtocolError naming the header keys that are missing."""
        missing = [k for k in keys if k not in self.header]
        if missing:
            raise ProtocolError(f"message header lacks {', '.join(missing)}")

    def to_wire(self) -> dict[str, str | bytes]:
        """Flat mapping of str → str | bytes, the value types every transport carries."""
        wire: dict[str, str | bytes] = {_HEADER: canonical_json(self.header).decode()}
        for name, blob in self.blobs.items():
            wire[_BLOB_PREFIX + name] = bytes(blob)
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> "Payload":
        """Inverse of ``to_wire``; ProtocolError on anything malformed."""
        raw = wire.get(_HEADER)
        if not isinstance(raw, str):
            raise ProtocolError("message has no header")
        try:
            header = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"message header is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise ProtocolError("message header is not a JSON object")
        blobs: dict[str, bytes] = {}
        for key, value in wire.items():
            if key.startswith(_BLOB_PREFIX):
                if not isinstance(value, bytes):
                    raise ProtocolError(f"blob {key!r} is not bytes")
                blobs[key[len(_BLOB_PREFIX) :]] = value
        return cls(header=header, blobs=blobs)


def to_record_dict(payload: Payload) -> "RecordDict":
    """Wrap a payload as Flower content (Flower imported only here, at the edge)."""
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict({_RECORD: ConfigRecord(payload.to_wire())})  # type: ignore[arg-type]


def from_record_dict(content: "RecordDict") -> Payload:
    """Unwrap Flower content into a payload; ProtocolError if it is not Lethe's."""
    records = content.config_records
    if _RECORD not in records:
        raise ProtocolError("message carries no Lethe payload")
    return Payload.from_wire(dict(records[_RECORD]))
