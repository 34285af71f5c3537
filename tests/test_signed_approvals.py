"""Round approvals signed off chain (EIP-712) and carried by the proposal's transaction.

Specifications, on a real anvil:
- one ``proposeRoundSigned`` proposes the round and counts every node's signed approval;
  the round finalizes in that transaction and each signer counts as an approver (rewards);
- a coordinator cannot forge or replay an approval: a signature over other content, for
  another round, for another contract, from a removed node, from an outsider passed off as a
  node, or counted twice makes the whole call revert (nothing is proposed);
- the list of nodes the call carries must be the contract's own (a coordinator naming its
  own key as a node's is refused);
- a node whose signature the coordinator withholds still approves by itself and is paid;
- the audit accepts the signed path and rejects a forged ``RoundApprovedBy`` history.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from protocol.approvals import RoundApproval, compact
from protocol.errors import LedgerError
from protocol.ledger import ContractRevert, Ledger, StakePolicy
from protocol.store import LocalStore
from protocol.typed_data import Domain
from tests.audit_history import Contribution, History, UnguardedLethe, publish_round
from verifier.audit import audit

if TYPE_CHECKING:
    from launcher.devnet import DevAccount, Devnet
    from tests.chain_fixtures import Federation, StartFederation

pytest_plugins = ["tests.chain_fixtures"]

MODEL_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
MANIFEST_CID = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"
ETHER = 10**18


def h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def content(round_number: int, model: int = 100) -> RoundApproval:
    return RoundApproval(round_number, h(model + round_number), MODEL_CID, h(200), MANIFEST_CID)


def fields(c: RoundApproval) -> tuple[int, bytes, str, bytes, str]:
    return (c.round, c.global_model_hash, c.global_model_cid, c.updates_root, c.manifest_cid)


def keys(devnet: Devnet, fed: Federation) -> dict[str, str]:
    """Node address → its dev private key."""
    by_address = {a.address: a.private_key for a in devnet.accounts}
    return {a: by_address[a] for a in fed.node_addresses}


def sign_all(devnet: Devnet, fed: Federation, c: RoundApproval) -> dict[str, str]:
    domain = Domain.of(fed.owner)
    return {a: c.sign(domain, k) for a, k in keys(devnet, fed).items()}


def revert_name(excinfo: pytest.ExceptionInfo[LedgerError]) -> str | None:
    assert isinstance(excinfo.value, ContractRevert), repr(excinfo.value)
    return excinfo.value.error_name


def raw_propose(
    fed: Federation, c: RoundApproval, nodes: list[str], approvals: list[tuple[int, str]]
) -> None:
    """``proposeRoundSigned`` with any node list and (id, signature) list: a lying coordinator."""
    fed.coordinator._transact(
        "proposeRoundSigned",
        *fields(c),
        b"".join(bytes.fromhex(a[2:]) for a in nodes),
        b"".join(i.to_bytes(2, "big") + compact(s) for i, s in approvals),
    )


def test_one_transaction_proposes_and_counts_every_signed_approval(
    devnet: Devnet, federation: Federation
) -> None:
    fed = federation
    c = content(1)
    tx = fed.coordinator.propose_round_signed(*fields(c), sign_all(devnet, fed, c))

    state = fed.owner.round_state(1)
    assert (state.quorum, state.approvals, state.finalized) == (2, 3, True)
    assert all(fed.owner.has_approved(1, a) for a in fed.node_addresses)
    events = fed.owner.events(["RoundProposed", "RoundApprovedBy", "RoundFinalized"])
    assert [e.name for e in events] == ["RoundProposed", "RoundApprovedBy", "RoundFinalized"]
    assert {e.tx_hash for e in events} == {tx.tx_hash}
    assert events[1].args["nodes"] == fed.node_addresses and events[1].args["approvals"] == 3
    assert (events[2].args["approvals"], events[2].args["quorum"]) == (2, 2)
    # What the node signs is what the contract computes (same domain, same type).
    digest = fed.owner._call("approvalDigest", *fields(c))
    from eth_account.messages import _hash_eip191_message, encode_typed_data

    from protocol.approvals import APPROVAL_TYPES

    signable = encode_typed_data(Domain.of(fed.owner).data(), APPROVAL_TYPES, c.message())
    assert bytes(digest) == _hash_eip191_message(signable)


@pytest.mark.parametrize(
    "forgery", ["other model", "other round", "other contract", "outsider as node", "twice"]
)
def test_a_coordinator_cannot_forge_or_replay_an_approval(
    devnet: Devnet, start_federation: StartFederation, forgery: str
) -> None:
    fed = start_federation(devnet, 3)
    node_keys = keys(devnet, fed)
    ids = fed.owner.node_ids()
    c = content(1)
    domain = Domain.of(fed.owner)
    signed = {"other model": content(1, model=900), "other round": content(2)}.get(forgery, c)
    if forgery == "other contract":
        domain = Domain.of(start_federation(devnet, 3).owner)  # same nodes, another deployment
    signature = signed.sign(domain, node_keys[ids[0]])
    if forgery == "outsider as node":
        outsider_key = devnet.accounts[-1].private_key
        signature = c.sign(domain, outsider_key)
    approvals = [(1, signature), (2, c.sign(Domain.of(fed.owner), node_keys[ids[1]]))]
    if forgery == "twice":
        approvals = [(1, signature), (1, signature)]

    with pytest.raises(ContractRevert) as excinfo:
        raw_propose(fed, c, ids, approvals)
    assert revert_name(excinfo) == "InvalidSignature"
    assert fed.owner.last_round() == 0  # nothing proposed


def test_a_removed_nodes_signature_does_not_count(
    devnet: Devnet, federation: Federation
) -> None:
    fed = federation
    c = content(1)
    signatures = sign_all(devnet, fed, c)
    fed.owner.remove_node(fed.node_addresses[2])

    with pytest.raises(ContractRevert) as excinfo:
        fed.coordinator.propose_round_signed(*fields(c), signatures)
    assert revert_name(excinfo) == "NotAdmittedNode"
    del signatures[fed.node_addresses[2]]
    fed.coordinator.propose_round_signed(*fields(c), signatures)
    assert fed.owner.round_state(1).approvals == 2
    assert not fed.owner.has_approved(1, fed.node_addresses[2])


def test_the_node_list_must_be_the_contracts_own(devnet: Devnet, federation: Federation) -> None:
    """A coordinator listing its own key under a node's id cannot approve as that node."""
    fed = federation
    c = content(1)
    ids = fed.owner.node_ids()
    fake: DevAccount = devnet.accounts[-1]
    domain = Domain.of(fed.owner)
    with pytest.raises(ContractRevert) as excinfo:
        raw_propose(fed, c, [fake.address, *ids[1:]], [(1, c.sign(domain, fake.private_key))])
    assert revert_name(excinfo) == "BadNodeList"
    with pytest.raises(ContractRevert) as excinfo:
        raw_propose(fed, c, ids[:2], [])
    assert revert_name(excinfo) == "BadNodeList"


