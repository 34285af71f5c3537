"""The Lethe contract through protocol.ledger, against a real anvil process."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from launcher.devnet import Devnet
from protocol.errors import LedgerError
from protocol.hashing import keccak256
from protocol.ledger import (
    ContractRevert,
    Deployment,
    ForgetRequestEvent,
    ForgetState,
    Ledger,
    LedgerEvent,
    RoundProposal,
    RoundState,
    TxResult,
    load_artifact,
)
from protocol.records_root import RecordsProof
from tests.records_proofs import committed

if TYPE_CHECKING:
    from tests.chain_fixtures import Federation, StartFederation

pytest_plugins = ["tests.chain_fixtures"]

MODEL_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
MANIFEST_CID = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"
CERT_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def h(n: int) -> bytes:
    """A distinct, recognisable 32-byte value."""
    return n.to_bytes(32, "big")


def revert_name(excinfo: pytest.ExceptionInfo[LedgerError]) -> str | None:
    assert isinstance(excinfo.value, ContractRevert), repr(excinfo.value)
    return excinfo.value.error_name


def propose(fed: Federation, round_number: int) -> None:
    fed.coordinator.propose_round(
        round_number, h(100 + round_number), MODEL_CID, h(200), MANIFEST_CID
    )


def approve(node: Ledger, round_number: int) -> TxResult:
    """Approve what :func:`propose` proposed for that round."""
    return node.approve_round(round_number, h(100 + round_number), h(200))


def finalize(fed: Federation, round_number: int) -> None:
    """Propose a round and have nodes 0 and 1 approve it (the quorum of three)."""
    propose(fed, round_number)
    for node in fed.nodes[:2]:
        approve(node, round_number)


def proof(fed: Federation, index: int, commitment: bytes, round_number: int = 1) -> RecordsProof:
    """Node ``index``'s signed records root of ``round_number`` holding ``commitment``."""
    return committed(fed.nodes[index], fed.node_keys[index], commitment, round_number)


def open_request(
    fed: Federation, request_id: bytes | str, commitment: bytes, index: int, round_number: int = 1
) -> TxResult:
    """Request the record of node ``index`` it committed to in round ``round_number``."""
    return fed.coordinator.request_forget(
        request_id,
        commitment,
        fed.node_addresses[index],
        proof(fed, index, commitment, round_number),
    )


def names(events: list[LedgerEvent]) -> list[str]:
    return [e.name for e in events]


# ----- roles ---------------------------------------------------------------------------


def test_deployment_records_owner_coordinator_and_default_quorum(federation: Federation) -> None:
    fed = federation
    assert fed.owner.owner() == fed.deployment.deployer
    assert fed.owner.coordinator() == fed.coordinator.account
    assert fed.owner.deployed_block() == fed.deployment.block_number
    assert fed.owner.configured_quorum() == 0
    assert fed.owner.node_count() == 3
    assert fed.owner.quorum() == 2
    assert [e.address for e in fed.owner.roster()] == fed.node_addresses
    assert fed.deployment.abi_keccak256 == load_artifact().abi_keccak256


