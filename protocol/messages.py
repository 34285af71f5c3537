"""The typed messages node and coordinator exchange at each round stage, and their wire form.

One frozen dataclass per stage and direction. On the wire a message is a flat *record*
of ``str → str | bytes`` (the value types every transport carries): its scalar and list
fields as one canonical JSON ``header``, its ``bytes`` fields as ``blob:<name>`` and its
``dict[str, bytes]`` fields as ``blob:<name>:<key>``. ``from_record`` accepts exactly
the declared fields: a missing, extra or ill-typed field, or a value outside its range
(a malformed address, hash or signature), is a :class:`ProtocolError` naming the field,
so a handler never meets a bare ``KeyError``. Flower's ``RecordDict`` is built only at
the edges (``to_record_dict``/``from_record_dict``), so this module imports no Flower.

Stages (Flower message type → what the node does):

- ``train``            forget the requested records I hold (certify each on chain), train
                       through the requested slice; reply n_i, model hash, signed leaf
- ``train.share``      sign the sender set (one per round), upload α_i·w_i masked (signed),
                       Shamir-share the mask seeds to the roster, one envelope per recipient
- ``train.aggregate``  shown every sender's signature on the set I signed, open the
                       envelopes addressed to me and reply my shares of the seeds that
                       unmask the sum over that set (signed)
- ``query.approve``    check my leaf is in the round's root and the model CID's bytes hash to
                       the proposed hash, evaluate it, send ``approveRound`` with my own key
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from protocol.canonical import canonical_json
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from flwr.app import RecordDict

TRAIN = "train"
SHARE = "train.share"
AGGREGATE = "train.aggregate"
APPROVE = "query.approve"

WireRecord = dict[str, str | bytes]
"""A message on the wire: what a transport carries, whatever it is."""

_HEADER = "header"
_BLOB = "blob:"
_RECORD = "lethe"
_HEX = re.compile(r"0x[0-9a-fA-F]*")

M = TypeVar("M", bound="Schema")
S = TypeVar("S", bound="StageMessage")


class Schema:
    """Checked conversion between a frozen dataclass and plain JSON values (and blobs).

    Subclasses are dataclasses whose fields are ``str``, ``int``, ``float``, ``bool``,
    ``X | None``, ``list[X]`` or another ``Schema``; :class:`StageMessage` adds blobs.
    ``check`` validates values once every field has its declared type.
    """

    def check(self) -> None:
        """Raise ProtocolError naming a field whose value is out of range (override)."""

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return _field_types(cls)

    @classmethod
    def from_json(cls: type[M], obj: object, where: str = "") -> M:
        """Build from a JSON object; ProtocolError on a missing, extra or ill-typed field."""
        where = where or cls.__name__
        if not isinstance(obj, dict):
            raise ProtocolError(f"{where} is not a JSON object")
        hints = cls._hints()
        _exact_keys(set(obj), set(hints), where)
        values = {name: _parse(obj[name], tp, f"{where}.{name}") for name, tp in hints.items()}
        return _checked(cls, values, where)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values of every field."""
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


_FIELD_TYPES: dict[type[Schema], dict[str, Any]] = {}


def _field_types(cls: type[Schema]) -> dict[str, Any]:
    """The dataclass fields of ``cls`` and their resolved types, in declaration order."""
    if cls not in _FIELD_TYPES:
        hints = get_type_hints(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in fields}
    return _FIELD_TYPES[cls]


def _checked(cls: type[M], values: dict[str, Any], where: str) -> M:
    message = cls(**values)
    try:
        message.check()
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from exc
    return message


def _exact_keys(got: set[str], declared: set[str], where: str) -> None:
    if missing := sorted(declared - got):
        raise ProtocolError(f"{where}: field {', '.join(missing)} is missing")
    if extra := sorted(got - declared):
        raise ProtocolError(f"{where}: unexpected field {', '.join(extra)}")