def test_only_the_coordinator_proposes_with_signatures(
    devnet: Devnet, federation: Federation
) -> None:
    fed = federation
    c = content(1)
    with pytest.raises(ContractRevert) as excinfo:
        fed.outsider.propose_round_signed(*fields(c), sign_all(devnet, fed, c))
    assert revert_name(excinfo) == "NotCoordinator"


def test_a_node_whose_signature_is_withheld_approves_by_itself_and_is_paid(
    devnet: Devnet, federation: Federation
) -> None:
    fed = federation
    reward = ETHER // 100
    fed.owner.set_stake_policy(StakePolicy(0, 0, reward, 0, 0))
    fed.owner.fund(10 * reward)
    c = content(1)
    signatures = sign_all(devnet, fed, c)
    censored = fed.node_addresses[2]
    del signatures[censored]
    fed.coordinator.propose_round_signed(*fields(c), signatures)
    assert fed.owner.round_state(1).finalized

    left_out: Ledger = fed.nodes[2]
    with pytest.raises(ContractRevert) as excinfo:
        left_out.claim_rewards([1])
    assert revert_name(excinfo) == "NotApprover"
    proposal = fed.owner.round_proposal(1)
    assert proposal is not None
    left_out.approve_round_witnessed(proposal)
    assert fed.owner.round_state(1).approvals == 3
    with pytest.raises(ContractRevert) as excinfo:  # its approval counts once
        left_out.approve_round_witnessed(proposal)
    assert revert_name(excinfo) == "AlreadyApproved"
    before = fed.owner.reward_pool()
    left_out.claim_rewards([1])
    fed.nodes[0].claim_rewards([1])  # a signer is an approver too
    assert fed.owner.reward_pool() == before - 2 * reward