def test_default_quorum_is_two_thirds_of_admitted_nodes_rounded_up(
    devnet: Devnet, start_federation: StartFederation
) -> None:
    fed = start_federation(devnet, 0)
    assert fed.owner.quorum() == 0
    for n, account in enumerate(devnet.accounts[2:9], start=1):
        fed.owner.admit_node(account.address)
        assert fed.owner.quorum() == -(-2 * n // 3), n


def test_only_the_owner_admits_and_sets_the_quorum(federation: Federation) -> None:
    fed = federation
    attempts: tuple[Callable[[], object], ...] = (
        lambda: fed.coordinator.admit_node(str(fed.outsider.account)),
        lambda: fed.nodes[0].admit_coordinator(str(fed.outsider.account)),
        lambda: fed.outsider.set_quorum(1),
        lambda: fed.nodes[0].remove_node(fed.node_addresses[1]),
    )
    for attempt in attempts:
        with pytest.raises(LedgerError) as excinfo:
            attempt()
        assert revert_name(excinfo) == "NotOwner"
    fed.owner.set_quorum(3)
    assert fed.owner.quorum() == 3
    fed.owner.set_quorum(0)
    assert fed.owner.quorum() == 2


def test_admission_rejects_duplicates_zero_and_mixed_roles(federation: Federation) -> None:
    fed = federation
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: fed.owner.admit_node(fed.node_addresses[0]), "AlreadyAdmitted"),
        (lambda: fed.owner.admit_node(str(fed.coordinator.account)), "RoleConflict"),
        (lambda: fed.owner.admit_coordinator(fed.node_addresses[0]), "RoleConflict"),
        (lambda: fed.owner.admit_node("0x" + "00" * 20), "ZeroAddress"),
        (lambda: fed.owner.remove_node(str(fed.outsider.account)), "NotAdmittedNode"),
    ]
    for attempt, expected in cases:
        with pytest.raises(LedgerError) as excinfo:
            attempt()
        assert revert_name(excinfo) == expected


def test_coordinator_can_be_replaced_by_the_owner(federation: Federation) -> None:
    fed = federation
    fed.owner.admit_coordinator(str(fed.outsider.account))
    assert fed.owner.coordinator() == fed.outsider.account
    with pytest.raises(LedgerError) as excinfo:
        propose(fed, 1)
    assert revert_name(excinfo) == "NotCoordinator"
    fed.outsider.propose_round(1, h(1), MODEL_CID, h(2), MANIFEST_CID)
    event = fed.owner.events(["CoordinatorAdmitted"])[-1]
    assert event.args == {"coordinator": fed.outsider.account, "previous": fed.coordinator.account}


def test_removed_node_leaves_the_roster_and_loses_its_rights(federation: Federation) -> None:
    fed = federation
    first, second, third = fed.nodes
    first.register_key(h(1))
    fed.owner.remove_node(fed.node_addresses[0])
    # Swap-and-pop: the last node takes the removed node's place.
    assert [e.address for e in fed.owner.roster()] == [third.account, second.account]
    assert not fed.owner.is_node(str(first.account))
    assert fed.owner.node_key(str(first.account)) is None
    propose(fed, 1)
    with pytest.raises(LedgerError) as excinfo:
        approve(first, 1)
    assert revert_name(excinfo) == "NotAdmittedNode"
    fed.owner.admit_node(str(first.account))
    assert fed.owner.node_count() == 3


# ----- keys ----------------------------------------------------------------------------


def test_admitted_nodes_register_and_rotate_their_share_keys(federation: Federation) -> None:
    fed = federation
    for i, node in enumerate(fed.nodes):
        result = node.register_key(h(10 + i))
        assert result.gas_used > 0 and result.block_number > fed.deployment.block_number
    assert [(e.address, e.key) for e in fed.owner.roster()] == [
        (a, h(10 + i)) for i, a in enumerate(fed.node_addresses)
    ]
    fed.nodes[0].register_key(h(99))
    assert fed.owner.node_key(fed.node_addresses[0]) == h(99)
    keys = [(e.args["node"], e.args["key"]) for e in fed.owner.events(["KeyRegistered"])]
    assert keys[-1] == (fed.node_addresses[0], h(99))
    assert len(keys) == 4


def test_unadmitted_address_cannot_register_a_key(federation: Federation) -> None:
    with pytest.raises(LedgerError) as excinfo:
        federation.outsider.register_key(h(1))
    assert revert_name(excinfo) == "NotAdmittedNode"
    assert excinfo.value.error_args == {"caller": federation.outsider.account}  # type: ignore[attr-defined]


def test_key_must_be_32_nonzero_bytes(federation: Federation) -> None:
    with pytest.raises(LedgerError) as excinfo:
        federation.nodes[0].register_key(bytes(32))
    assert revert_name(excinfo) == "InvalidKey"
    with pytest.raises(ValueError, match="32 bytes"):
        federation.nodes[0].register_key(b"\x01" * 31)