def _parse(value: object, tp: Any, where: str) -> Any:
    """``value`` as type ``tp``, or ProtocolError naming ``where``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        (tp,) = args
        origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where} must be a list")
        (item,) = get_args(tp)
        return [_parse(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and issubclass(tp, Schema):
        return tp.from_json(value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(f"{where} must be finite")
    # bool is an int in Python, never in a message.
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise ProtocolError(f"{where} must be {tp.__name__}, got {type(value).__name__}")
    return value


def _dump(value: Any) -> Any:
    if isinstance(value, Schema):
        return value.to_json()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def check_hex(value: str, nbytes: int, name: str) -> None:
    """ProtocolError unless ``value`` is ``0x`` and exactly ``nbytes`` bytes of hex."""
    if not _HEX.fullmatch(value) or len(value) != 2 + 2 * nbytes:
        raise ProtocolError(f"{name} must be 0x and {nbytes} bytes of hex")


def check_range(value: float | None, name: str, low: float, high: float = math.inf) -> None:
    """ProtocolError unless ``value`` is None or within ``[low, high]``."""
    if value is not None and not low <= value <= high:
        raise ProtocolError(f"{name} must be within [{low}, {high}], got {value}")


class StageMessage(Schema):
    """A message of one stage; ``bytes`` and ``dict[str, bytes]`` fields travel as blobs."""

    STAGE: ClassVar[str]

    @classmethod
    def _split(cls) -> tuple[dict[str, Any], dict[str, Any]]:
        """(header fields, blob fields) with their types."""
        header: dict[str, Any] = {}
        blobs: dict[str, Any] = {}
        for name, tp in cls._hints().items():
            (blobs if tp in (bytes, dict[str, bytes]) else header)[name] = tp
        return header, blobs

    def to_record(self) -> WireRecord:
        """The wire form: a canonical JSON header and named blobs."""
        header, blobs = self._split()
        record: WireRecord = {
            _HEADER: canonical_json({n: _dump(getattr(self, n)) for n in header}).decode()
        }
        for name, tp in blobs.items():
            value = getattr(self, name)
            if tp is bytes:
                record[f"{_BLOB}{name}"] = bytes(value)
            else:
                for key, blob in value.items():
                    record[f"{_BLOB}{name}:{key}"] = bytes(blob)
        return record

    @classmethod
    def from_record(cls: type[S], record: Mapping[str, object]) -> S:
        """Inverse of ``to_record``; ProtocolError naming any field that is not as declared."""
        where = cls.__name__
        header_types, blob_types = cls._split()
        raw = record.get(_HEADER)
        if not isinstance(raw, str):
            raise ProtocolError(f"{where}: the message has no header")
        try:
            header = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{where}: the header is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise ProtocolError(f"{where}: the header is not a JSON object")
        _exact_keys(set(header), set(header_types), where)
        values = {n: _parse(header[n], tp, f"{where}.{n}") for n, tp in header_types.items()}
        groups: dict[str, dict[str, bytes]] = {
            n: {} for n, tp in blob_types.items() if tp is not bytes
        }
        for key, value in record.items():
            if key == _HEADER:
                continue
            name, _, sub = key.removeprefix(_BLOB).partition(":")
            if not key.startswith(_BLOB) or name not in blob_types:
                raise ProtocolError(f"{where}: unexpected field {key}")
            if not isinstance(value, bytes):
                raise ProtocolError(f"{where}.{name} must be bytes, got {type(value).__name__}")
            if blob_types[name] is bytes and not sub:
                values[name] = value
            elif blob_types[name] is not bytes and sub:
                groups[name][sub] = value
            else:
                raise ProtocolError(f"{where}: unexpected field {key}")
        values.update(groups)
        _exact_keys(set(values), set(header_types) | set(blob_types), where)
        return _checked(cls, values, where)


@dataclass(frozen=True, kw_only=True)
class RoundRequest(StageMessage):
    """The fields every request of a round carries."""

    federation_id: str
    round: int
    through_slice: int | None

    def check(self) -> None:
        if not self.federation_id:
            raise ProtocolError("federation_id must not be empty")
        check_range(self.round, "round", 1)
        check_range(self.through_slice, "through_slice", 0)


@dataclass(frozen=True, kw_only=True)
class NodeReply(StageMessage):
    """The field every reply carries: who answers (the coordinator checks it is that node)."""

    address: str

    def check(self) -> None:
        check_hex(self.address, 20, "address")


@dataclass(frozen=True, kw_only=True)
class ForgetEntry(Schema):
    """One forget request riding on a train request."""

    request_id: str
    record_id: str

    def check(self) -> None:
        if not self.request_id or not self.record_id:
            raise ProtocolError("request_id and record_id must not be empty")


@dataclass(frozen=True, kw_only=True)
class ForgetResult(Schema):
    """What the owner of a forgotten record reports: its certificate and new model, and the
    record's two salts for the data subject's receipt (``protocol.receipt``)."""

    request_id: str
    certificate_cid: str
    certify_tx: str
    new_model_hash: str
    n_samples_after: int
    record_salt: str
    commitment_salt: str

    def check(self) -> None:
        if not self.request_id or not self.certificate_cid:
            raise ProtocolError("request_id and certificate_cid must not be empty")
        check_hex(self.certify_tx, 32, "certify_tx")
        check_hex(self.new_model_hash, 32, "new_model_hash")
        check_range(self.n_samples_after, "n_samples_after", 0)
        check_hex(self.record_salt, 32, "record_salt")
        check_hex(self.commitment_salt, 32, "commitment_salt")


@dataclass(frozen=True, kw_only=True)
class TrainRequest(RoundRequest):
    """Stage 1, coordinator → node: forget these records, train through a slice, commit."""

    STAGE: ClassVar[str] = TRAIN
    shards: int
    slices: int
    epoch: str
    """The roster epoch (``protocol.epoch``) the coordinator read from the chain: the node
    trains under the epoch it derives itself and refuses a request naming another."""
    forget_requests: list[ForgetEntry]

    def check(self) -> None:
        super().check()
        check_range(self.shards, "shards", 1)
        check_range(self.slices, "slices", 1)
        check_hex(self.epoch, 32, "epoch")


@dataclass(frozen=True, kw_only=True)
class TrainReply(NodeReply):
    """Stage 1, node → coordinator: the signed commitment to this round's model."""

    STAGE: ClassVar[str] = TRAIN
    public_key: str
    model_hash: str
    n_samples: int
    signature: str
    local_accuracy: float | None
    forget_results: list[ForgetResult]
    records: bytes
    """The node's record commitments, 32 bytes each, sorted and distinct."""
    records_certifications: int
    """The node's certified forget requests on chain when it built ``records``."""
    records_signature: str
    """The node's EIP-712 ``RecordsRoot`` over ``records`` (``protocol.records_root``): what a
    forget request naming this node must prove its record is under."""
    slice_roots: bytes
    """The node's slice roots (32 bytes each, shard-major), committed to by ``signature``."""

    def check(self) -> None:
        super().check()
        if not self.slice_roots or len(self.slice_roots) % 32:
            raise ProtocolError("slice_roots must be one or more whole 32-byte roots")
        check_hex(self.public_key, 32, "public_key")
        check_hex(self.model_hash, 32, "model_hash")
        check_hex(self.signature, 65, "signature")
        check_range(self.n_samples, "n_samples", 1)
        check_range(self.local_accuracy, "local_accuracy", 0.0, 1.0)
        if len(self.records) % 32:
            raise ProtocolError("records must be whole 32-byte commitments")
        check_range(self.records_certifications, "records_certifications", 0)
        check_hex(self.records_signature, 65, "records_signature")


