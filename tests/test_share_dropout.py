"""A round survives one node failing mid-upload of its shares, within the threshold rules.

Four real nodes (t = 3), a real chain, the in-memory transport. Specifications:
- a node failing at ``train.share`` of a fresh model: the three others agree once more to
  themselves, their shares (the same envelopes) count, and the published model is their
  weighted average; the manifest names the lost node as dropped;
- with three nodes a lost sender still fails the round (never fewer than three senders);
- a model already agreed with all four in an earlier round is never summed with three:
  the round fails and nothing is published (no differencing);
- a coordinator that got the sum over all four cannot then get the sum without one: a node
  that summed agrees to no smaller set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from coordinator.rounds import RoundFailed
from node.stages import answer
from protocol.messages import SHARE, WireRecord
from protocol.model import vector_from_bytes
from tests.test_adversarial_coordinator import RogueCoordinator, _is, _victim_model
from verifier.audit import audit

if TYPE_CHECKING:
    from tests.round_fixtures import MakeFederation, MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]


def _lost_mid_share(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
    """Shares computed and kept, then the connection dies before the reply arrives."""
    reply = answer(node.runtime, stage, record)
    if stage == SHARE:
        raise ConnectionError("killed mid-upload")
    return reply


def _exact(fed: MemoryFederation) -> MemoryFederation:
    fed.chain.owner.set_noise_scale(0.0)
    return fed


def test_four_nodes_one_lost_mid_share_the_other_three_publish(
    memory_federation_of: MakeFederation,
) -> None:
    fed = _exact(memory_federation_of(4))
    lost = fed.nodes[3]
    fed.replace(3, _lost_mid_share)
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    survivors = sorted((n.address for n in fed.nodes[:3]), key=str.lower)
    assert outcome.info["responders"]["share"] == survivors
    assert outcome.info["dropped"] == [lost.address]
    assert set(outcome.info["approvals"]) == set(survivors)
    assert any("did not share; asking the 3 others" in line for line in fed.lines)
    # Their shares count with their own weights: Σ n_i·w_i / Σ n_i over the three.
    models = [_victim_model(n) for n in fed.nodes[:3]]
    expected = sum(n * w for w, n in models) / sum(n for _, n in models)
    published = vector_from_bytes(fed.store.get(outcome.info["global_model_cid"]))
    assert np.max(np.abs(np.asarray(published, dtype=np.float64) - expected)) < 1e-4
    report = audit(fed.chain.owner, fed.store)
    assert report.ok, report.verdict()


def test_three_nodes_one_lost_mid_share_still_fails(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    fed.replace(2, _lost_mid_share)
    with pytest.raises(RoundFailed, match=r"2 nodes shared, need all 3 .*at least 3"):
        fed.coordinator.run_round(None)
    assert fed.chain.owner.last_round() == 0


def test_an_unchanged_model_is_not_summed_with_three_after_four(
    memory_federation_of: MakeFederation,
) -> None:
    fed = _exact(memory_federation_of(4))
    assert fed.coordinator.run_round(None).finalized  # all four, models now public as a sum
    fed.replace(3, _lost_mid_share)
    with pytest.raises(RoundFailed, match=r"0 nodes shared, need all 3"):
        fed.coordinator.run_round(None)
    assert fed.chain.owner.last_round() == 1, "nothing to difference against round 1"


def test_after_the_sum_over_four_no_node_agrees_to_three(
    memory_federation_of: MakeFederation,
) -> None:
    fed = memory_federation_of(4)
    rogue = RogueCoordinator(fed)
    victim, *peers = fed.nodes
    model, n_victim = _victim_model(victim)
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    n_total = sum(c.n_samples for c in committed.values())
    roster = rogue.chain_roster(round_no)
    everyone = sorted(committed, key=str.lower)
    totals = {n.address: n_total for n in fed.nodes}
    envelopes, agreements = rogue.share(
        fed.nodes, roster, committed, totals, {n.address: everyone for n in fed.nodes}
    )
    assert len(envelopes) == 4
    first = rogue.reconstruct(
        roster, [rogue.aggregate(p, roster, everyone, envelopes, agreements) for p in peers]
    )
    assert first is not None  # the one sum the coordinator is meant to learn
    without = sorted((p.address for p in peers), key=str.lower)
    _, narrowed = rogue.share(
        peers, roster, committed, totals, {p.address: without for p in peers}
    )
    assert narrowed == {}, "every peer summed already: none agrees to the smaller set"
    second = rogue.reconstruct(
        roster,
        [rogue.aggregate(p, roster, without, envelopes, narrowed) for p in peers],
    )
    estimate: Any = None if second is None else (first - second) * n_total / n_victim
    assert not _is(estimate, model)