# ----- rounds --------------------------------------------------------------------------


def test_round_finalizes_exactly_when_approvals_reach_quorum(federation: Federation) -> None:
    fed = federation
    propose(fed, 1)
    assert fed.owner.round_state(1).quorum == 2
    approve(fed.nodes[0], 1)
    state = fed.owner.round_state(1)
    assert (state.approvals, state.finalized) == (1, False)
    approve(fed.nodes[1], 1)
    assert fed.owner.round_state(1).finalized
    # A late approval is still recorded as evidence, but does not finalize twice.
    approve(fed.nodes[2], 1)
    assert fed.owner.round_state(1).approvals == 3
    events = fed.owner.events(["RoundProposed", "RoundApproved", "RoundFinalized"])
    assert names(events) == [
        "RoundProposed",
        "RoundApproved",
        "RoundApproved",
        "RoundFinalized",
        "RoundApproved",
    ]
    proposed = events[0].args
    assert proposed["proposer"] == fed.coordinator.account
    assert proposed["globalModelHash"] == h(101)
    assert proposed["globalModelCid"] == MODEL_CID
    assert proposed["updatesRoot"] == h(200)
    assert proposed["manifestCid"] == MANIFEST_CID
    assert (proposed["quorum"], proposed["nodeCount"]) == (2, 3)
    assert [e.args["node"] for e in events if e.name == "RoundApproved"] == fed.node_addresses
    assert events[3].args == {"round": 1, "approvals": 2, "quorum": 2}
    assert events[3].tx_hash == events[2].tx_hash


def test_round_does_not_finalize_below_quorum(federation: Federation) -> None:
    fed = federation
    fed.owner.set_quorum(3)
    propose(fed, 1)
    approve(fed.nodes[0], 1)
    approve(fed.nodes[1], 1)
    state = fed.owner.round_state(1)
    assert (state.quorum, state.approvals, state.finalized) == (3, 2, False)
    assert fed.owner.events(["RoundFinalized"]) == []


def test_quorum_is_fixed_when_the_round_is_proposed(federation: Federation) -> None:
    fed = federation
    propose(fed, 1)
    fed.owner.set_quorum(3)
    approve(fed.nodes[0], 1)
    approve(fed.nodes[1], 1)
    assert fed.owner.round_state(1).finalized


def test_node_cannot_approve_twice(federation: Federation) -> None:
    fed = federation
    propose(fed, 1)
    approve(fed.nodes[0], 1)
    with pytest.raises(LedgerError) as excinfo:
        approve(fed.nodes[0], 1)
    assert revert_name(excinfo) == "AlreadyApproved"
    assert fed.owner.has_approved(1, fed.node_addresses[0])
    assert not fed.owner.has_approved(1, fed.node_addresses[1])
    assert fed.owner.round_state(1).approvals == 1


def test_unadmitted_address_cannot_approve(federation: Federation) -> None:
    fed = federation
    propose(fed, 1)
    for outsider in (fed.outsider, fed.coordinator, fed.owner):
        with pytest.raises(LedgerError) as excinfo:
            approve(outsider, 1)
        assert revert_name(excinfo) == "NotAdmittedNode"
    assert fed.owner.round_state(1).approvals == 0


def test_unknown_round_cannot_be_approved(federation: Federation) -> None:
    with pytest.raises(LedgerError) as excinfo:
        approve(federation.nodes[0], 7)
    assert revert_name(excinfo) == "UnknownRound"
    assert not federation.owner.round_state(7).proposed


