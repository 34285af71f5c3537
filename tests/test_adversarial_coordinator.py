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
  two published global models never difference to one node's model;
- a sender claimed lost after its masked vector arrived: the others reveal its pair
  seeds, never its self mask, and the vector stays noise;
- a roster with a swapped key (the coordinator's own): refused before any masking;
- a masked vector altered in transit, or a node revealing a wrong share: the round
  fails, no model is proposed.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from coordinator.rounds import RoundFailed
from node.stages import answer
from protocol import masking, shamir
from protocol.canonical import canonical_json
from protocol.commitments import sign_leaf
from protocol.envelope import generate_private_key, public_key_bytes
from protocol.epoch import chain_epoch
from protocol.errors import ProtocolError
from protocol.field import FixedPoint, P
from protocol.hashing import keccak256
from protocol.manifest import NodeUpdate, RoundManifest
from protocol.messages import AGGREGATE, SHARE, TRAIN, TrainReply, TrainRequest, WireRecord
from protocol.model import vector_from_bytes
from protocol.secure_sum import (
    MaskedInput,
    Member,
    Reveal,
    Roster,
    default_threshold,
    reconstruct_sum,
    reveal_layout,
    round_fixed_point,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.round_fixtures import MakeFederation, MemoryFederation, NodeHandle

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
    frac_bits_override: int | None = None
    """A fixed-point code of the coordinator's choosing; None: the one nodes derive."""
    refusals: list[tuple[str, str, str]] = field(default_factory=list)
    masked: dict[str, MaskedInput] = field(default_factory=dict)
    """Every masked vector a node uploaded to it, by sender."""

    def __post_init__(self) -> None:
        # No noise inside the sum: every attack here must fail by the nodes' checks alone,
        # never because the noise hid the model it would have recovered.
        if self.fed.chain.owner.noise_scale() != 0:
            self.fed.chain.owner.set_noise_scale(0.0)

    def ask(self, node: NodeHandle, stage: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """One node's answer to a record, or None (its refusal is kept)."""
        replies = self.fed.transport.exchange(stage, {node.flower_id: record}, 30.0)
        if node.flower_id not in replies:
            self.refusals.append((node.address, stage, self.fed.transport.errors[node.flower_id]))
            return None
        return replies[node.flower_id]

    def next_round(self) -> int:
        return self.fed.chain.owner.last_round() + 1

    @property
    def frac_bits(self) -> int:
        """The code's fractional bits: the chain-derived one unless overridden."""
        if self.frac_bits_override is not None:
            return self.frac_bits_override
        roster = self.fed.chain.owner.roster()
        return round_fixed_point(len(roster), self.fed.chain.owner.noise_scale()).frac_bits

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
            epoch="0x" + chain_epoch(self.fed.chain.owner.roster()).hex(),
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
            updates = [
                asdict(
                    NodeUpdate(
                        a,
                        committed[a].model_hash,
                        committed[a].n_samples,
                        committed[a].signature,
                        [
                            "0x" + committed[a].slice_roots[i : i + 32].hex()
                            for i in range(0, len(committed[a].slice_roots), 32)
                        ],
                    )
                )
                for a in senders.get(node.address, [node.address])
                if a in committed
            ]
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
                record = {
                    "header": json.dumps(variant),
                    "blob:roster": roster.to_bytes(),
                    "blob:commitments": canonical_json(updates),
                }
                reply = self.ask(node, SHARE, record)
                if reply is not None:
                    self.masked[node.address] = MaskedInput.from_bytes(reply["blob:masked"])
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
    ) -> Reveal | None:
        """Ask ``node`` to reveal for ``senders``' envelopes; with the agreements, or without
        them for nodes that do not know that field."""
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
                return Reveal.from_bytes(reply["blob:reveal"])
        return None

    def reconstruct(
        self, roster: Roster, summed: list[Reveal | None]
    ) -> np.ndarray[Any, Any] | None:
        """The weighted sum from the masked vectors and the reveals it got, if it can."""
        reveals = [s for s in summed if s is not None]
        if len(reveals) < roster.threshold:
            return None
        fixed_point = FixedPoint(self.clip, self.frac_bits)
        masked = {s: self.masked[s] for s in reveals[0].senders if s in self.masked}
        try:
            total = reconstruct_sum(roster, masked, reveals, fixed_point)
        except ProtocolError:
            return None
        return np.asarray(total, dtype=np.float64)


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
    fed.chain.owner.set_noise_scale(0.0)
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
    fed.chain.owner.set_noise_scale(0.0)
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


# -- masked aggregation: the masked vector, the seeds and the keys --------------------------


def test_a_sender_claimed_lost_after_uploading_stays_masked(
    memory_federation_of: MakeFederation,
) -> None:
    """The coordinator keeps the victim's masked vector, tells the three others the victim
    was lost mid-share (they may narrow: new models, nothing summed yet) and collects
    their reveals, which carry the victim's pair seeds. It then asks every node to reveal
    over the full set all signed first: the victim does (one share of its own self mask),
    the peers refuse a second set. Without t − 1 colluders it never holds t shares of the
    victim's self mask, so the masked vector stays noise."""
    fed = memory_federation_of(4)  # t = 3
    rogue = RogueCoordinator(fed)
    victim, *peers = fed.nodes
    model, n_victim = _victim_model(victim)
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    n_total = sum(c.n_samples for c in committed.values())
    roster = rogue.chain_roster(round_no)
    everyone = sorted(committed, key=str.lower)
    totals = {n.address: n_total for n in fed.nodes}
    envelopes, signed_all = rogue.share(
        fed.nodes, roster, committed, totals, {n.address: everyone for n in fed.nodes}
    )
    victim_masked = rogue.masked[victim.address]
    without = sorted((p.address for p in peers), key=str.lower)
    _, narrowed = rogue.share(peers, roster, committed, totals, {p.address: without for p in peers})
    assert len(narrowed) == 3  # rule 6: an honest-looking loss mid-share
    reveals = [rogue.aggregate(p, roster, without, envelopes, narrowed) for p in peers]
    assert all(r is not None for r in reveals)
    # Then it asks everyone to reveal over the full set they all signed first.
    full = [rogue.aggregate(n, roster, everyone, envelopes, signed_all) for n in fed.nodes]
    assert full[0] is not None and full[1:] == [None, None, None]
    # What the peers revealed: shares of the victim's pair seeds, none of its self mask.
    layout = reveal_layout(tuple(without), tuple(everyone))
    assert (victim.address, None) not in layout
    assert all(peer == victim.address for _, peer in layout if peer is not None)
    # Every seed the coordinator can interpolate, applied to the victim's masked vector.
    held = [r for r in reveals if r is not None]
    seeds = shamir.reconstruct([r.x for r in held], [r.values for r in held])
    d = victim_masked.values.shape[0]
    estimate = victim_masked.values.copy()
    for (owner, peer), digits in zip(layout, seeds.reshape(-1, masking.SEED_DIGITS), strict=True):
        if peer == victim.address:
            mask = masking.expand(masking.field_to_seed(digits), d)
            added = (P - mask) % P if owner.lower() < victim.address.lower() else mask
            estimate = (estimate - added) % P
    # Shares of the victim's self mask: from the reveals over the full set it got, if t.
    self_shares = []
    for r in full:
        if r is not None:
            where = reveal_layout(r.senders, r.masked_with).index((victim.address, None))
            self_shares.append((r.x, r.values[where * 9 : (where + 1) * 9]))
    if len(self_shares) >= roster.threshold:
        digits = shamir.reconstruct([x for x, _ in self_shares], [v for _, v in self_shares])
        estimate = (estimate - masking.expand(masking.field_to_seed(digits), d)) % P
    fixed_point = FixedPoint(rogue.clip, rogue.frac_bits)
    assert not _is(fixed_point.dequantize(estimate) * n_total / n_victim, model)
    # The honest sum over the three still comes out, weighted as agreed.
    assert rogue.reconstruct(roster, list(reveals)) is not None


def test_a_swapped_key_in_the_roster_is_refused_before_anything_is_masked(
    rogue: RogueCoordinator,
) -> None:
    """Pair masks come from the keys the chain registered: a coordinator that announces
    its own key for one node (to compute that node's pair seeds) gets no masked vector."""
    fed = rogue.fed
    _, peer, _ = fed.nodes
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    n_total = sum(c.n_samples for c in committed.values())
    honest = rogue.chain_roster(round_no)
    mine = public_key_bytes(generate_private_key())
    swapped = Roster(
        honest.federation_id,
        honest.round,
        honest.threshold,
        tuple(
            replace(m, public_key=mine) if m.node_id == peer.address else m for m in honest.members
        ),
    )
    everyone = sorted(committed, key=str.lower)
    envelopes, _ = rogue.share(
        fed.nodes,
        swapped,
        committed,
        {n.address: n_total for n in fed.nodes},
        {n.address: everyone for n in fed.nodes},
    )
    assert envelopes == {} and rogue.masked == {}
    assert sum("registered keys" in why for _, _, why in rogue.refusals) >= len(fed.nodes)


def _tampering(blob: str) -> Callable[[NodeHandle, str, WireRecord], WireRecord]:
    """A node endpoint whose ``blob`` field is altered on its way to the coordinator."""

    def endpoint(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
        reply = answer(node.runtime, stage, record)
        if f"blob:{blob}" in reply:
            data = bytearray(reply[f"blob:{blob}"])  # type: ignore[arg-type]
            data[-3] ^= 0x01
            reply[f"blob:{blob}"] = bytes(data)
        return reply

    return endpoint


def test_a_masked_vector_altered_in_transit_fails_the_round(
    memory_federation: MemoryFederation, caplog: pytest.LogCaptureFixture
) -> None:
    fed = memory_federation
    fed.replace(1, _tampering("masked"))
    with pytest.raises(RoundFailed, match="2 nodes shared, need all 3"):
        fed.coordinator.run_round(None)
    assert "masked vector is not its own, signed by it" in caplog.text
    assert fed.chain.owner.last_round() == 0, "no model built on an altered vector"


def test_a_node_revealing_a_wrong_share_fails_the_round(
    memory_federation: MemoryFederation,
) -> None:
    """A node that re-signs an altered reveal passes every signature check; the seeds'
    consistency and commitments still catch it, and nothing is proposed."""
    fed = memory_federation

    def liar(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
        reply = answer(node.runtime, stage, record)
        if stage == AGGREGATE:
            revealed = Reveal.from_bytes(reply["blob:reveal"])  # type: ignore[arg-type]
            revealed.values[0] = (revealed.values[0] + 1) % P
            data = revealed.to_bytes()
            header = json.loads(str(reply["header"]))
            header["signature"] = sign_leaf(keccak256(data), node.runtime.eth_key)
            reply = {**reply, "header": json.dumps(header), "blob:reveal": data}
        return reply

    fed.replace(2, liar)
    with pytest.raises(ProtocolError, match=r"corrupt|commitment"):
        fed.coordinator.run_round(None)
    assert fed.chain.owner.last_round() == 0
