"""The audit proves a correct history from chain and store alone, and names the first lie in one.

Histories are real: anvil, the Lethe contract (or, where the contract itself would refuse
the lie, a test contract that emits the same events unguarded), a local blockstore, SISA
nodes that train and forget, signed updates and certificates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from launcher.devnet import DevAccount, Devnet
from protocol.certificate import Certificate
from protocol.hashing import keccak256
from protocol.ledger import Ledger
from protocol.merkle import merkle_root
from protocol.store import LocalStore
from protocol.typed_data import Domain
from tests.audit_history import (
    Contribution,
    History,
    UnguardedLethe,
    build_correct_history,
    copy_store,
    drop_update,
    publish_round,
)
from verifier.audit import AuditReport, audit

if TYPE_CHECKING:
    from tests.audit_fixtures import AuditedHistory
    from tests.chain_fixtures import Federation, StartFederation

pytest_plugins = ["tests.chain_fixtures", "tests.audit_fixtures"]


@pytest.fixture
def history(federation: Federation, devnet: Devnet, tmp_path: Path) -> History:
    """A fresh federation with three trained SISA nodes and no round yet."""
    return History(federation, devnet, LocalStore(tmp_path / "blocks"), tmp_path)


def fresh_audit(history: History, *, keep_going: bool = False) -> AuditReport:
    """The audit an outsider runs: a read-only ledger from the deployment, the store."""
    ledger = Ledger.from_deployment(history.fed.deployment)
    return audit(ledger, history.store, keep_going=keep_going)


def event_of(ledger: Ledger, name: str, **args: object) -> tuple[str, int]:
    """(tx hash, block) of the one ``name`` event with these arguments."""
    found = [e for e in ledger.events([name]) if all(e.args[k] == v for k, v in args.items())]
    assert len(found) == 1, found
    return found[0].tx_hash, found[0].block_number


# ----- a correct history ------------------------------------------------------------------------


def test_correct_history_audits_ok(audited_history: AuditedHistory) -> None:
    report = audit(audited_history.ledger, audited_history.store)
    assert report.ok and report.failure is None and report.complete, report.lines()
    assert [(r.round, r.status) for r in report.rounds] == [
        (1, "verified"),
        (2, "verified"),
        (3, "verified"),
        (4, "pending"),
    ]
    assert report.federation_id == "fed-audit"
    assert all(len(r.participants) == 3 and r.quorum == 2 for r in report.rounds)
    assert [len(r.approvals) for r in report.rounds] == [3, 3, 3, 1]
    forget = report.forget("forget-001")
    assert forget.status == "verified" and forget.completed_round == 3
    cert, cid = audited_history.history.certificates["forget-001"]
    assert forget.certificate_cid == cid and forget.node == cert.node_address
    assert forget.after_round == 2
    assert [n.rounds for n in report.nodes] == [[1, 2, 3, 4]] * 3
    assert all(n.key is not None for n in report.nodes)


def test_report_has_a_line_per_round_and_forget_and_json(
    audited_history: AuditedHistory,
) -> None:
    report = audit(audited_history.ledger, audited_history.store)
    lines = report.lines()
    assert sum(line.startswith("✓ round") for line in lines) == 3
    assert sum(line.startswith("… round 4: pending (1/2 approvals)") for line in lines) == 1
    assert any(line.startswith('✓ forget "forget-001"') for line in lines)
    assert lines[-1].startswith("AUDIT PASSED: 4 rounds (3 finalized), 1 forget request")
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is True and data["failure"] is None
    assert [r["status"] for r in data["rounds"]] == ["verified"] * 3 + ["pending"]
    assert data["forgets"][0]["label"] == "forget-001"


def test_history_of_another_federation_fails(audited_history: AuditedHistory) -> None:
    report = audit(audited_history.ledger, audited_history.store, federation_id="fed-other")
    failure = report.failure
    manifest_cid = audited_history.history.rounds[0].manifest_cid
    assert failure is not None and (failure.round, failure.cid) == (1, manifest_cid)
    assert f"manifest {manifest_cid} is for federation 'fed-audit', not 'fed-other'" in (
        failure.message
    )


def test_audit_replays_a_chain_restarted_from_its_state_file(
    start_federation: StartFederation, tmp_path: Path
) -> None:
    state = tmp_path / "anvil-state.json"
    store = LocalStore(tmp_path / "blocks")
    with Devnet(state) as chain:
        fed = start_federation(chain, 3)
        history = History(fed, chain, store, tmp_path)
        build_correct_history(history)
        history.close()
        before = audit(Ledger.from_deployment(fed.deployment), store)
    assert before.ok, before.lines()
    with Devnet(state) as chain:
        after = audit(Ledger.from_deployment(fed.deployment, rpc_url=chain.rpc_url), store)
    assert after.ok, after.lines()
    assert after.to_json() == before.to_json()


# ----- tampering: each makes the audit fail, precisely ---------------------------------------


def test_certificate_altered_in_the_store_fails_naming_its_cid(
    audited_history: AuditedHistory, tmp_path: Path
) -> None:
    store = copy_store(audited_history.store_dir, tmp_path / "blocks")
    _, cid = audited_history.history.certificates["forget-001"]
    block = store.root / cid
    data = bytearray(block.read_bytes())
    data[data.index(b'"slice":') + 8] ^= 1  # one digit of the record's slice
    block.write_bytes(bytes(data))

    report = audit(audited_history.ledger, store)
    assert not report.ok and not report.complete
    failure = report.failure
    assert failure is not None
    request_id = "0x" + keccak256(b"forget-001").hex()
    tx_hash, block_number = event_of(audited_history.ledger, "ForgetCertified")
    assert (failure.cid, failure.request_id) == (cid, request_id)
    assert (failure.tx_hash, failure.block_number) == (tx_hash, block_number)
    assert f"certificate {cid} cannot be fetched intact" in failure.message
    assert "corrupted" in failure.message and tx_hash in failure.message
    # The partial report keeps what was checked before the lie, and stops there.
    assert [(r.round, r.status) for r in report.rounds] == [(1, "verified"), (2, "verified")]
    assert report.forgets[0].status == "failed"
    assert report.lines()[-1] == f"AUDIT FAILED: {failure.message}"


def test_certificate_signed_by_another_key_fails(history: History, devnet: Devnet) -> None:
    history.run_round()
    impostor = devnet.accounts[-1]
    cid = history.forget(1, "forged", sign_with=impostor.private_key)

    report = fresh_audit(history)
    failure = report.failure
    assert failure is not None and failure.cid == cid
    node = history.addresses[1]
    assert f"signed by {impostor.address}, expected {node}" in failure.message
    assert failure.message.startswith(f"forget request 0x{keccak256(b'forged').hex()}")
    assert report.rounds[0].status == "verified"


@dataclass(frozen=True)
class UnguardedRound:
    """Round 1 proposed on an unguarded contract by the coordinator, three nodes admitted,
    a fourth admitted and removed again; approvals are up to the test."""

    chain: UnguardedLethe
    store: LocalStore
    nodes: list[DevAccount]
    removed: DevAccount
    stranger: DevAccount


@pytest.fixture
def unguarded_round(devnet: Devnet, tmp_path: Path) -> UnguardedRound:
    chain = UnguardedLethe(devnet)
    store = LocalStore(tmp_path / "blocks")
    accounts = devnet.accounts
    coordinator, nodes, removed = accounts[1], list(accounts[2:5]), accounts[7]
    rng = np.random.default_rng(3)
    published = publish_round(
        store,
        1,
        [
            Contribution(a.address, a.private_key, rng.normal(size=12).astype(np.float32), 10)
            for a in nodes
        ],
        domain=Domain.of(chain.ledger),
    )
    chain.emit("coordinatorAdmitted", coordinator.address, "0x" + "00" * 20)
    chain.emit("quorumSet", 0)
    for count, node in enumerate([*nodes, removed], start=1):
        chain.emit("nodeAdmitted", node.address, count)
    chain.emit("nodeRemoved", removed.address, 3)
    chain.emit(
        "roundProposed",
        1,
        coordinator.address,
        published.model_hash,
        published.model_cid,
        published.updates_root,
        published.manifest_cid,
        2,
        3,
    )
    return UnguardedRound(chain, store, nodes, removed, accounts[6])


@pytest.mark.parametrize("approver", ["admitted", "never admitted", "removed"])
def test_approval_from_an_address_that_is_not_an_admitted_node_fails(
    unguarded_round: UnguardedRound, approver: str
) -> None:
    """The real contract refuses such an approval, so an unguarded one writes the events."""
    u = unguarded_round
    u.chain.emit("roundApproved", 1, u.nodes[0].address, 1)
    second = {"admitted": u.nodes[1], "never admitted": u.stranger, "removed": u.removed}[approver]
    tx_hash = u.chain.emit("roundApproved", 1, second.address, 2)
    u.chain.emit("roundFinalized", 1, 2, 2)

    report = audit(u.chain.ledger, u.store)
    if approver == "admitted":
        assert report.ok, report.lines()
        assert report.round(1).status == "verified"
        return
    failure = report.failure
    assert failure is not None and (failure.round, failure.tx_hash) == (1, tx_hash)
    assert f"approval from {second.address}, which is not an admitted node at block " in (
        failure.message
    )
    assert failure.message.startswith(f"round 1 (tx {tx_hash}, block {failure.block_number})")
    assert report.round(1).status == "failed"


def test_round_at_quorum_without_finalization_fails(unguarded_round: UnguardedRound) -> None:
    u = unguarded_round
    u.chain.emit("roundApproved", 1, u.nodes[0].address, 1)
    tx_hash = u.chain.emit("roundApproved", 1, u.nodes[1].address, 2)

    failure = audit(u.chain.ledger, u.store).failure
    assert failure is not None and (failure.round, failure.tx_hash) == (1, tx_hash)
    assert "2 approvals reached the quorum 2 but no RoundFinalized event followed" in (
        failure.message
    )


def test_manifest_missing_a_responders_commitment_fails(history: History) -> None:
    history.run_round()
    missing = history.addresses[2]
    published = history.run_round(edit=drop_update(missing))
    history.run_round()

    report = fresh_audit(history)
    failure = report.failure
    assert failure is not None
    assert (failure.round, failure.cid) == (2, published.manifest_cid)
    assert (
        f"manifest {published.manifest_cid}: {missing} answered stage share (its model is in "
        "the aggregate) but its signed commitment is missing from the updates"
    ) in failure.message
    assert [r.round for r in report.rounds] == [1, 2]

    # Checking on past the lie marks that round alone, as the explorer shows it.
    everything = fresh_audit(history, keep_going=True)
    assert [r.status for r in everything.rounds] == ["verified", "failed", "verified"]
    assert everything.failures == [failure]


def test_completed_forget_whose_next_commitment_differs_fails(history: History) -> None:
    history.run_round()
    history.forget(1, "forget-stale")
    stale_round = history.run_round(stale={1})  # node 1 commits its pre-forget model
    history.complete("forget-stale", 2)

    report = fresh_audit(history)
    failure = report.failure
    assert failure is not None
    cert, cid = history.certificates["forget-stale"]
    committed = stale_round.manifest.update_of(history.addresses[1])
    assert committed is not None and committed.model_hash != cert.model_hash_after
    assert (failure.round, failure.cid) == (2, stale_round.manifest_cid)
    assert failure.request_id == "0x" + keccak256(b"forget-stale").hex()
    assert (
        f"node {history.addresses[1]} committed model {committed.model_hash}, but its "
        f"certificate {cid} says model hash after {cert.model_hash_after}"
    ) in failure.message
    assert report.round(2).status == "verified"
    assert report.forget("forget-stale").status == "failed"


def test_certificate_whose_old_slice_root_was_never_committed_fails(history: History) -> None:
    # Attack: a node certifies a forget with a proof against a slice root it makes up (here:
    # a one-leaf tree of an invented record), not one it committed to in public before.
    history.run_round()
    invented = keccak256(b"a record this node never trained on")

    def fabricate(cert: Certificate) -> Certificate:
        return replace(
            cert,
            record_leaf="0x" + invented.hex(),
            leaf_index=0,
            leaf_count=1,
            merkle_proof=(),
            old_slice_root="0x" + merkle_root([invented]).hex(),
        )

    cid = history.forget(1, "fabricated", edit=fabricate)
    history.run_round()
    history.complete("fabricated", 2)

    failure = fresh_audit(history).failure
    assert failure is not None and failure.cid == cid
    assert f"old slice root 0x{merkle_root([invented]).hex()}" in failure.message
    assert f"never committed by {history.addresses[1]} in a finalized round" in failure.message


def test_forget_that_leaves_the_model_unchanged_fails(history: History) -> None:
    # Attack: a node certifies a forget but keeps serving the model it committed before.
    history.run_round()
    before = history.rounds[0].manifest.update_of(history.addresses[1])
    assert before is not None

    def unchanged(cert: Certificate) -> Certificate:
        return replace(cert, model_hash_after=before.model_hash)

    cid = history.forget(1, "unchanged", edit=unchanged)
    history.run_round(stale={1})  # and commits that same model again
    history.complete("unchanged", 2)

    failure = fresh_audit(history).failure
    assert failure is not None and failure.cid == cid
    assert f"is the model {history.addresses[1]} already committed in round 1" in failure.message


def test_certificate_signed_for_another_deployment_fails(history: History) -> None:
    # Attack: a certificate signed for another federation's contract is replayed here.
    history.run_round()
    elsewhere = Domain(history.fed.owner.chain_id, history.fed.outsider.account or "")
    cid = history.forget(1, "replayed", domain=elsewhere)

    failure = fresh_audit(history).failure
    assert failure is not None and failure.cid == cid
    assert f"is signed for contract {elsewhere.contract}" in failure.message


def test_model_bytes_that_do_not_hash_to_the_on_chain_hash_fail(history: History) -> None:
    rng = np.random.default_rng(5)
    published = publish_round(
        history.store,
        1,
        [
            Contribution(a, k, rng.normal(size=12).astype(np.float32), 5)
            for a, k in zip(history.addresses, history.keys, strict=True)
        ],
        domain=Domain.of(history.fed.owner),
    )
    history.fed.coordinator.propose_round(
        1,
        keccak256(b"another model"),
        published.model_cid,
        published.updates_root,
        published.manifest_cid,
    )
    failure = fresh_audit(history).failure
    assert failure is not None and failure.cid == published.model_cid
    assert f"global model {published.model_cid} hashes to 0x{published.model_hash.hex()}" in (
        failure.message
    )