def test_only_the_coordinator_proposes_the_next_reachable_round(federation: Federation) -> None:
    fed = federation
    with pytest.raises(LedgerError) as excinfo:
        fed.nodes[0].propose_round(1, h(1), MODEL_CID, h(2), MANIFEST_CID)
    assert revert_name(excinfo) == "NotCoordinator"
    propose(fed, 1)
    propose(fed, 2)
    assert fed.owner.last_round() == 2
    for wrong in (1, 2, 4):
        with pytest.raises(LedgerError) as excinfo:
            propose(fed, wrong)
        assert revert_name(excinfo) == "RoundNotNext"
        assert excinfo.value.error_args == {"round": wrong, "expected": 3}  # type: ignore[attr-defined]
    fed.owner.set_quorum(4)
    with pytest.raises(LedgerError) as excinfo:
        propose(fed, 3)
    assert revert_name(excinfo) == "QuorumUnreachable"
    assert excinfo.value.error_args == {"quorum": 4, "nodeCount": 3}  # type: ignore[attr-defined]


def test_the_last_round_number_cannot_be_proposed_to_end_all_rounds(
    federation: Federation,
) -> None:
    # Attack: a coordinator proposes round 2^64-1, after which no round could follow, and no
    # forget request could ever complete, even under a new coordinator.
    fed = federation
    with pytest.raises(LedgerError) as excinfo:
        propose(fed, 2**64 - 1)
    assert revert_name(excinfo) == "RoundNotNext"
    assert fed.owner.last_round() == 0
    fed.owner.admit_coordinator(str(fed.outsider.account))
    fed.outsider.propose_round(1, h(101), MODEL_CID, h(200), MANIFEST_CID)
    assert fed.owner.last_round() == 1


def test_an_approval_of_other_content_is_reverted(federation: Federation) -> None:
    # Attack: nodes check one model, the coordinator proposed another under the same round:
    # an approval counts only for the model hash and updates root it names.
    fed = federation
    propose(fed, 1)
    for model_hash, updates_root in ((h(999), h(200)), (h(101), h(999))):
        with pytest.raises(LedgerError) as excinfo:
            fed.nodes[0].approve_round(1, model_hash, updates_root)
        assert revert_name(excinfo) == "ProposalMismatch"
    assert fed.owner.round_state(1).approvals == 0
    assert fed.owner.round_proposal(1) == RoundProposal(1, h(101), MODEL_CID, h(200), MANIFEST_CID)
    approve(fed.nodes[0], 1)
    assert fed.owner.round_state(1).approvals == 1


def test_a_node_admitted_after_the_proposal_cannot_approve_it(federation: Federation) -> None:
    # Attack: the owner admits fresh (colluding) nodes to finalize a round already proposed.
    fed = federation
    fed.owner.set_quorum(3)
    propose(fed, 1)
    fed.owner.remove_node(fed.node_addresses[0])
    newcomer = fed.outsider
    fed.owner.admit_node(str(newcomer.account))
    fed.owner.admit_node(fed.node_addresses[0])  # removed and admitted again: a new admission
    for late in (newcomer, fed.nodes[0]):
        with pytest.raises(LedgerError) as excinfo:
            approve(late, 1)
        assert revert_name(excinfo) == "AdmittedAfterProposal"
    approve(fed.nodes[1], 1)
    approve(fed.nodes[2], 1)
    assert fed.owner.round_state(1) == RoundState(quorum=3, approvals=2, finalized=False)
    propose(fed, 2)
    approve(newcomer, 2)
    assert fed.owner.round_state(2).approvals == 1


# ----- forgetting ----------------------------------------------------------------------