@dataclass(frozen=True, kw_only=True)
class ShareRequest(RoundRequest):
    """Stage 2, coordinator → node: agree on the sender set (every committed node) and
    share the committed model with this roster. ``clip`` and ``frac_bits`` only repeat what
    the node derives itself from the chain (it refuses any other)."""

    STAGE: ClassVar[str] = SHARE
    model_hash: str
    n_total: int
    clip: float
    frac_bits: int
    senders: list[str]
    roster: bytes
    commitments: bytes
    """Every sender's signed update of this round (canonical JSON of
    ``protocol.manifest.NodeUpdate``): what the node's noise is drawn for."""

    def check(self) -> None:
        super().check()
        _check_senders(self.senders)
        check_hex(self.model_hash, 32, "model_hash")
        check_range(self.n_total, "n_total", 1)
        if not self.clip > 0:
            raise ProtocolError(f"clip must be positive, got {self.clip}")
        check_range(self.frac_bits, "frac_bits", 0, 30)


@dataclass(frozen=True, kw_only=True)
class ShareReply(NodeReply):
    """Stage 2, node → coordinator: its signature on the sender set, its masked vector
    (``protocol.secure_sum.MaskedInput``) signed by it, and one sealed envelope of mask-seed
    shares per roster member, by address."""

    STAGE: ClassVar[str] = SHARE
    signature: str
    masked_signature: str
    masked: bytes
    envelopes: dict[str, bytes]

    def check(self) -> None:
        super().check()
        check_hex(self.signature, 65, "signature")
        check_hex(self.masked_signature, 65, "masked_signature")


