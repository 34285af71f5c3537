"""Stage messages: exactly the declared fields, or a ProtocolError that names the field.

Specifications:
- every message survives its wire form unchanged;
- a record with a field missing, an extra field, or a field of the wrong type (header or
  blob) is refused, and the error names that field;
- values out of range (a malformed address, hash or signature, a negative count, a NaN)
  are refused the same way; garbage that is not a record at all is refused too.
"""

import json
from typing import Any

import pytest

from protocol.errors import ProtocolError
from protocol.messages import (
    STAGES,
    AggregateReply,
    AggregateRequest,
    Agreement,
    ApproveReply,
    ApproveRequest,
    ForgetEntry,
    ForgetResult,
    ShareReply,
    ShareRequest,
    StageMessage,
    TrainReply,
    TrainRequest,
)

ADDRESS = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20
HASH = "0x" + "11" * 32
SIGNATURE = "0x" + "22" * 65
BASE: dict[str, Any] = {"federation_id": "fed", "round": 3, "through_slice": None}

SAMPLES: list[StageMessage] = [
    TrainRequest(
        **BASE,
        shards=1,
        slices=4,
        epoch=HASH,
        forget_requests=[ForgetEntry(request_id="r1", record_id="rec-1")],
    ),
    TrainReply(
        address=ADDRESS,
        public_key=HASH,
        model_hash=HASH,
        n_samples=30,
        signature=SIGNATURE,
        local_accuracy=0.5,
        forget_results=[
            ForgetResult(
                request_id="r1",
                certificate_cid="bafy",
                certify_tx=HASH,
                new_model_hash=HASH,
                n_samples_after=29,
                record_salt=HASH,
                commitment_salt=HASH,
            )
        ],
        records=b"\x01" * 64,
        records_certifications=2,
        records_signature=SIGNATURE,
        slice_roots=b"\x02" * 128,
    ),
    ShareRequest(
        **{**BASE, "through_slice": 1},
        model_hash=HASH,
        n_total=90,
        clip=8.0,
        frac_bits=16,
        senders=[ADDRESS, OTHER],
        roster=b"{}",
        commitments=b"[]",
    ),
    ShareReply(
        address=ADDRESS,
        signature=SIGNATURE,
        masked_signature=SIGNATURE,
        masked=b"\x00" * 8,
        envelopes={ADDRESS: b"e1", OTHER: b"e2"},
    ),
    AggregateRequest(
        **BASE,
        senders=[ADDRESS, OTHER],
        roster=b"{}",
        envelopes={ADDRESS: b"1", OTHER: b"2"},
        agreements=[Agreement(address=OTHER, signature=SIGNATURE)],
    ),
    AggregateReply(address=ADDRESS, signature=SIGNATURE, reveal=b"\x00" * 8),
    ApproveRequest(
        **BASE, model_cid="bafy1", model_hash=HASH, updates_root=HASH, manifest_cid="bafy2"
    ),
    ApproveReply(address=ADDRESS, approved=True, tx_hash=HASH, accuracy=0.75, signature=None),
]
IDS = [type(m).__name__ for m in SAMPLES]


def _header(record: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(record["header"]))


def _with_header(record: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    return {**record, "header": json.dumps(header)}


def _refused(message: StageMessage, record: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        type(message).from_record(record)


def test_every_stage_has_a_request_and_a_reply_sample() -> None:
    assert {type(m) for m in SAMPLES} == {t for pair in STAGES.values() for t in pair}


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_message_survives_its_wire_form(message: StageMessage) -> None:
    record = message.to_record()
    assert all(isinstance(v, (str, bytes)) for v in record.values())
    assert type(message).from_record(record) == message


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_missing_header_field_is_refused_by_name(message: StageMessage) -> None:
    record = message.to_record()
    for name in _header(record):
        header = _header(record)
        del header[name]
        _refused(message, _with_header(record, header), f"{name} is missing")


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_missing_blob_is_refused_by_name(message: StageMessage) -> None:
    record = message.to_record()
    for key in [k for k in record if k.startswith("blob:") and k.count(":") == 1]:
        _refused(message, {k: v for k, v in record.items() if k != key}, key[5:])


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_extra_field_is_refused_by_name(message: StageMessage) -> None:
    record = message.to_record()
    _refused(message, _with_header(record, {**_header(record), "admin": True}), "admin")
    _refused(message, {**record, "blob:smuggled": b"x"}, "smuggled")
    _refused(message, {**record, "other": "x"}, "other")


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_ill_typed_header_field_is_refused_by_name(message: StageMessage) -> None:
    record = message.to_record()
    for name, value in _header(record).items():
        wrong: object = {"nested": "object"} if not isinstance(value, dict) else "text"
        for bad in (wrong, [1, 2] if not isinstance(value, list) else "text"):
            header = {**_header(record), name: bad}
            _refused(message, _with_header(record, header), name)


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_blob_that_is_not_bytes_is_refused_by_name(message: StageMessage) -> None:
    record = message.to_record()
    for key in [k for k in record if k.startswith("blob:")]:
        _refused(message, {**record, key: "text, not bytes"}, key[5:].split(":")[0])


@pytest.mark.parametrize("garbage", [{}, {"header": "not json"}, {"header": "[1]"}, {"header": 7}])
@pytest.mark.parametrize("message_type", [t for pair in STAGES.values() for t in pair])
def test_garbage_is_refused(garbage: dict[str, Any], message_type: type[StageMessage]) -> None:
    with pytest.raises(ProtocolError, match="header"):
        message_type.from_record(garbage)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "0x1234"),
        ("address", "ab" * 21),
        ("model_hash", "0x" + "zz" * 32),
        ("signature", HASH),
        ("n_samples", 0),
        ("n_samples", True),
        ("local_accuracy", 1.5),
        ("public_key", None),
    ],
)
def test_out_of_range_value_is_refused_by_name(field: str, value: object) -> None:
    record = SAMPLES[1].to_record()
    _refused(SAMPLES[1], _with_header(record, {**_header(record), field: value}), field)


def test_nan_and_nested_garbage_are_refused_by_name() -> None:
    share = SAMPLES[2].to_record()
    _refused(SAMPLES[2], {**share, "header": str(share["header"]).replace("8.0", "NaN")}, "clip")
    train = SAMPLES[0].to_record()
    header = {**_header(train), "forget_requests": [{"request_id": "r1"}]}
    _refused(SAMPLES[0], _with_header(train, header), r"forget_requests\[0\].*record_id")
    reply = SAMPLES[1].to_record()
    results = _header(reply)["forget_results"]
    header = {**_header(reply), "forget_results": [{**results[0], "certify_tx": 5}]}
    _refused(SAMPLES[1], _with_header(reply, header), "certify_tx")


def test_aggregate_request_envelopes_must_match_the_declared_senders() -> None:
    record = SAMPLES[4].to_record()
    del record[f"blob:envelopes:{OTHER}"]
    _refused(SAMPLES[4], record, "senders")