def test_forget_lifecycle_is_recorded_in_state_and_events(federation: Federation) -> None:
    fed = federation
    node = fed.nodes[1]
    finalize(fed, 1)
    open_request(fed, h(7), h(8), 1)
    assert fed.owner.forget_state(h(7)).state is ForgetState.REQUESTED
    node.certify_forget(h(7), CERT_CID, h(9))
    status = fed.owner.forget_state(h(7))
    assert (status.state, status.node, status.after_round) == (
        ForgetState.CERTIFIED,
        node.account,
        1,
    )
    propose(fed, 2)
    approve(fed.nodes[0], 2)
    approve(node, 2)
    fed.coordinator.complete_forget(h(7), 2)
    assert fed.owner.forget_state(h(7)).state is ForgetState.COMPLETED
    events = fed.owner.events(["ForgetRequested", "ForgetCertified", "ForgetCompleted"])
    assert [(e.name, e.args) for e in events] == [
        (
            "ForgetRequested",
            {
                "requestId": h(7),
                "recordCommitment": h(8),
                "coordinator": fed.coordinator.account,
                "node": node.account,
                "requestLabel": "",
            },
        ),
        (
            "ForgetCertified",
            {
                "requestId": h(7),
                "node": node.account,
                "certificateCid": CERT_CID,
                "newModelHash": h(9),
                "afterRound": 1,
            },
        ),
        ("ForgetCompleted", {"requestId": h(7), "round": 2, "node": node.account}),
    ]


def test_only_the_node_the_request_names_can_certify(federation: Federation) -> None:
    # Attack: another admitted node front-runs the owner with a fabricated certificate.
    fed = federation
    owner_node, other = fed.nodes[0], fed.nodes[1]
    finalize(fed, 1)
    open_request(fed, h(7), h(8), 0)
    with pytest.raises(LedgerError) as excinfo:
        other.certify_forget(h(7), CERT_CID, h(9))
    assert revert_name(excinfo) == "NotRecordOwner"
    status = fed.owner.forget_state(h(7))
    assert (status.state, status.node) == (ForgetState.REQUESTED, owner_node.account)
    owner_node.certify_forget(h(7), CERT_CID, h(9))
    assert fed.owner.forget_state(h(7)).state is ForgetState.CERTIFIED
    request = fed.owner.forget_request(h(7))
    assert request == ForgetRequestEvent(h(7), h(8), str(owner_node.account))


def test_a_forget_request_must_name_an_admitted_node(federation: Federation) -> None:
    fed = federation
    with pytest.raises(LedgerError) as excinfo:
        fed.coordinator.request_forget(h(7), h(8), str(fed.outsider.account), proof(fed, 0, h(8)))
    assert revert_name(excinfo) == "NotAdmittedNode"
    assert fed.owner.forget_request(h(7)) is None


@pytest.mark.parametrize("who", ["coordinator", "outsider", "owner"])
def test_only_an_admitted_node_can_certify(federation: Federation, who: str) -> None:
    # In particular the coordinator cannot certify on a node's behalf.
    fed = federation
    finalize(fed, 1)
    open_request(fed, h(7), h(8), 0)
    with pytest.raises(LedgerError) as excinfo:
        getattr(fed, who).certify_forget(h(7), CERT_CID, h(9))
    assert revert_name(excinfo) == "NotAdmittedNode"
    assert fed.owner.forget_state(h(7)).state is ForgetState.REQUESTED


def test_forget_requests_follow_their_lifecycle_order(federation: Federation) -> None:
    fed = federation
    node = fed.nodes[0]
    finalize(fed, 1)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: node.certify_forget(h(1), CERT_CID, h(9)), "UnknownRequest"),
        (lambda: fed.coordinator.complete_forget(h(1), 1), "UnknownRequest"),
        (
            lambda: node.request_forget(h(1), h(2), fed.node_addresses[0], proof(fed, 0, h(2))),
            "NotCoordinator",
        ),
    ]
    for attempt, expected in cases:
        with pytest.raises(LedgerError) as excinfo:
            attempt()
        assert revert_name(excinfo) == expected
    open_request(fed, h(1), h(2), 0)
    again: list[tuple[Callable[[], object], str]] = [
        (lambda: open_request(fed, h(1), h(3), 0), "RequestExists"),
        (lambda: fed.coordinator.complete_forget(h(1), 1), "NotCertified"),
    ]
    for attempt, expected in again:
        with pytest.raises(LedgerError) as excinfo:
            attempt()
        assert revert_name(excinfo) == expected
    node.certify_forget(h(1), CERT_CID, h(9))
    with pytest.raises(LedgerError) as excinfo:
        fed.nodes[1].certify_forget(h(1), CERT_CID, h(9))
    assert revert_name(excinfo) == "AlreadyCertified"