def _check_senders(senders: list[str]) -> None:
    for i, sender in enumerate(senders):
        check_hex(sender, 20, f"senders[{i}]")
    if len({s.lower() for s in senders}) != len(senders):
        raise ProtocolError("senders must be distinct")


@dataclass(frozen=True, kw_only=True)
class Agreement(Schema):
    """One sender's signature on the sender set (``protocol.secure_sum.sender_set_digest``)."""

    address: str
    signature: str

    def check(self) -> None:
        check_hex(self.address, 20, "address")
        check_hex(self.signature, 65, "signature")


@dataclass(frozen=True, kw_only=True)
class AggregateRequest(RoundRequest):
    """Stage 3, coordinator → node: the envelopes addressed to it, by sender, and every
    sender's signature on that set."""

    STAGE: ClassVar[str] = AGGREGATE
    senders: list[str]
    roster: bytes
    envelopes: dict[str, bytes]
    agreements: list[Agreement]

    def check(self) -> None:
        super().check()
        _check_senders(self.senders)
        if sorted(self.senders) != sorted(self.envelopes):
            raise ProtocolError("envelopes must come from exactly the declared senders")
        signers = [a.address.lower() for a in self.agreements]
        if len(set(signers)) != len(signers):
            raise ProtocolError("one agreement per signer")


@dataclass(frozen=True, kw_only=True)
class AggregateReply(NodeReply):
    """Stage 3, node → coordinator: its shares of the seeds that unmask the sum
    (``protocol.secure_sum.Reveal``), signed by the node."""

    STAGE: ClassVar[str] = AGGREGATE
    signature: str
    reveal: bytes

    def check(self) -> None:
        super().check()
        check_hex(self.signature, 65, "signature")


@dataclass(frozen=True, kw_only=True)
class ApproveRequest(RoundRequest):
    """Stage 4, coordinator → node: check and approve the proposed round."""

    STAGE: ClassVar[str] = APPROVE
    model_cid: str
    model_hash: str
    updates_root: str
    manifest_cid: str

    def check(self) -> None:
        super().check()
        check_hex(self.model_hash, 32, "model_hash")
        check_hex(self.updates_root, 32, "updates_root")
        if not self.model_cid or not self.manifest_cid:
            raise ProtocolError("model_cid and manifest_cid must not be empty")


@dataclass(frozen=True, kw_only=True)
class ApproveReply(NodeReply):
    """Stage 4, node → coordinator: approved, with the model's test accuracy, and either its
    EIP-712 ``RoundApproval`` signature (round not yet proposed: the coordinator carries it in
    the proposal's transaction) or the tx of its own approval (round already on chain)."""

    STAGE: ClassVar[str] = APPROVE
    approved: bool
    tx_hash: str | None
    accuracy: float | None
    signature: str | None

    def check(self) -> None:
        super().check()
        if self.tx_hash is not None:
            check_hex(self.tx_hash, 32, "tx_hash")
        if self.signature is not None:
            check_hex(self.signature, 65, "signature")
        check_range(self.accuracy, "accuracy", 0.0, 1.0)


STAGES: dict[str, tuple[type[StageMessage], type[StageMessage]]] = {
    TRAIN: (TrainRequest, TrainReply),
    SHARE: (ShareRequest, ShareReply),
    AGGREGATE: (AggregateRequest, AggregateReply),
    APPROVE: (ApproveRequest, ApproveReply),
}
"""Stage name → (request type, reply type)."""


def to_record_dict(record: WireRecord) -> RecordDict:
    """Wrap a wire record as Flower content (Flower imported only here, at the edge)."""
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict({_RECORD: ConfigRecord(record)})  # type: ignore[arg-type]


def from_record_dict(content: RecordDict) -> WireRecord:
    """Unwrap Flower content into a wire record; ProtocolError if it is not Lethe's."""
    records = content.config_records
    if _RECORD not in records:
        raise ProtocolError("message carries no Lethe payload")
    wire: WireRecord = {}
    for key, value in records[_RECORD].items():
        if not isinstance(value, (str, bytes)):
            raise ProtocolError(f"field {key} is neither text nor bytes")
        wire[key] = value
    return wire
