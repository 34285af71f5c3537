"""A misbehaving coordinator against real nodes: it never learns one node's model.

The coordinator here speaks the wire protocol as it likes, over the in-memory transport,
to the nodes' real stage handlers, with the real contract on anvil. Each test replays
one attack that recovered a node's exact model before nodes checked for it, and then
tries to read the victim's model from everything it gathered (or from what was
published). Against nodes that check, each attempt is refused or yields noise.

Specifications (docs/trust.md, "What a node checks"):
- a one-member roster with t = 1 and an invented round number: refused;
- a threshold below ⌊n/2⌋+1 of the nodes on chain: refused;
- an off-chain round (a number that is not the chain's next) over the victim's peers:
  refused, so it cannot be subtracted from a published round;
- a second ``aggregate`` in an honest round, leaving the victim out: refused;
- different sender sets shown to different nodes: no two sums come out;
- a weight of 1 for the victim and ~0 for everyone else: not summed;
- a round that lost a node while the others' models are unchanged publishes nothing, so
  two published global models never difference to one node's model.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from coordinator.rounds import RoundFailed
from protocol.field import FixedPoint
from protocol.manifest import RoundManifest
from protocol.messages import AGGREGATE, SHARE, TRAIN, TrainReply, TrainRequest
from protocol.model import vector_from_bytes
from protocol.secure_sum import Member, Roster, SummedShare, default_threshold, reconstruct_sum

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

TOLERANCE = 1e-3
"""A reconstruction this close to the victim's model (max abs error) is its model."""


def _victim_model(node: NodeHandle) -> tuple[np.ndarray[Any, Any], int]:
    with node.runtime.sisa() as sisa:
        model = sisa.model(None)
    return np.asarray(model.vector, dtype=np.float64), model.n_samples


def _is(estimate: np.ndarray[Any, Any] | None, model: np.ndarray[Any, Any]) -> bool:
    """Whether ``estimate`` is ``model`` (coordinates the fixed-point clip left alone)."""
    if estimate is None:
        return False
    inside = np.abs(model) < 7.9
    return bool(np.max(np.abs(estimate[inside] - model[inside])) < TOLERANCE)