def test_complete_forget_needs_a_finalized_round_after_the_certificate(
    federation: Federation,
) -> None:
    fed = federation
    propose(fed, 1)
    for node in fed.nodes[:2]:
        approve(node, 1)
    open_request(fed, h(1), h(2), 0)
    fed.nodes[0].certify_forget(h(1), CERT_CID, h(9))
    # Round 1 is finalized but predates the certificate: it cannot hold the new model.
    with pytest.raises(LedgerError) as excinfo:
        fed.coordinator.complete_forget(h(1), 1)
    assert revert_name(excinfo) == "RoundBeforeCertificate"
    propose(fed, 2)
    approve(fed.nodes[0], 2)
    with pytest.raises(LedgerError) as excinfo:
        fed.coordinator.complete_forget(h(1), 2)
    assert revert_name(excinfo) == "RoundNotFinalized"
    with pytest.raises(LedgerError) as excinfo:
        fed.nodes[0].complete_forget(h(1), 2)
    assert revert_name(excinfo) == "NotCoordinator"
    approve(fed.nodes[1], 2)
    fed.coordinator.complete_forget(h(1), 2)
    with pytest.raises(LedgerError) as excinfo:
        fed.coordinator.complete_forget(h(1), 2)
    assert revert_name(excinfo) == "AlreadyCompleted"


# ----- events --------------------------------------------------------------------------


def test_events_read_in_small_chunks_equal_one_big_read(federation: Federation) -> None:
    fed = federation
    for i, node in enumerate(fed.nodes):
        node.register_key(h(i + 1))
    propose(fed, 1)
    everything = fed.owner.events()
    assert len(everything) == 9  # quorum, coordinator, 3 nodes, 3 keys, 1 round
    assert everything == fed.owner.events(chunk_blocks=1) == fed.owner.events(chunk_blocks=3)
    assert [(e.block_number, e.log_index) for e in everything] == sorted(
        (e.block_number, e.log_index) for e in everything
    )
    assert names(everything)[:2] == ["QuorumSet", "CoordinatorAdmitted"]
    last = everything[-1].block_number
    assert fed.owner.events(from_block=last) == [e for e in everything if e.block_number == last]
    assert fed.owner.events(to_block=fed.deployment.block_number) == everything[:2]
    with pytest.raises(ValueError, match="NoSuchEvent"):
        fed.owner.events(["NoSuchEvent"])


def test_events_of_one_contract_only(
    devnet: Devnet, federation: Federation, start_federation: StartFederation
) -> None:
    other = start_federation(devnet, 1)
    mine = federation.owner.events(["NodeAdmitted"])
    assert [e.args["node"] for e in mine] == federation.node_addresses
    assert len(other.owner.events(["NodeAdmitted"])) == 1


def test_receipt_of_an_event_gives_block_and_gas(federation: Federation) -> None:
    fed = federation
    result = fed.nodes[0].register_key(h(5))
    event = fed.owner.events(["KeyRegistered"])[0]
    assert fed.owner.receipt(event.tx_hash) == result
    assert fed.owner.block_timestamp(event.block_number) > 1_600_000_000


# ----- transactions --------------------------------------------------------------------


def test_quick_transactions_from_one_and_many_accounts_all_land(
    devnet: Devnet, federation: Federation
) -> None:
    fed = federation
    extra = [a.address for a in devnet.accounts[5:9]]
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    # Four admissions from the owner at once, plus every node registering its key.
    jobs: list[Callable[[], object]] = [functools.partial(fed.owner.admit_node, a) for a in extra]
    jobs += [functools.partial(n.register_key, h(i + 1)) for i, n in enumerate(fed.nodes)]
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(e.address for e in fed.owner.roster()[3:]) == sorted(extra)
    assert all(e.key is not None for e in fed.owner.roster()[:3])
    # Back-to-back from one account on one thread: consecutive nonces, no waiting on errors.
    for i in range(5):
        fed.owner.set_quorum(i)
    assert fed.owner.configured_quorum() == 4


