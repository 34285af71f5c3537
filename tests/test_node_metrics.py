"""`lethe-node run --metrics-port`: a node's answers, refusals, retrains, forgets, stake and
rewards as Prometheus text (parsed by prometheus-client's own parser), over a real anvil."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from infra.net import free_port
from node import metrics
from node.metrics import answering, refusal_reason, retraining, serve_metrics
from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.ledger import StakePolicy
from protocol.messages import APPROVE

if TYPE_CHECKING:
    from launcher.devnet import Devnet
    from tests.chain_fixtures import Federation

pytest_plugins = ["tests.chain_fixtures"]

ETHER = 10**18
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


@pytest.fixture
def staked(federation: Federation) -> Federation:
    """Every node staked 1 ETH; round 1 finalized with nodes 0 and 1 approving."""
    policy = StakePolicy(
        required_stake=ETHER,
        slash_amount=ETHER // 4,
        reward_per_round=ETHER // 100,
        forget_deadline_blocks=5,
        unstake_delay_blocks=8,
    )
    federation.owner.set_stake_policy(policy)
    for node in federation.nodes:
        node.stake(ETHER)
    model, root = keccak256(b"m1"), keccak256(b"r1")
    federation.coordinator.propose_round(1, model, "bafy-m", root, "bafy-x")
    for node in federation.nodes[:2]:
        node.approve_round(1, model, root)
    return federation


@pytest.fixture
def served(staked: Federation) -> Iterator[str]:
    port = free_port()
    node = staked.nodes[0]
    server = serve_metrics(port, "127.0.0.1", ledger=lambda: node, address=str(node.account))
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()


def test_work_and_standing_are_served(served: str, staked: Federation) -> None:
    before = scrape(served)
    with answering("train", ProtocolError), retraining(2):
        pass
    with answering(APPROVE, ProtocolError):
        pass
    with pytest.raises(ProtocolError), answering("share", ProtocolError):
        raise ProtocolError("round 7 is not the chain's next round (8)")
    with pytest.raises(KeyError), answering("aggregate", ProtocolError):
        raise KeyError("a bug, not a refusal")
    after = scrape(served)

    def grew(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after[key] - before.get(key, 0.0)

    assert grew("lethe_node_answers_total", ("stage", "train")) == 1
    assert grew("lethe_node_rounds_answered_total") == 1
    reason = ("reason", "round N is not the chain's next round")
    assert grew("lethe_node_refusals_total", ("stage", "share"), reason) == 1
    assert grew("lethe_node_errors_total", ("stage", "aggregate")) == 1
    assert grew("lethe_node_forgets_total") == 2
    assert grew("lethe_node_retrain_seconds_count") == 1
    assert grew("lethe_node_stage_seconds_count", ("stage", APPROVE)) == 1
    assert after[("lethe_node_chain_up", ())] == 1
    assert after[("lethe_node_stake_wei", ())] == ETHER
    assert after[("lethe_node_slashed_wei", ())] == 0
    assert after[("lethe_node_rewards_claimable_wei", ())] == ETHER // 100
    assert after[("lethe_node_rewards_claimed_wei", ())] == 0


def test_an_unreachable_chain_reads_0_not_an_error(devnet: Devnet) -> None:
    from protocol.ledger import Ledger

    port = free_port()
    ledger = Ledger("http://127.0.0.1:9", "0x" + "11" * 20, timeout=1)
    server = serve_metrics(port, "127.0.0.1", ledger=lambda: ledger, address="0x" + "22" * 20)
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
    assert samples[("lethe_node_chain_up", ())] == 0
    assert ("lethe_node_stake_wei", ()) not in samples


def test_refusal_reasons_carry_no_values_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refusal_reason("TrainRequest: unexpected field 'x' 'y'") == "TrainRequest"
    assert refusal_reason(f"this node's commitment 0x{'ab' * 32} is altered") == (
        "this node's commitment HEX is altered"
    )
    assert refusal_reason("") == "unspecified"
    monkeypatch.setattr(metrics, "_REASONS", set())
    # a hostile coordinator sends endless odd requests: the labels stop growing
    labels = {refusal_reason(f"bogus {'x' * (i % 50)} {'y' * (i // 50)}") for i in range(500)}
    assert len(labels) == metrics.MAX_REASONS + 1 and "other" in labels