@pytest.mark.parametrize("lie", ["other content", "witness did not approve", "outsider"])
def test_a_late_approval_must_name_the_signed_content(
    devnet: Devnet, federation: Federation, lie: str
) -> None:
    """The witnessed path counts an approval only for the content an approver signed."""
    fed = federation
    c = content(1)
    signatures = sign_all(devnet, fed, c)
    late = fed.node_addresses[2]
    del signatures[late]
    fed.coordinator.propose_round_signed(*fields(c), signatures)
    witness, signature = fed.owner.round_witness(1) or ("", b"")
    named, caller = c, fed.nodes[2]
    if lie == "other content":
        named = content(1, model=900)  # the real witness signature, shown for other content
    elif lie == "witness did not approve":
        witness = late
        signature = compact(c.sign(Domain.of(fed.owner), keys(devnet, fed)[late]))
    else:
        caller = fed.outsider
    with pytest.raises(ContractRevert) as excinfo:
        caller._transact("approveRoundWitnessed", *fields(named), witness, signature)
    assert revert_name(excinfo) == {
        "other content": "InvalidSignature",
        "witness did not approve": "NotApprover",
        "outsider": "NotAdmittedNode",
    }[lie]
    assert fed.owner.round_state(1).approvals == 2
    # A plain approval cannot slip in either: a signed round keeps no hash to match.
    with pytest.raises(ContractRevert) as excinfo:
        fed.nodes[2].approve_round(1, c.global_model_hash, c.updates_root)
    assert revert_name(excinfo) == "ProposalMismatch"


def test_an_honest_signed_history_passes_the_audit(
    devnet: Devnet, tmp_path: Path, start_federation: StartFederation
) -> None:
    fed = start_federation(devnet, 3)
    fed.owner.set_stake_policy(StakePolicy(0, 0, ETHER // 100, 0, 0))
    fed.owner.fund(ETHER)
    history = History(fed, devnet, LocalStore(tmp_path / "blocks"), tmp_path)
    try:
        history.run_round(signed=True)
        history.run_round(signed=True, approvers=[0, 1])
        history.run_round()
        fed.nodes[1].claim_rewards([1, 2])
        report = audit(fed.owner, history.store)
    finally:
        history.close()
    assert report.ok, report.lines()
    assert [len(r.approvals) for r in report.rounds] == [3, 2, 3]
    assert all(r.status == "verified" for r in report.rounds)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("honest", None),
        ("stranger", "which is not an admitted node at block"),
        ("removed", "which is not an admitted node at block"),
        ("twice", "approved twice"),
        ("wrong count", "the event counts 3 approvals, the history has 2"),
    ],
)
def test_a_forged_signed_approval_history_fails_the_audit(
    devnet: Devnet, tmp_path: Path, case: str, expected: str | None
) -> None:
    """The real contract refuses these, so an unguarded contract writes the events."""
    chain = UnguardedLethe(devnet)
    store = LocalStore(tmp_path / "blocks")
    accounts = devnet.accounts
    coordinator, nodes, removed, stranger = accounts[1], accounts[2:5], accounts[7], accounts[6]
    rng = np.random.default_rng(7)
    contributions = [
        Contribution(a.address, a.private_key, rng.normal(size=12).astype(np.float32), 10)
        for a in nodes
    ]
    published = publish_round(store, 1, contributions, domain=Domain.of(chain.ledger))
    chain.emit("coordinatorAdmitted", coordinator.address, "0x" + "00" * 20)
    chain.emit("quorumSet", 0)
    for count, node in enumerate([*nodes, removed], start=1):
        chain.emit("nodeAdmitted", node.address, count)
    chain.emit("nodeRemoved", removed.address, 3)
    chain.emit(
        "roundProposed", 1, coordinator.address, published.model_hash, published.model_cid,
        published.updates_root, published.manifest_cid, 2, 3,
    )  # fmt: skip
    second = {"stranger": stranger, "removed": removed}.get(case, nodes[1])
    approvers = [nodes[0].address, nodes[0].address if case == "twice" else second.address]
    tx_hash = chain.emit("roundApprovedBy", 1, approvers, 3 if case == "wrong count" else 2)
    chain.emit("roundFinalized", 1, 2, 2)

    report = audit(chain.ledger, store)
    if expected is None:
        assert report.ok, report.lines()
        assert [a.node for a in report.round(1).approvals] == approvers
        return
    failure = report.failure
    assert failure is not None and (failure.round, failure.tx_hash) == (1, tx_hash)
    assert expected in failure.message