def test_nonce_resyncs_when_the_key_is_used_elsewhere(
    devnet: Devnet, federation: Federation
) -> None:
    fed = federation
    fed.owner.set_quorum(1)
    _raw_send(devnet.rpc_url, str(fed.owner.account), fed.owner.address, b"")  # bumps the nonce
    fed.owner.set_quorum(2)
    assert fed.owner.configured_quorum() == 2


def test_transaction_that_loses_a_race_reports_the_contract_error(
    devnet: Devnet, federation: Federation
) -> None:
    fed = federation
    propose(fed, 1)
    node = fed.nodes[0]
    outcome: list[BaseException | object] = []
    _rpc(devnet.rpc_url, "evm_setAutomine", [False])
    try:
        approving = threading.Thread(target=lambda: outcome.append(_capture(approve, node, 1)))
        approving.start()
        _wait_for_pending(devnet.rpc_url, 1)
        # The owner removes the node with a higher tip, so removal is mined first.
        remove = _encode_call("removeNode", str(node.account))
        _raw_send(devnet.rpc_url, str(fed.owner.account), fed.owner.address, remove, tip=10**11)
        _rpc(devnet.rpc_url, "evm_mine", [])
        approving.join(timeout=30)
    finally:
        _rpc(devnet.rpc_url, "evm_setAutomine", [True])
    (error,) = outcome
    assert isinstance(error, ContractRevert)
    assert error.error_name == "NotAdmittedNode"
    assert error.tx_hash is not None
    assert fed.owner.round_state(1).approvals == 0


def test_read_only_ledger_refuses_to_send(federation: Federation) -> None:
    reader = Ledger(federation.owner.rpc_url, federation.owner.address)
    assert reader.node_count() == 3
    with pytest.raises(LedgerError, match="read-only"):
        reader.set_quorum(1)


# ----- connecting ----------------------------------------------------------------------