@dataclass
class RogueCoordinator:
    """Sends any record to any node over the transport; keeps every answer and refusal."""

    fed: MemoryFederation
    clip: float = 8.0
    frac_bits: int = FixedPoint.for_parties(3, 8.0).frac_bits
    refusals: list[tuple[str, str, str]] = field(default_factory=list)

    def ask(self, node: NodeHandle, stage: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """One node's answer to a record, or None (its refusal is kept)."""
        replies = self.fed.transport.exchange(stage, {node.flower_id: record}, 30.0)
        if node.flower_id not in replies:
            self.refusals.append((node.address, stage, self.fed.transport.errors[node.flower_id]))
            return None
        return replies[node.flower_id]

    def next_round(self) -> int:
        return self.fed.chain.owner.last_round() + 1

    def chain_roster(self, round_no: int, threshold: int | None = None) -> Roster:
        """The chain's admitted nodes and keys, as an honest coordinator announces them."""
        entries = self.fed.chain.owner.roster()
        return Roster(
            self.fed.federation_id,
            round_no,
            default_threshold(len(entries)) if threshold is None else threshold,
            tuple(Member(e.address, i + 1, e.key or b"") for i, e in enumerate(entries)),
        )

    def commit(self, round_no: int) -> dict[str, TrainReply]:
        """An honest train stage: every node's commitment, by address."""
        request = TrainRequest(
            federation_id=self.fed.federation_id,
            round=round_no,
            through_slice=None,
            shards=2,
            slices=4,
            forget_requests=[],
        ).to_record()
        replies = {}
        for node in self.fed.nodes:
            reply = self.ask(node, TRAIN, request)
            assert reply is not None
            replies[node.address] = TrainReply.from_record(reply)
        return replies

    def share(
        self,
        nodes: list[NodeHandle],
        roster: Roster,
        committed: dict[str, TrainReply],
        n_total: dict[str, int],
        senders: dict[str, list[str]],
    ) -> tuple[dict[str, dict[str, bytes]], dict[str, str]]:
        """Ask each node to sign ``senders[node]`` and share into ``roster`` with its
        denominator; (sender → envelopes, sender → signature on its set). Nodes that know
        no sender set are asked without one."""
        envelopes, signatures = {}, {}
        for node in nodes:
            header = {
                "federation_id": self.fed.federation_id,
                "round": roster.round,
                "through_slice": None,
                "model_hash": committed[node.address].model_hash,
                "n_total": n_total[node.address],
                "clip": self.clip,
                "frac_bits": self.frac_bits,
                "senders": senders[node.address],
            }
            for variant in (header, {k: v for k, v in header.items() if k != "senders"}):
                record = {"header": json.dumps(variant), "blob:roster": roster.to_bytes()}
                reply = self.ask(node, SHARE, record)
                if reply is not None:
                    envelopes[node.address] = {
                        k.removeprefix("blob:envelopes:"): v
                        for k, v in reply.items()
                        if k.startswith("blob:envelopes:")
                    }
                    signed = json.loads(reply["header"]).get("signature")
                    if signed is not None:
                        signatures[node.address] = signed
                    break
        return envelopes, signatures

    def aggregate(
        self,
        node: NodeHandle,
        roster: Roster,
        senders: list[str],
        envelopes: dict[str, dict[str, bytes]],
        agreements: dict[str, str],
    ) -> SummedShare | None:
        """Ask ``node`` to sum ``senders``' envelopes; with the agreements, or without them
        for nodes that do not know that field."""
        header: dict[str, Any] = {
            "federation_id": self.fed.federation_id,
            "round": roster.round,
            "through_slice": None,
            "senders": senders,
            "agreements": [{"address": a, "signature": s} for a, s in sorted(agreements.items())],
        }
        if any(s not in envelopes for s in senders):
            return None  # a sender refused to share: there is nothing to route
        blobs = {f"blob:envelopes:{s}": envelopes[s][node.address] for s in senders}
        for variant in (header, {k: v for k, v in header.items() if k != "agreements"}):
            record = {"header": json.dumps(variant), "blob:roster": roster.to_bytes(), **blobs}
            reply = self.ask(node, AGGREGATE, record)
            if reply is not None:
                return SummedShare.from_bytes(reply["blob:summed_share"])
        return None

    def reconstruct(
        self, roster: Roster, summed: list[SummedShare | None]
    ) -> np.ndarray[Any, Any] | None:
        """The weighted sum from the summed shares it got, if there are enough."""
        shares = [s for s in summed if s is not None]
        if len(shares) < roster.threshold:
            return None
        fixed_point = FixedPoint(self.clip, self.frac_bits)
        return np.asarray(reconstruct_sum(roster, shares, fixed_point), dtype=np.float64)


@pytest.fixture
def rogue(memory_federation: MemoryFederation) -> RogueCoordinator:
    return RogueCoordinator(memory_federation)


def test_one_member_roster_with_invented_round_is_refused(rogue: RogueCoordinator) -> None:
    victim = rogue.fed.nodes[0]
    model, n_victim = _victim_model(victim)
    committed = rogue.commit(rogue.next_round())
    me = next(m for m in rogue.chain_roster(77).members if m.node_id == victim.address)
    roster = Roster(rogue.fed.federation_id, 77, 1, (me,))
    alone = {victim.address: [victim.address]}
    envelopes, agreements = rogue.share(
        [victim], roster, committed, {victim.address: n_victim}, alone
    )
    senders = list(envelopes)
    summed = [rogue.aggregate(victim, roster, senders, envelopes, agreements)] if senders else []
    assert not _is(rogue.reconstruct(roster, summed), model)
    assert any(stage == SHARE for _, stage, _ in rogue.refusals)


def test_threshold_below_the_chains_is_refused(rogue: RogueCoordinator) -> None:
    victim, *peers = rogue.fed.nodes
    model, n_victim = _victim_model(victim)
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    roster = rogue.chain_roster(round_no, threshold=1)
    alone = {victim.address: [victim.address]}
    envelopes, agreements = rogue.share(
        [victim], roster, committed, {victim.address: n_victim}, alone
    )
    senders = list(envelopes)
    # With t = 1 every share is the secret itself: one peer's "sum" over the victim alone.
    summed = [rogue.aggregate(peers[0], roster, senders, envelopes, agreements)] if senders else []
    assert not _is(rogue.reconstruct(roster, summed), model)
    assert any("threshold" in why for _, _, why in rogue.refusals)


def _honest_sum(
    rogue: RogueCoordinator, round_no: int
) -> tuple[Roster, dict[str, TrainReply], dict[str, dict[str, bytes]], dict[str, str], int]:
    """Train and share honestly with every node in ``round_no``."""
    committed = rogue.commit(round_no)
    n_total = sum(c.n_samples for c in committed.values())
    roster = rogue.chain_roster(round_no)
    nodes = rogue.fed.nodes
    everyone = sorted(committed, key=str.lower)
    envelopes, agreements = rogue.share(
        nodes,
        roster,
        committed,
        {n.address: n_total for n in nodes},
        {n.address: everyone for n in nodes},
    )
    assert sorted(envelopes, key=str.lower) == everyone
    return roster, committed, envelopes, agreements, n_total


def test_an_off_chain_round_cannot_be_subtracted_from_a_published_one(
    rogue: RogueCoordinator,
) -> None:
    fed = rogue.fed
    victim, *peers = fed.nodes
    model, n_victim = _victim_model(victim)
    fed.coordinator.config = replace(fed.coordinator.config, publish_noise=0.0)
    published = fed.coordinator.run_round(None)
    assert published.finalized and published.manifest is not None
    total = published.manifest.n_total
    exact = vector_from_bytes(fed.store.get(published.manifest.global_model_cid))
    # Round 77 exists nowhere on chain: the peers alone, weighted as in the published round.
    committed = rogue.commit(77)
    roster = rogue.chain_roster(77)
    senders = sorted((p.address for p in peers), key=str.lower)
    envelopes, agreements = rogue.share(
        peers,
        roster,
        committed,
        {p.address: total for p in peers},
        {p.address: senders for p in peers},
    )
    summed = [rogue.aggregate(p, roster, senders, envelopes, agreements) for p in peers]
    peers_sum = rogue.reconstruct(roster, summed)
    estimate = None if peers_sum is None else (exact - peers_sum) * total / n_victim
    assert not _is(estimate, model)
    assert any("not the chain's next round" in why for _, _, why in rogue.refusals)


def test_second_aggregate_without_the_victim_is_refused(rogue: RogueCoordinator) -> None:
    victim, *peers = rogue.fed.nodes
    model, n_victim = _victim_model(victim)
    roster, _, envelopes, agreements, n_total = _honest_sum(rogue, rogue.next_round())
    everyone = sorted(envelopes, key=str.lower)
    first = rogue.reconstruct(
        roster, [rogue.aggregate(n, roster, everyone, envelopes, agreements) for n in peers]
    )
    assert first is not None  # the honest sum: what the coordinator is meant to learn
    without = sorted((p.address for p in peers), key=str.lower)
    second = rogue.reconstruct(
        roster, [rogue.aggregate(p, roster, without, envelopes, agreements) for p in peers]
    )
    estimate = None if second is None else (first - second) * n_total / n_victim
    assert not _is(estimate, model)
    assert len(rogue.refusals) >= len(peers)


def test_different_sender_sets_for_different_nodes_yield_no_difference(
    rogue: RogueCoordinator,
) -> None:
    fed = rogue.fed
    victim, a, b = fed.nodes
    model, n_victim = _victim_model(victim)
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    n_total = sum(c.n_samples for c in committed.values())
    roster = rogue.chain_roster(round_no)
    everyone = sorted(committed, key=str.lower)
    without = sorted([a.address, b.address], key=str.lower)
    # The victim and A are shown the full set, B the set without the victim.
    envelopes, signed = rogue.share(
        fed.nodes,
        roster,
        committed,
        {n.address: n_total for n in fed.nodes},
        {victim.address: everyone, a.address: everyone, b.address: without},
    )
    full = {k: v for k, v in signed.items() if k != b.address}
    partial = {k: v for k, v in signed.items() if k == b.address}
    with_victim = rogue.reconstruct(
        roster, [rogue.aggregate(n, roster, everyone, envelopes, full) for n in (victim, a)]
    )
    without_victim = rogue.reconstruct(
        roster, [rogue.aggregate(n, roster, without, envelopes, partial) for n in (a, b)]
    )
    estimate = (
        None
        if with_victim is None or without_victim is None
        else (with_victim - without_victim) * n_total / n_victim
    )
    assert not _is(estimate, model)


def test_a_weight_of_one_for_the_victim_is_not_summed(rogue: RogueCoordinator) -> None:
    fed = rogue.fed
    victim, *peers = fed.nodes
    model, n_victim = _victim_model(victim)
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    roster = rogue.chain_roster(round_no)
    # Everyone else's weight n_i / 10^9 quantizes to nothing: the "sum" is the victim.
    n_total = {n.address: 10**9 for n in peers} | {victim.address: n_victim}
    everyone = sorted(committed, key=str.lower)
    envelopes, agreements = rogue.share(
        fed.nodes, roster, committed, n_total, {n.address: everyone for n in fed.nodes}
    )
    summed = [rogue.aggregate(n, roster, everyone, envelopes, agreements) for n in fed.nodes]
    assert not _is(rogue.reconstruct(roster, summed), model)


def _published(fed: MemoryFederation) -> list[tuple[np.ndarray[Any, Any], RoundManifest]]:
    """Every global model and manifest an outsider finds from the chain and the store."""
    out = []
    for event in fed.chain.owner.events(["RoundProposed"]):
        manifest = RoundManifest.from_bytes(fed.store.get(str(event.args["manifestCid"])))
        vector = vector_from_bytes(fed.store.get(str(event.args["globalModelCid"])))
        out.append((np.asarray(vector, dtype=np.float64), manifest))
    return out


def test_a_round_that_lost_a_node_publishes_nothing_to_difference(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    victim_index = 0
    victim = fed.nodes[victim_index]
    model, _ = _victim_model(victim)
    fed.coordinator.config = replace(fed.coordinator.config, publish_noise=0.0)
    assert fed.coordinator.run_round(None).finalized

    def offline(_node: NodeHandle, _stage: str, _record: dict[str, Any]) -> dict[str, Any]:
        raise ConnectionError("switched off")

    fed.replace(victim_index, offline)
    with contextlib.suppress(RoundFailed):
        fed.coordinator.run_round(None)  # an honest coordinator, after a dropout
    # An outsider: N_r·G_r − N_s·G_s, over any two published rounds, divided by n_victim.
    for vector_r, manifest_r in _published(fed):
        mine = manifest_r.update_of(victim.address)
        for vector_s, manifest_s in _published(fed):
            if mine is None or manifest_s.update_of(victim.address) is not None:
                continue
            estimate = (
                manifest_r.n_total * vector_r - manifest_s.n_total * vector_s
            ) / mine.n_samples
            assert not _is(estimate, model)
    assert len(_published(fed)) == 1
