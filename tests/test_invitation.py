"""The invitation, the signed admission request and the sealed record key hold against
whoever sees or alters them on the way.

Specifications:
- a request whose address, share key or code was changed after signing is refused;
- the record key sealed for one request opens only with that request's share key, only
  for that request (a replay to another newcomer fails), and not when altered;
- an invitation or request with a missing, extra or ill-typed field is refused by name.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from eth_account import Account

from protocol.envelope import generate_private_key, private_key_bytes
from protocol.errors import ProtocolError
from protocol.invitation import (
    INVITATION_VERSION,
    AdmissionRequest,
    Invitation,
    Recipe,
    code_hash,
    new_code,
    open_record_key,
    seal_record_key,
    share_key_hex,
)

OWNER = "0x" + "aa" * 20
RECORD_KEY = b"ab" * 32


def newcomer(code: str = "the-code") -> tuple[AdmissionRequest, bytes, str]:
    """(signed request, share private key, eth private key) of a fresh newcomer."""
    account = Account.create()
    share = private_key_bytes(generate_private_key())
    request = AdmissionRequest.signed(
        "0x" + bytes(account.key).hex(),
        federation_id="fed",
        name="node-4",
        address=account.address,
        share_key="0x" + share_key_hex(share),
        auth_key="ecdsa-sha2-nistp384 AAAA",
        code=code,
    )
    return request, share, "0x" + bytes(account.key).hex()


def test_a_signed_request_round_trips_and_checks() -> None:
    request, _, _ = newcomer()
    again = AdmissionRequest.from_json(request.to_json())
    again.check_signature()
    assert again == request and again.code_matches(code_hash("the-code"))
    assert not again.code_matches(code_hash("another"))


@pytest.mark.parametrize("field", ["address", "share_key", "code", "name", "auth_key"])
def test_a_request_altered_after_signing_is_refused(field: str) -> None:
    request, _, _ = newcomer()
    other, _, _ = newcomer("other-code")
    swapped = {"name": "node-5", "auth_key": "ecdsa-sha2-nistp384 BBBB"}
    altered = dataclasses.replace(request, **{field: swapped.get(field, getattr(other, field))})
    with pytest.raises(ProtocolError, match="signed by"):
        altered.check_signature()


def test_the_sealed_key_opens_only_for_its_request_and_share_key() -> None:
    request, share, _ = newcomer()
    payload = seal_record_key(RECORD_KEY, request, OWNER)
    assert open_record_key(payload, share, request, OWNER) == RECORD_KEY
    eavesdropper, their_share, _ = newcomer()
    with pytest.raises(ProtocolError):  # someone else's share key
        open_record_key(payload, their_share, request, OWNER)
    with pytest.raises(ProtocolError):  # replayed to another newcomer's request
        open_record_key(payload, their_share, eavesdropper, OWNER)
    with pytest.raises(ProtocolError):  # claimed to come from another sender
        open_record_key(payload, share, request, "0x" + "bb" * 20)
    flipped = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(ProtocolError):
        open_record_key(flipped, share, request, OWNER)
    with pytest.raises(ProtocolError, match="not a sealed record key"):
        open_record_key(b"hello", share, request, OWNER)


def invitation() -> Invitation:
    return Invitation(
        version=INVITATION_VERSION,
        federation_id="fed",
        chain_id=31337,
        rpc_url="http://127.0.0.1:8545",
        contract="0x" + "11" * 20,
        deployment_block=1,
        owner=OWNER,
        store="/srv/store",
        superlink="127.0.0.1:9092",
        ca_certificate=None,
        supernode_auth=False,
        recipe=Recipe("fed", 1, 2, ["negative", "neutral", "positive"], "none"),
        stake_wei=10**18,
        code=new_code(),
        issued_block=7,
    )


def test_an_invitation_round_trips_and_bad_ones_are_named() -> None:
    original = invitation()
    assert Invitation.from_json(original.to_json()) == original
    data = json.loads(original.to_json())
    del data["code"]
    with pytest.raises(ProtocolError, match="field code is missing"):
        Invitation.from_json(json.dumps(data))
    data = json.loads(original.to_json()) | {"extra": 1}
    with pytest.raises(ProtocolError, match="unexpected field extra"):
        Invitation.from_json(json.dumps(data))
    data = json.loads(original.to_json()) | {"version": 99}
    with pytest.raises(ProtocolError, match="version 99"):
        Invitation.from_json(json.dumps(data))
    with pytest.raises(ProtocolError, match="every field must be a string"):
        AdmissionRequest.from_json(json.dumps(dict.fromkeys(
            ["federation_id", "name", "address", "share_key", "auth_key", "code", "signature"], 1
        )))  # fmt: skip
