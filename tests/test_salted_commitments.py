"""Record ids cannot be confirmed from the public record; the data subject can still check.

Real chain, real nodes, real content store, the in-memory transport. Specifications:
- an outsider holding a list of candidate record ids (and the public corpus's texts)
  confirms none of them from what the chain and the store publish: the commitments in
  ``ForgetRequested``, the certificates' record leaves and Merkle siblings, and request ids
  (the issue's attack: hash every candidate, compare), neither with the unkeyed hashes nor
  with a guessed key;
- those same values do name the records for whoever holds the keys (so the attack above
  looks at the right values);
- the owner node's receipt, given by the API to the token holder only and by
  `lethe receipt`, lets the data subject check the certificate is about their record
  (`Receipt.check`, `lethe check-receipt`); a wrong receipt, text or record fails;
- the audit of the whole history still passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from coordinator.api import create_app
from coordinator.receipt_cli import receipt
from node.sisa import SisaNode
from protocol.certificate import Certificate, record_content_hash, record_leaf
from protocol.commitments import RecordKey
from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.receipt import Receipt
from tests.api_server import serve
from tests.node_fixtures import build_node, make_records, small_config
from verifier.audit import audit
from verifier.receipt_cli import check_receipt

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

TOKEN = "salted-test-token-0123456789"
CANDIDATES = 5_000
"""The issue's attack hashed 5,000 candidate ids."""


def _records(fed: MemoryFederation) -> dict[str, tuple[str, str]]:
    """Every record the nodes hold: id → (text, label), as a public corpus would give it."""
    from tests.round_fixtures import RECORDS_PER_NODE

    return {
        r.id: (r.text, r.label)
        for i in range(len(fed.nodes))
        for r in make_records(RECORDS_PER_NODE, f"n{i}")
    }