def test_unreachable_rpc_fails_fast_naming_the_url(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed
    started = time.monotonic()
    with pytest.raises(LedgerError, match=url):
        Ledger(url, "0x" + "11" * 20).node_count()
    with pytest.raises(LedgerError, match=url):
        Ledger.from_deployment(_fake_deployment(url, tmp_path))
    assert time.monotonic() - started < 10


def test_deployment_file_round_trips_and_is_checked(
    devnet: Devnet, start_federation: StartFederation, tmp_path: Path
) -> None:
    fed = start_federation(devnet, 1)
    path = tmp_path / "deployment.json"
    fed.deployment.save(path)
    assert Deployment.load(path) == fed.deployment
    assert Ledger.from_deployment(path).node_count() == 1
    wrong_chain = Deployment(**{**fed.deployment.__dict__, "chain_id": 1})
    with pytest.raises(LedgerError, match="chain 1"):
        Ledger.from_deployment(wrong_chain)
    no_code = Deployment(**{**fed.deployment.__dict__, "address": "0x" + "12" * 20})
    with pytest.raises(LedgerError, match="no contract"):
        Ledger.from_deployment(no_code)
    with pytest.raises(LedgerError, match="lethe deploy"):
        Deployment.load(tmp_path / "missing.json")


def test_from_env_reads_url_contract_and_key(
    devnet: Devnet, federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_RPC_URL", devnet.rpc_url)
    monkeypatch.setenv("LETHE_CONTRACT", federation.owner.address)
    monkeypatch.setenv("LETHE_PRIVATE_KEY", devnet.accounts[2].private_key)
    ledger = Ledger.from_env()
    assert ledger.deployment_block == federation.deployment.block_number
    assert ledger.account == federation.node_addresses[0]
    ledger.register_key(h(3))
    assert federation.owner.node_key(federation.node_addresses[0]) == h(3)


# ----- persistence ---------------------------------------------------------------------


def test_restart_from_the_state_file_keeps_state_and_events(
    start_federation: StartFederation, tmp_path: Path
) -> None:
    state = tmp_path / "anvil-state.json"
    with Devnet(state) as chain:
        fed = start_federation(chain, 3)
        fed.nodes[0].register_key(h(1))
        propose(fed, 1)
        for node in fed.nodes[:2]:
            approve(node, 1)
        open_request(fed, h(5), h(6), 2)
        fed.nodes[2].certify_forget(h(5), CERT_CID, h(7))
        before_events = fed.owner.events()
        before = (fed.owner.roster(), fed.owner.round_state(1), fed.owner.forget_state(h(5)))
        head = fed.owner.block_number()
    assert state.is_file()
    with Devnet(state) as chain:
        reopened = Ledger.from_deployment(fed.deployment, rpc_url=chain.rpc_url)
        assert reopened.block_number() == head
        assert reopened.events() == before_events
        after = (reopened.roster(), reopened.round_state(1), reopened.forget_state(h(5)))
        assert after == before
        # The chain goes on from where it stopped.
        coordinator = reopened.with_account(chain.accounts[1].private_key)
        coordinator.propose_round(2, h(2), MODEL_CID, h(3), MANIFEST_CID)
        assert reopened.last_round() == 2


# ----- helpers -------------------------------------------------------------------------


def _rpc(url: str, method: str, params: list[Any]) -> object:
    reply = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=10
    ).json()
    assert "error" not in reply, reply
    return reply["result"]


def _raw_send(url: str, sender: str, to: str, data: bytes, tip: int = 10**9) -> None:
    """Send from an anvil-unlocked account, bypassing the ledger's nonce tracking."""
    tx = {
        "from": sender,
        "to": to,
        "data": "0x" + data.hex(),
        "gas": hex(200_000),
        "maxPriorityFeePerGas": hex(tip),
        "maxFeePerGas": hex(10 * tip),
    }
    _rpc(url, "eth_sendTransaction", [tx])


def _wait_for_pending(url: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = _rpc(url, "txpool_status", [])
        if int(status["pending"], 16) >= count:  # type: ignore[index]
            return
        time.sleep(0.05)
    raise AssertionError("transaction never reached the pool")


def _capture(fn: Callable[..., object], *args: object) -> object:
    try:
        return fn(*args)
    except BaseException as exc:
        return exc


def _encode_call(function: str, *args: object) -> bytes:
    from web3 import Web3

    contract = Web3().eth.contract(abi=load_artifact().abi)
    return bytes.fromhex(contract.encode_abi(function, args=list(args))[2:])


def _fake_deployment(url: str, tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    Deployment(
        chain_id=31337,
        address="0x" + "11" * 20,
        block_number=0,
        tx_hash="0x" + "00" * 32,
        deployer="0x" + "22" * 20,
        abi_keccak256="0x",
        compiler="0.8.30",
        rpc_url=url,
    ).save(path)
    return path


def test_a_request_given_as_text_carries_it_and_a_wrong_text_reverts(
    federation: Federation,
) -> None:
    fed = federation
    node = fed.node_addresses[0]
    finalize(fed, 1)
    open_request(fed, "dsr-42", h(8), 0)
    (opened,) = fed.owner.forget_requests_naming(node)
    assert (opened.request_id, opened.label) == (keccak256(b"dsr-42"), "dsr-42")
    assert fed.owner.forget_requests_naming(fed.node_addresses[1]) == []
    with pytest.raises(ContractRevert) as excinfo:
        fed.coordinator._transact(
            "requestForget", h(5), h(8), node, "not the preimage of h(5)", proof(fed, 0, h(8)).abi()
        )
    assert excinfo.value.error_name == "LabelMismatch"
