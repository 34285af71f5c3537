"""EIP-712 signatures: bound to one deployment (chain id and contract address).

Specifications:
- a node's round update and its certificate verify in the domain they were signed for;
- the same signature read in another contract's or another chain's domain names another
  signer, so it cannot be replayed to another deployment;
- the typed message names the fields a wallet shows.
"""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account

from protocol.certificate import Certificate
from protocol.commitments import Update
from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.merkle import merkle_proof, merkle_root
from protocol.typed_data import UNBOUND, Domain

KEY = "0x" + "11" * 32
ADDRESS = Account.from_key(KEY).address
HERE = Domain(31337, "0x" + "aa" * 20)
ELSEWHERE = [Domain(31337, "0x" + "bb" * 20), Domain(1, HERE.contract), UNBOUND]


def _update() -> Update:
    return Update("fed", 3, ADDRESS, keccak256(b"model"), 40, (keccak256(b"root"),) * 4)


def test_an_update_verifies_only_in_the_domain_it_was_signed_for() -> None:
    update = _update()
    signature = update.sign(HERE, KEY)
    assert update.signer(HERE, signature) == ADDRESS
    for other in ELSEWHERE:
        assert update.signer(other, signature) != ADDRESS, other
    changed = dataclasses.replace(update, slice_roots=(keccak256(b"other"),) * 4)
    assert changed.signer(HERE, signature) != ADDRESS


def test_an_update_message_shows_its_fields() -> None:
    message = _update().typed()
    assert set(message) == {
        "federationId",
        "round",
        "node",
        "modelHash",
        "nSamples",
        "sliceRootsHash",
    }


def _certificate(domain: Domain) -> Certificate:
    leaves = [keccak256(bytes([i])) for i in range(4)]
    return Certificate(
        request_id="req-1",
        federation_id="fed",
        shard=0,
        slice=1,
        slices_total=4,
        record_leaf="0x" + leaves[2].hex(),
        leaf_index=2,
        leaf_count=4,
        merkle_proof=tuple("0x" + h.hex() for h in merkle_proof(leaves, 2)),
        old_slice_root="0x" + merkle_root(leaves).hex(),
        new_slice_root="0x" + merkle_root(leaves[:2] + leaves[3:]).hex(),
        from_checkpoint_hash="0x" + keccak256(b"ckpt").hex(),
        model_hash_before="0x" + keccak256(b"before").hex(),
        model_hash_after="0x" + keccak256(b"after").hex(),
        slices_retrained=(1, 2, 3),
        samples_retrained=10,
        wall_time_ms=5,
        timestamp=1_700_000_000,
    ).signed(KEY, domain)


def test_a_certificate_is_bound_to_the_deployment_it_names() -> None:
    cert = _certificate(HERE)
    assert (cert.chain_id, cert.contract) == (HERE.chain_id, HERE.contract)
    assert cert.verify(expected_signer=ADDRESS) == ADDRESS
    for other in ELSEWHERE:
        moved = dataclasses.replace(cert, chain_id=other.chain_id, contract=other.contract)
        with pytest.raises(ProtocolError, match="signed by"):
            moved.verify(expected_signer=ADDRESS)
