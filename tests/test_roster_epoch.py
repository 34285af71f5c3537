"""A change of the federation's roster starts a new training epoch, and rounds go on.

Real nodes, a real chain, the in-memory transport. Specifications (docs/trust.md, rule 5):
- a node admitted after the initial rounds is part of the next finalized round (here the
  round of a forget request, as in a running federation), and the global model is the
  weighted average of all four models: every earlier member retrained for the new
  roster's epoch, so its model is new and may be summed with the new sender set;
- a removal moves to a new epoch too: the remaining nodes retrain and the round publishes;
- the first round of a new roster waits for every registered node (a newcomer not yet
  connected): nothing is shared without it, and once it connects the round publishes;
- a coordinator that skips that retrain, to have the earlier members share the models
  summed before the admission together with the newcomer's (the difference of the two
  published sums would be the newcomer's model), is refused by every earlier member;
- a node trains only for the epoch it derives from the chain: a train request naming the
  roster before the admission, or a made-up one, is refused and nothing is retrained;
- a forget in the first round of a new epoch completes (its exactness against a retrain
  from the raw data under that epoch: tests/test_sisa.py).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import pytest

from coordinator.rounds import RoundFailed
from node.stages import answer
from protocol.epoch import chain_epoch
from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.ledger import ForgetState
from protocol.messages import SHARE, TRAIN, TrainReply, TrainRequest
from protocol.model import vector_from_bytes
from tests.test_adversarial_coordinator import RogueCoordinator, _is, _victim_model
from verifier.audit import audit

if TYPE_CHECKING:
    from node.sisa import NodeModel
    from tests.round_fixtures import MakeFederation, MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]


def _exact(fed: MemoryFederation) -> MemoryFederation:
    fed.chain.owner.set_noise_scale(0.0)
    return fed


def _model(node: NodeHandle) -> NodeModel:
    with node.runtime.sisa() as sisa:
        return sisa.model(None)


def _epoch_of(node: NodeHandle) -> bytes:
    with node.runtime.sisa() as sisa:
        return sisa.epoch


def _initial_rounds(fed: MemoryFederation) -> None:
    """One round per slice, as the coordinator starts a federation."""
    for through in (0, 1, 2, None):
        assert fed.coordinator.run_round(through).finalized


def _published_is_the_average_of(fed: MemoryFederation, cid: str, nodes: list[NodeHandle]) -> None:
    models = [_victim_model(n) for n in nodes]
    expected = sum(n * w for w, n in models) / sum(n for _, n in models)
    published = np.asarray(vector_from_bytes(fed.store.get(cid)), dtype=np.float64)
    assert np.max(np.abs(published - expected)) < 1e-4


def _by_address(nodes: list[NodeHandle]) -> list[str]:
    return sorted((n.address for n in nodes), key=str.lower)


def test_a_node_admitted_after_the_initial_rounds_is_in_the_next_round(
    memory_federation_of: MakeFederation,
) -> None:
    fed = _exact(memory_federation_of(3))
    _initial_rounds(fed)
    summed = {n.address: _model(n).hash_hex for n in fed.nodes}
    newcomer = fed.admit(3)
    owner = fed.nodes[1]
    with owner.runtime.sisa() as sisa:
        record_id = sisa.store.record_ids()[3]
    fed.db.submit_forget(record_id, fed.commitment(record_id), request_id="forget-1")

    assert fed.coordinator.process_forgets()
    request = fed.db.get_forget("forget-1")
    assert request.state == "completed", (request, fed.lines)
    status = fed.chain.owner.forget_state(keccak256(b"forget-1"))
    assert status.state == ForgetState.COMPLETED
    info = fed.db.get_round(request.round or 0)
    assert info["state"] == "finalized"
    everyone = _by_address(fed.nodes)
    assert info["responders"]["share"] == everyone
    assert newcomer.address in info["approvals"]
    epoch = chain_epoch(fed.chain.owner.roster())
    for node in fed.nodes[:3]:
        assert _epoch_of(node) == epoch
        assert _model(node).hash_hex != summed[node.address], "retrained for the new roster"
    _published_is_the_average_of(fed, info["global_model_cid"], fed.nodes)
    report = audit(fed.chain.owner, fed.store)
    assert report.ok, report.verdict()


def test_a_removal_moves_to_a_new_epoch_and_the_round_goes_on(
    memory_federation_of: MakeFederation,
) -> None:
    fed = _exact(memory_federation_of(4))
    assert fed.coordinator.run_round(None).finalized  # the sum over all four is public
    removed = fed.nodes[3]
    summed = {n.address: _model(n).hash_hex for n in fed.nodes}
    fed.chain.owner.remove_node(removed.address)  # it keeps running and answering

    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    remaining = fed.nodes[:3]
    assert outcome.info["responders"]["share"] == _by_address(remaining)
    for node in remaining:
        assert _model(node).hash_hex != summed[node.address]
    _published_is_the_average_of(fed, outcome.info["global_model_cid"], remaining)
    report = audit(fed.chain.owner, fed.store)
    assert report.ok, report.verdict()


def test_earlier_members_never_share_their_summed_models_with_a_newcomer(
    memory_federation_of: MakeFederation,
) -> None:
    fed = _exact(memory_federation_of(3))
    outcome = fed.coordinator.run_round(None)  # G_1: the sum over A, B, C
    assert outcome.finalized
    first = np.asarray(
        vector_from_bytes(fed.store.get(outcome.info["global_model_cid"])), dtype=np.float64
    )
    earlier = list(fed.nodes)
    models = {n.address: _model(n) for n in earlier}
    newcomer = fed.admit(3)
    rogue = RogueCoordinator(fed)
    round_no = rogue.next_round()
    request = TrainRequest(
        federation_id=fed.federation_id,
        round=round_no,
        through_slice=None,
        shards=2,
        slices=4,
        epoch="0x" + chain_epoch(fed.chain.owner.roster()).hex(),
        forget_requests=[],
    ).to_record()
    reply = rogue.ask(newcomer, TRAIN, request)  # only the newcomer is asked to train
    assert reply is not None
    joined = TrainReply.from_record(reply)
    committed = {newcomer.address: joined} | {
        a: dataclasses.replace(joined, address=a, model_hash=m.hash_hex, n_samples=m.n_samples)
        for a, m in models.items()
    }
    n_total = sum(c.n_samples for c in committed.values())
    roster = rogue.chain_roster(round_no)
    everyone = _by_address(fed.nodes)
    envelopes, agreements = rogue.share(
        fed.nodes,
        roster,
        committed,
        dict.fromkeys(committed, n_total),
        dict.fromkeys(committed, everyone),
    )
    # The newcomer refuses too now (the others' commitments are not signed by them for
    # this round): what matters is that no earlier member shares its summed model.
    assert set(envelopes) <= {newcomer.address}
    for node in earlier:
        refused = [why for who, at, why in rogue.refusals if (who, at) == (node.address, SHARE)]
        assert any("trained for roster epoch" in why for why in refused), refused
        assert node.runtime.rounds.agreement(round_no) is None
    second = rogue.reconstruct(
        roster, [rogue.aggregate(n, roster, everyone, envelopes, agreements) for n in fed.nodes]
    )
    assert second is None
    victim, n_victim = _victim_model(newcomer)
    n_first = sum(m.n_samples for m in models.values())
    estimate = None if second is None else (second * n_total - first * n_first) / n_victim
    assert not _is(estimate, victim)
    # The honest round that follows retrains everyone and publishes with the newcomer.
    honest = fed.coordinator.run_round(None)
    assert honest.finalized and honest.info["responders"]["share"] == everyone


@pytest.mark.parametrize("named", ["the roster before the admission", "a made-up roster"])
def test_a_node_trains_only_for_the_epoch_it_derives_from_the_chain(
    memory_federation_of: MakeFederation, named: str
) -> None:
    fed = memory_federation_of(3)
    before_admission = chain_epoch(fed.chain.owner.roster())
    assert fed.coordinator.run_round(None).finalized
    fed.admit(3)
    node = fed.nodes[0]
    model = _model(node)
    lie = before_admission if named.startswith("the roster") else keccak256(b"made up")
    request = TrainRequest(
        federation_id=fed.federation_id,
        round=fed.chain.owner.last_round() + 1,
        through_slice=None,
        shards=2,
        slices=4,
        epoch="0x" + lie.hex(),
        forget_requests=[],
    )
    with pytest.raises(ProtocolError, match="the chain's registered nodes give"):
        answer(node.runtime, TRAIN, request.to_record())
    assert _epoch_of(node) == before_admission, "nothing retrained for the coordinator's word"
    assert _model(node).hash == model.hash


def test_a_newcomer_not_yet_connected_holds_the_new_rosters_first_round_back(
    memory_federation_of: MakeFederation,
) -> None:
    # Without the wait, the first sum of the new roster would be the three without the
    # newcomer, and their models, unchanged from then on, would refuse it in every later
    # round of the epoch.
    fed = _exact(memory_federation_of(3))
    assert fed.coordinator.run_round(None).finalized
    newcomer = fed.admit(3)  # admitted, its key registered
    endpoint = fed.transport.nodes.pop(newcomer.flower_id)  # not connected yet
    with pytest.raises(RoundFailed, match=f"waiting for {newcomer.address}"):
        fed.coordinator.run_round(None)
    round_no = fed.chain.owner.last_round() + 1
    assert all(n.runtime.rounds.agreement(round_no) is None for n in fed.nodes)
    fed.transport.nodes[newcomer.flower_id] = endpoint  # it connects
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized and outcome.round == round_no
    assert outcome.info["responders"]["share"] == _by_address(fed.nodes)
    assert fed.coordinator.run_round(None).finalized  # and the next one, the same four
