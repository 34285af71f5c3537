"""The audit replays stakes, rewards and slashes and refuses ones the contract's rules forbid.

Specifications:
- a staked federation's honest history (stakes, funding, rounds, claims, a missed forget
  deadline slashed) passes, and the report shows each node's stake, rewards and slashes,
  with the pool the contract holds;
- the explorer shows the same pool and per-node figures, and nothing about stakes when the
  federation uses none;
- an event history the real contract would refuse (written by the unguarded test contract)
  fails the audit at that event: a reward for a round not finalized, for a round the node
  did not approve, paid twice, of another amount than the policy fixed, beyond the pool;
  a slash for a request that does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from protocol.hashing import keccak256
from protocol.ledger import StakePolicy
from protocol.store import LocalStore
from protocol.typed_data import Domain
from tests.audit_history import Contribution, History, UnguardedLethe, publish_round
from tests.records_proofs import request_committed
from verifier.audit import audit
from verifier.explorer import render_explorer

if TYPE_CHECKING:
    from launcher.devnet import Devnet
    from tests.chain_fixtures import StartFederation

pytest_plugins = ["tests.chain_fixtures"]

ETHER = 10**18
REWARD = ETHER // 100
POLICY = StakePolicy(ETHER, ETHER // 4, REWARD, 3, 3)


def _mine(devnet: Devnet, blocks: int) -> None:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(devnet.rpc_url))
    w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]


def test_an_honest_staked_history_passes_and_shows_every_nodes_account(
    devnet: Devnet, tmp_path: Path, start_federation: StartFederation
) -> None:
    fed = start_federation(devnet, 3)
    fed.owner.set_stake_policy(POLICY)
    for node in fed.nodes:
        node.stake(ETHER)  # admitted before the policy: a top-up is a stake like any other
    history = History(fed, devnet, LocalStore(tmp_path / "blocks"), tmp_path)
    try:
        fed.owner.fund(10 * REWARD)
        history.run_round()
        history.run_round(approvers=[0, 1])
        fed.nodes[0].claim_rewards([1, 2])
        fed.nodes[2].claim_rewards([1])
        missed = keccak256(b"missed")
        request_committed(fed, missed, keccak256(b"some record"), fed.nodes[1], fed.node_keys[1])
        _mine(devnet, POLICY.forget_deadline_blocks + 1)
        fed.outsider.slash(missed)
        report = audit(fed.owner, history.store)
    finally:
        history.close()

    assert report.ok, report.lines()
    stakes = report.stakes
    assert stakes is not None
    assert stakes["funded_wei"] == 10 * REWARD and stakes["paid_wei"] == 3 * REWARD
    assert stakes["slashed_wei"] == POLICY.slash_amount
    assert stakes["pool_wei"] == fed.owner.reward_pool()
    by_node = {n["address"]: n for n in stakes["nodes"]}
    first, second, third = (by_node[a] for a in fed.node_addresses)
    assert first["rewards_claimed_wei"] == 2 * REWARD and first["rewards_claimable_wei"] == 0
    assert second["rewards_claimable_wei"] == 2 * REWARD
    assert second["stake_wei"] == ETHER - POLICY.slash_amount
    assert second["slashed_requests"] == ["0x" + missed.hex()]
    assert third["rewards_claimed_wei"] == REWARD and third["stake_wei"] == ETHER
    text = "\n".join(report.lines())
    assert "reward pool 0.32 ETH: funded 0.1 ETH, slashed in 0.25 ETH, paid out 0.03 ETH" in text
    assert f"node {fed.node_addresses[1]}: stake 0.75 ETH" in text and "1 slash (0.25 ETH)" in text
    assert report.to_json()["stakes"] == stakes

    page = render_explorer(fed.owner, history.store)
    assert "<h2>Stakes and rewards</h2>" in page
    assert "Reward pool 0.32 ETH: funded 0.1 ETH, slashed in 0.25 ETH, paid out 0.03 ETH" in page
    rows = re.findall(r'<tr class="stake" data-address="([^"]+)">(.*?)</tr>', page)
    cells = {a: re.findall(r'<td class="num">([^<]*)', row) for a, row in rows}
    assert cells[fed.node_addresses[1]] == ["0.75 ETH", "0 ETH", "0.02 ETH", "0.25 ETH"]
    assert cells[fed.node_addresses[0]] == ["1 ETH", "0.02 ETH", "0 ETH", "0 ETH"]


def test_a_federation_without_stakes_reports_none(
    devnet: Devnet, tmp_path: Path, start_federation: StartFederation
) -> None:
    fed = start_federation(devnet, 3)
    report = audit(fed.owner, LocalStore(tmp_path / "blocks"))
    assert report.ok and report.stakes is None
    assert not any("reward pool" in line for line in report.lines())
    assert "Stakes and rewards" not in render_explorer(fed.owner, LocalStore(tmp_path / "blocks"))


@pytest.fixture
def unguarded(devnet: Devnet, tmp_path: Path) -> tuple[UnguardedLethe, LocalStore, list[str]]:
    """Round 1 proposed and finalized by nodes 0 and 1 (node 2 did not approve), policy set,
    the pool funded with 0.1 ETH, on a contract that emits whatever it is told."""
    chain = UnguardedLethe(devnet)
    store = LocalStore(tmp_path / "blocks")
    accounts = devnet.accounts
    coordinator, nodes = accounts[1], list(accounts[2:5])
    rng = np.random.default_rng(5)
    contributions = [
        Contribution(a.address, a.private_key, rng.normal(size=12).astype(np.float32), 10)
        for a in nodes
    ]
    published = publish_round(store, 1, contributions, domain=Domain.of(chain.ledger))
    chain.emit("coordinatorAdmitted", coordinator.address, "0x" + "00" * 20)
    chain.emit("quorumSet", 0)
    chain.emit("stakePolicySet", *POLICY.__dict__.values())
    for count, node in enumerate(nodes, start=1):
        chain.emit("staked", node.address, ETHER, ETHER)
        chain.emit("nodeAdmitted", node.address, count)
    chain.emit("rewardsFunded", 10 * REWARD, 10 * REWARD)
    chain.emit(
        "roundProposed", 1, coordinator.address, published.model_hash, published.model_cid,
        published.updates_root, published.manifest_cid, 2, 3,
    )  # fmt: skip
    chain.emit("roundApproved", 1, nodes[0].address, 1)
    chain.emit("roundApproved", 1, nodes[1].address, 2)
    chain.emit("roundFinalized", 1, 2, 2)
    return chain, store, [a.address for a in nodes]


def test_an_honest_claim_on_the_unguarded_contract_passes(
    unguarded: tuple[UnguardedLethe, LocalStore, list[str]],
) -> None:
    chain, store, nodes = unguarded
    chain.emit("rewardClaimed", 1, nodes[0], REWARD)
    report = audit(chain.ledger, store)
    assert report.ok, report.lines()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unfinalized round", "was paid before the round was finalized"),
        ("not an approver", "was paid, but it never approved the round"),
        ("paid twice", "was paid twice"),
        ("wrong amount", "the policy at proposal said 10000000000000000"),
        ("beyond the pool", "took the pool below zero"),
        ("unknown request", "a request that does not name it"),
    ],
)
def test_stake_events_the_contract_would_refuse_fail_the_audit(
    unguarded: tuple[UnguardedLethe, LocalStore, list[str]], case: str, expected: str
) -> None:
    chain, store, nodes = unguarded
    if case == "unfinalized round":
        tx = chain.emit("rewardClaimed", 2, nodes[0], REWARD)
    elif case == "not an approver":
        tx = chain.emit("rewardClaimed", 1, nodes[2], REWARD)
    elif case == "paid twice":
        chain.emit("rewardClaimed", 1, nodes[0], REWARD)
        tx = chain.emit("rewardClaimed", 1, nodes[0], REWARD)
    elif case == "wrong amount":
        tx = chain.emit("rewardClaimed", 1, nodes[0], 2 * REWARD)
    elif case == "beyond the pool":
        chain.emit("stakePolicySet", ETHER, 0, ETHER, 0, 0)  # a reward of 1 ETH from round 2 on
        chain.emit("rewardClaimed", 1, nodes[1], REWARD)  # fine: round 1 kept its reward
        model, root = keccak256(b"m"), keccak256(b"r")
        chain.emit("roundProposed", 2, nodes[2], model, "bafy", root, "bafy", 2, 3)
        chain.emit("roundApproved", 2, nodes[0], 1)
        chain.emit("roundApproved", 2, nodes[1], 2)
        chain.emit("roundFinalized", 2, 2, 2)
        tx = chain.emit("rewardClaimed", 2, nodes[0], ETHER)
    else:
        tx = chain.emit("forgetSlashed", keccak256(b"nothing"), nodes[0], ETHER // 4, ETHER)
    report = audit(chain.ledger, store, keep_going=True)
    messages = [f.message for f in report.failures if f.tx_hash == tx]
    assert messages and expected in messages[0], report.lines()