def _candidates(fed: MemoryFederation) -> list[str]:
    """5,000 guessable ids in the nodes' id scheme, the real ones among them."""
    guessed = [f"n{k}-{j:04d}" for k in range(10) for j in range(CANDIDATES // 10)]
    assert set(_records(fed)) <= set(guessed)
    return guessed


# What the attacker computed: the unkeyed hashes of the code before this change.
def _unkeyed_commitment(federation_id: str, record_id: str) -> bytes:
    return keccak256(b"lethe.record.v1\x00" + federation_id.encode() + b"\x00" + record_id.encode())


def _unkeyed_leaf(record_id: str, text: str, label: str) -> bytes:
    return keccak256(record_id.encode() + record_content_hash(text, label))


def _forget_some(fed: MemoryFederation, per_node: int = 2) -> dict[str, str]:
    """Forget ``per_node`` records of every node through the coordinator; request → record."""
    assert fed.coordinator.run_round(None).finalized
    asked = {}
    for index, node in enumerate(fed.nodes):
        with node.runtime.sisa() as sisa:
            held = sisa.store.record_ids()
        for k in range(per_node):
            record_id = held[5 + 7 * k]
            request_id = f"dsr-{index}-{k}"
            fed.db.submit_forget(record_id, fed.commitment(record_id), request_id)
            asked[request_id] = record_id
    assert fed.coordinator.process_forgets()
    for request_id in asked:
        assert fed.db.get_forget(request_id).state == "completed"
    return asked


def _published(fed: MemoryFederation) -> tuple[list[bytes], list[Certificate]]:
    """What anyone reads: on-chain request commitments, and every certificate by CID."""
    ledger = fed.chain.owner
    commitments = [bytes(e.args["recordCommitment"]) for e in ledger.events(["ForgetRequested"])]
    certificates = [
        Certificate.from_bytes(fed.store.get(str(e.args["certificateCid"])))
        for e in ledger.events(["ForgetCertified"])
    ]
    return commitments, certificates


def test_an_outsider_with_candidate_ids_confirms_no_record(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    asked = _forget_some(fed)
    commitments, certificates = _published(fed)
    assert len(commitments) == len(certificates) == len(asked) == 6
    corpus = _records(fed)
    leaves = {bytes.fromhex(c.record_leaf[2:]) for c in certificates}
    siblings = {bytes.fromhex(h[2:]) for c in certificates for h in c.merkle_proof}
    chain_request_ids = {keccak256(c.request_id.encode()) for c in certificates}
    public = set(commitments) | leaves | siblings | chain_request_ids
    public_text = {c.request_id for c in certificates}

    guessed_keys = [
        RecordKey(fed.federation_id, bytes(32)),
        RecordKey(fed.federation_id, b"\xff" * 32),
    ]
    confirmed = set()
    for rid in _candidates(fed):
        hashes = {_unkeyed_commitment(fed.federation_id, rid)}
        hashes |= {key.commitment(rid) for key in guessed_keys}
        if rid in corpus:
            text, label = corpus[rid]
            hashes |= {_unkeyed_leaf(rid, text, label), record_leaf(rid, text, label, bytes(32))}
        # a request id derived from the record (the node's default was its commitment)
        derived = {"0x" + h.hex() for h in hashes}
        hashes |= {keccak256(d.encode()) for d in derived}
        if hashes & public or derived & public_text:
            confirmed.add(rid)
    assert confirmed == set(), f"an outsider confirmed {sorted(confirmed)}"

    # The same public values do name the records for the key holders: the attack looked
    # at the right values, and it is the key that it lacks.
    assert {fed.record_key.commitment(rid) for rid in asked.values()} == set(commitments)
    for cert in certificates:
        rid = asked[cert.request_id]
        stored = fed.db.get_forget(cert.request_id).receipt
        assert stored is not None
        assert Receipt.from_json(stored).check(cert, rid, *corpus[rid])


def test_node_default_request_ids_do_not_name_the_record(tmp_path: Path) -> None:
    # `lethe-node forget` without --request-id: the request id is the node's keyed tag,
    # no longer the unkeyed commitment anyone can recompute from the record id.
    records = make_records(40)
    node = build_node(tmp_path / "node.sqlite", records, small_config())
    victims = [records[3].id, records[17].id]
    result = node.forget(victims)
    ids = {r.request_id for r in result.records}
    assert ids == {node.record_tag(v) for v in victims}
    guesses = {"0x" + _unkeyed_commitment("fed-test", r.id).hex() for r in records}
    assert not ids & guesses
    # Another node (its own salt key) tags the same ids differently.
    other = build_node(tmp_path / "other.sqlite", records, small_config(node_id="node-2"))
    assert {other.record_tag(v) for v in victims}.isdisjoint(ids)


def test_the_data_subject_checks_the_certificate_with_the_receipt(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    asked = _forget_some(fed, per_node=1)
    corpus = _records(fed)
    (first, record_id), (second, _) = list(asked.items())[:2]
    mine = Receipt.from_json(fed.db.get_forget(first).receipt or {})
    cert = Certificate.from_bytes(fed.store.get(mine.certificate_cid))
    text, label = corpus[record_id]
    assert mine.check(cert, record_id, text, label) == cert.node_address
    # The commitment on chain is this record's, for whoever holds the receipt.
    opened = fed.chain.owner.forget_request(keccak256(first.encode()))
    assert opened is not None and opened.record_commitment == mine.commitment(record_id)

    with pytest.raises(ProtocolError, match="not this record"):
        mine.check(cert, record_id, text + "!", label)
    with pytest.raises(ProtocolError, match="not this record"):
        mine.check(cert, record_id, text, "positive" if label != "positive" else "negative")
    wrong_salt = Receipt(**{**mine.to_json(), "record_salt": "0x" + "00" * 32})
    with pytest.raises(ProtocolError, match="not this record"):
        wrong_salt.check(cert, record_id, text, label)
    other = Receipt.from_json(fed.db.get_forget(second).receipt or {})  # another node's
    with pytest.raises(ProtocolError, match="expected"):
        other.check(cert, record_id, text, label)
    other = Receipt(**{**mine.to_json(), "request_id": second})
    with pytest.raises(ProtocolError, match="for request"):
        other.check(cert, record_id, text, label)
    forged = Receipt(**{**mine.to_json(), "node_address": "0x" + "22" * 20})
    with pytest.raises(ProtocolError, match="expected 0x2222"):
        forged.check(cert, record_id, text, label)


def test_the_receipt_reaches_the_token_holder_only(
    memory_federation: MemoryFederation, tmp_path: Path
) -> None:
    fed = memory_federation
    asked = _forget_some(fed, per_node=1)
    request_id, record_id = next(iter(asked.items()))
    stored = fed.db.get_forget(request_id).receipt
    assert stored is not None
    app = create_app(fed.db, token=TOKEN, record_key=fed.record_key)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    public = client.get(f"/forget/{request_id}")
    assert public.status_code == 200
    salts = (stored["record_salt"], stored["commitment_salt"])
    assert "receipt" not in public.get_json() and not any(s in public.text for s in salts)
    listing = client.get("/forget")
    assert not any(s in listing.text for s in salts)
    assert client.get(f"/forget/{request_id}/receipt").status_code == 401
    assert client.get(f"/forget/{request_id}", headers=auth).get_json()["receipt"] == stored
    assert client.get(f"/forget/{request_id}/receipt", headers=auth).json == stored
    assert client.get("/forget/nope/receipt", headers=auth).status_code == 404

    # The command line: `lethe receipt` fetches it, `lethe check-receipt` checks it.
    out = tmp_path / "receipt.json"
    runner = CliRunner()
    for url in serve(app):
        got = runner.invoke(
            receipt, [request_id, "--api", url, "-o", str(out)], env={"LETHE_API_TOKEN": TOKEN}
        )
        assert got.exit_code == 0, got.output
        refused = runner.invoke(
            receipt, [request_id, "--api", url], env={"LETHE_API_TOKEN": "wrong-token-0123456789"}
        )
        assert refused.exit_code == 1
    assert json.loads(out.read_text()) == stored
    text, label = _records(fed)[record_id]
    store = fed.coordinator.config.store
    args = [str(out), "--record-id", record_id, "--label", label, "--store", store]
    ok = runner.invoke(check_receipt, [*args, "--text", text])
    assert ok.exit_code == 0, ok.output
    assert "✓" in ok.output and stored["certificate_cid"] in ok.output
    wrong = runner.invoke(check_receipt, [*args, "--text", "another text"])
    assert wrong.exit_code == 1 and "not this record" in wrong.output
    mine = tmp_path / "my-record.json"
    mine.write_text(json.dumps({"id": record_id, "text": text, "label": label}))
    ok = runner.invoke(check_receipt, [str(out), "--record", str(mine), "--store", store])
    assert ok.exit_code == 0, ok.output


def test_the_audit_passes_on_the_honest_path(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    asked = _forget_some(fed)
    report = audit(fed.chain.owner, fed.store)
    assert report.ok, report.lines()
    assert {f.label for f in report.forgets if f.status == "verified"} == set(asked)


def test_the_node_prints_the_subjects_copy_of_a_record(tmp_path: Path) -> None:
    from node.records_cli import records as records_command

    held = make_records(12)
    build_node(tmp_path / "node.sqlite", held, small_config()).close()
    got = CliRunner().invoke(
        records_command, ["--db", str(tmp_path / "node.sqlite"), "--id", held[4].id, "--json"]
    )
    assert got.exit_code == 0, got.output
    assert json.loads(got.output) == {
        "id": held[4].id,
        "text": held[4].text,
        "label": held[4].label,
    }


def test_a_store_of_unsalted_leaves_is_upgraded_on_open(tmp_path: Path) -> None:
    import sqlite3

    records = make_records(30)
    path = tmp_path / "node.sqlite"
    node = build_node(path, records, small_config())
    salted_roots = node.store.slices()
    node.close()
    # Make it a version-1 store: unsalted leaves, no salt key.
    con = sqlite3.connect(path)
    for r in records:
        con.execute(
            "UPDATE records SET leaf=? WHERE id=?", (_unkeyed_leaf(r.id, r.text, r.label), r.id)
        )
    con.execute("DELETE FROM meta WHERE key='salt_key'")
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()

    with SisaNode.open(path) as upgraded:
        assert not upgraded.is_trained()  # new roots: every shard retrains
        leaves = {upgraded.store.locate([r.id])[r.id].leaf for r in records}
        assert leaves.isdisjoint({_unkeyed_leaf(r.id, r.text, r.label) for r in records})
        assert upgraded.store.slices() != salted_roots  # a new salt key
        r = records[4]
        salt = upgraded.store.record_salt(r.id)
        assert upgraded.store.locate([r.id])[r.id].leaf == record_leaf(r.id, r.text, r.label, salt)
        upgraded.train()
        assert upgraded.is_trained()
