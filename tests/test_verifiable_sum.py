"""A coordinator that publishes anything but the recomputed noisy sum gets no approval.

Real nodes (their stage handlers), the in-memory transport and the real contract on anvil.
The coordinator runs honest stages and then, at publication, swaps in another model or a
doctored transcript; every node recomputes the sum from the manifest's signed masked
vectors and reveals (``protocol.recompute``) before approving, and the audit runs the same
function, naming the round. Settings are derived by every node from the chain, so per-node
fixed-point codes are refused, and the noise is inside the sum: no exact sum exists.

Specifications (docs/trust.md, rule 9):
- a constant model, the previous round's model, the pre-forget model after a forget: no
  approval, the round does not finalize, and the audit fails naming the round;
- per-node fixed-point settings (the victim honest, the others clip 1, frac_bits 0): the
  others refuse, no sum; the same skewed code for everyone: refused by all;
- a masked vector changed after its signature, a wrong revealed seed in the transcript:
  the recomputation fails, no approval;
- a sender that skips its noise: the sum is still exactly what was uploaded (approved),
  and the published model still carries the other senders' noise;
- the noise: the same unchanged models in the same set republish identical bytes; a
  forget draws fresh noise for every sender; its scale is the chain's.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from node.stages import answer
from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.messages import SHARE, WireRecord
from protocol.model import model_bytes, vector_from_bytes
from protocol.noise import DEFAULT_NOISE_SCALE
from protocol.recompute import recompute_model
from tests.test_adversarial_coordinator import RogueCoordinator, _victim_model
from verifier.audit import audit

if TYPE_CHECKING:
    from coordinator.rounds import RoundState
    from protocol.manifest import RoundManifest
    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _publish_instead(
    fed: MemoryFederation, swap: Callable[[RoundManifest, bytes], tuple[RoundManifest, bytes]]
) -> None:
    """From now on the coordinator runs the honest stages, then publishes what ``swap``
    makes of the honest manifest and model bytes (re-stored by CID, hashes fixed up)."""
    coordinator = fed.coordinator
    honest = type(coordinator).publish_stage

    def publish(state: RoundState) -> None:
        honest(coordinator, state)
        assert state.manifest is not None
        manifest, model = swap(state.manifest, fed.store.get(state.manifest.global_model_cid))
        cid = fed.store.put(model)
        state.manifest = dataclasses.replace(
            manifest, global_model_cid=cid, global_model_hash=_hex(keccak256(model))
        )
        state.manifest_cid = fed.store.put(state.manifest.to_bytes())

    coordinator.publish_stage = publish  # type: ignore[method-assign]


def _approve_refusals(fed: MemoryFederation) -> list[str]:
    return [why for why in fed.transport.errors.values() if "not the sum" in why]


def _assert_no_approval_and_audit_names(fed: MemoryFederation, round_no: int) -> None:
    outcome_state = fed.chain.owner.round_state(round_no)
    assert outcome_state.approvals == 0 and not outcome_state.finalized
    report = audit(fed.chain.owner, fed.store)
    assert not report.ok
    failure = report.failure
    assert failure is not None and failure.round == round_no, report.lines()
    assert "not the sum of the round's masked updates" in failure.message


def test_an_honest_round_is_recomputed_bit_for_bit_by_nodes_and_audit(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized and outcome.manifest is not None
    published = fed.store.get(outcome.manifest.global_model_cid)
    assert model_bytes(recompute_model(outcome.manifest)) == published
    report = audit(fed.chain.owner, fed.store)
    assert report.ok, report.lines()
    line = report.rounds[0].line()
    assert "recomputed from 3 masked updates" in line and f"σ {DEFAULT_NOISE_SCALE}" in line


def test_a_constant_model_gets_no_approval_and_fails_the_audit(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    _publish_instead(
        fed,
        lambda m, model: (m, model_bytes(np.full(len(model) // 4, 0.123, dtype=np.float32))),
    )
    outcome = fed.coordinator.run_round(None)
    assert not outcome.finalized
    assert len(_approve_refusals(fed)) == 3
    _assert_no_approval_and_audit_names(fed, 1)


def test_the_previous_rounds_model_gets_no_approval(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    first = fed.coordinator.run_round(0)
    assert first.finalized and first.manifest is not None
    old = fed.store.get(first.manifest.global_model_cid)
    _publish_instead(fed, lambda m, model: (m, old))
    assert not fed.coordinator.run_round(None).finalized
    _assert_no_approval_and_audit_names(fed, 2)


def test_the_pre_forget_model_after_a_forget_gets_no_approval(
    memory_federation: MemoryFederation,
) -> None:
    """The coordinator kept the model from before the forget and publishes it in the
    forget's round: the owner certified, but nobody approves a model still holding the
    record, and the request never completes."""
    fed = memory_federation
    before = fed.coordinator.run_round(None)
    assert before.finalized and before.manifest is not None
    pre_forget = fed.store.get(before.manifest.global_model_cid)
    owner = fed.nodes[1]
    with owner.runtime.sisa() as node:
        record_id = node.store.record_ids()[3]
    fed.db.submit_forget(record_id, fed.commitment(record_id), request_id="forget-kept")
    _publish_instead(fed, lambda m, model: (m, pre_forget))
    fed.coordinator.process_forgets()
    assert fed.db.get_forget("forget-kept").state != "completed"
    with owner.runtime.sisa() as node:
        assert record_id not in node.store.record_ids()  # the owner did forget
    _assert_no_approval_and_audit_names(fed, 2)


def _transcript_edit(
    edit: Callable[[dict[str, Any]], None],
) -> Callable[[RoundManifest, bytes], tuple[RoundManifest, bytes]]:
    def swap(m: RoundManifest, model: bytes) -> tuple[RoundManifest, bytes]:
        transcript = json.loads(json.dumps(m.transcript))
        edit(transcript)
        return dataclasses.replace(m, transcript=transcript), model

    return swap


def test_a_masked_vector_changed_after_its_signature_fails_the_recomputation(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation

    def tamper(transcript: dict[str, Any]) -> None:
        entry = next(iter(transcript["masked"].values()))
        data = bytearray(base64.b64decode(entry["data"]))
        data[-1] ^= 1  # one bit of the last value
        entry["data"] = base64.b64encode(bytes(data)).decode()

    _publish_instead(fed, _transcript_edit(tamper))
    assert not fed.coordinator.run_round(None).finalized
    assert any("not signed by it" in why for why in fed.transport.errors.values())
    report = audit(fed.chain.owner, fed.store)
    assert report.failure is not None and report.failure.round == 1
    assert "masked vector" in report.failure.message


def test_a_wrong_revealed_seed_fails_the_recomputation(
    memory_federation: MemoryFederation,
) -> None:
    """A reveal re-signed by its own node cannot be forged by the coordinator; so the
    coordinator drops one reveal and duplicates another's bytes under its name: the
    signature check and the seed commitments both stand in the way."""
    fed = memory_federation

    def swap_reveal(transcript: dict[str, Any]) -> None:
        first, second = list(transcript["reveals"])[:2]
        transcript["reveals"][first] = transcript["reveals"][second]

    _publish_instead(fed, _transcript_edit(swap_reveal))
    assert not fed.coordinator.run_round(None).finalized
    report = audit(fed.chain.owner, fed.store)
    assert report.failure is not None and report.failure.round == 1
    assert "reveal" in report.failure.message


def test_a_revealed_share_off_its_polynomial_fails_the_recomputation(
    memory_federation: MemoryFederation,
) -> None:
    """A node that reveals a wrong share (signed by itself): every verifier's interpolated
    seed misses the sender's commitment, so no model comes out of the transcript."""
    fed = memory_federation
    liar = fed.nodes[2]

    def wrong_share(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
        from protocol.commitments import sign_leaf
        from protocol.messages import AGGREGATE
        from protocol.secure_sum import Reveal

        reply = answer(node.runtime, stage, record)
        if stage != AGGREGATE:
            return reply
        blob = reply["blob:reveal"]
        assert isinstance(blob, bytes)
        revealed = Reveal.from_bytes(blob)
        values = revealed.values.copy()
        values[0] = (values[0] + 1) % ((1 << 31) - 1)
        data = dataclasses.replace(revealed, values=values).to_bytes()
        header = json.loads(str(reply["header"]))
        header["signature"] = sign_leaf(keccak256(data), node.runtime.eth_key)
        return {**reply, "header": json.dumps(header), "blob:reveal": data}

    fed.replace(2, wrong_share)
    with pytest.raises(ProtocolError):
        fed.coordinator.run_round(None)
    assert fed.chain.owner.last_round() == 0, f"{liar.address}'s lie published nothing"


def test_per_node_fixed_point_settings_are_refused(memory_federation: MemoryFederation) -> None:
    """The attack that handed the coordinator one node's exact model: the victim gets the
    honest code, every other node clip 1 and frac_bits 0, so their inputs round to 0 and
    the "sum" is the victim's model. Every node derives the code from the chain: the
    others refuse, and nothing is summed."""
    fed = memory_federation
    rogue = RogueCoordinator(fed)
    victim, *peers = fed.nodes
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    n_total = sum(c.n_samples for c in committed.values())
    roster = rogue.chain_roster(round_no)
    senders = sorted(committed, key=str.lower)
    honest_bits = rogue.frac_bits
    envelopes: dict[str, dict[str, bytes]] = {}
    agreements: dict[str, str] = {}
    for node in fed.nodes:
        if node is victim:
            rogue.clip, rogue.frac_bits_override = 8.0, honest_bits
        else:
            rogue.clip, rogue.frac_bits_override = 1.0, 0
        got, signed = rogue.share(
            [node], roster, committed, {node.address: n_total}, {node.address: senders}
        )
        envelopes.update(got)
        agreements.update(signed)
    assert set(envelopes) == {victim.address}
    refused = {
        who for who, stage, why in rogue.refusals if stage == SHARE and "every node derives" in why
    }
    assert refused == {p.address for p in peers}
    assert rogue.aggregate(victim, roster, senders, envelopes, agreements) is None


def test_a_skewed_code_for_every_node_alike_is_refused(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    rogue = RogueCoordinator(fed, frac_bits_override=4)
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    n_total = sum(c.n_samples for c in committed.values())
    senders = sorted(committed, key=str.lower)
    envelopes, _ = rogue.share(
        fed.nodes,
        rogue.chain_roster(round_no),
        committed,
        {n.address: n_total for n in fed.nodes},
        {n.address: senders for n in fed.nodes},
    )
    assert envelopes == {}


def test_a_sender_that_skips_its_noise_only_loses_its_own_protection(
    memory_federation: MemoryFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sum is still exactly what was uploaded, so every node approves; the published
    model carries the two other senders' noise (2/3 of the variance)."""
    fed = memory_federation
    quiet = fed.nodes[0].address
    import protocol.noise as noise

    honest = noise.sender_noise

    def skipping(key: bytes, context: bytes, d: int, **kw: Any) -> Any:
        out = honest(key, context, d, **kw)
        return out * 0 if key == noise.node_noise_key(_key_of(fed, quiet)) else out

    monkeypatch.setattr(noise, "sender_noise", skipping)
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized and outcome.manifest is not None
    published = np.asarray(
        vector_from_bytes(fed.store.get(outcome.manifest.global_model_cid)), dtype=np.float64
    )
    exact = _exact_average(fed.nodes)
    sigma = fed.chain.owner.noise_scale()
    spread = float(np.std(published - exact))
    assert 0.6 * sigma < spread < 0.95 * sigma  # √(2/3)·σ ≈ 0.82σ, never 0
    assert audit(fed.chain.owner, fed.store).ok


def _key_of(fed: MemoryFederation, address: str) -> bytes:
    node = next(n for n in fed.nodes if n.address == address)
    return bytes.fromhex(node.runtime.eth_key.removeprefix("0x"))


def _exact_average(nodes: list[NodeHandle]) -> np.ndarray[Any, Any]:
    models = [_victim_model(n) for n in nodes]
    total = np.sum([n * w for w, n in models], axis=0)
    return np.asarray(total / sum(n for _, n in models), dtype=np.float64)


def test_noise_is_the_chains_scale_and_no_exact_sum_is_published(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    sigma = fed.chain.owner.noise_scale()
    assert sigma > 0
    outcome = fed.coordinator.run_round(None)
    assert outcome.manifest is not None
    published = np.asarray(
        vector_from_bytes(fed.store.get(outcome.manifest.global_model_cid)), dtype=np.float64
    )
    spread = float(np.std(published - _exact_average(fed.nodes)))
    assert 0.85 * sigma < spread < 1.15 * sigma


def test_unchanged_models_republish_identical_bytes_and_a_forget_draws_fresh_noise(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    first, again = (fed.coordinator.run_round(None) for _ in range(2))
    assert first.info["global_model_hash"] == again.info["global_model_hash"]
    before = vector_from_bytes(fed.store.get(again.info["global_model_cid"])).astype(np.float64)
    exact_before = _exact_average(fed.nodes)
    owner = fed.nodes[1]
    with owner.runtime.sisa() as node:
        record_id = node.store.record_ids()[3]
    fed.db.submit_forget(record_id, fed.commitment(record_id), request_id="forget-fresh")
    assert fed.coordinator.process_forgets()
    request = fed.db.get_forget("forget-fresh")
    assert request.state == "completed"
    after_info = fed.db.get_round(request.round or 0)
    after = vector_from_bytes(fed.store.get(after_info["global_model_cid"])).astype(np.float64)
    exact_after = _exact_average(fed.nodes)
    old_noise, new_noise = before - exact_before, after - exact_after
    assert abs(float(np.corrcoef(old_noise, new_noise)[0, 1])) < 0.2


def test_a_noise_scale_only_the_owner_sets_within_the_headroom(
    memory_federation: MemoryFederation,
) -> None:
    from protocol.errors import LedgerError

    fed = memory_federation
    assert fed.chain.owner.noise_scale() == DEFAULT_NOISE_SCALE
    with pytest.raises(LedgerError):
        fed.chain.coordinator.set_noise_scale(0.0)
    with pytest.raises(LedgerError):
        fed.chain.owner.set_noise_scale(0.6)
    fed.chain.owner.set_noise_scale(0.1)
    assert fed.chain.owner.noise_scale() == 0.1


def test_a_request_naming_forged_commitments_is_refused(
    memory_federation: MemoryFederation,
) -> None:
    """Made-up commitments would have an unchanged model draw fresh noise every round, so
    that averaging rounds removes it: a node shares only under commitments its senders
    signed for this round."""
    fed = memory_federation
    rogue = RogueCoordinator(fed)
    round_no = rogue.next_round()
    committed = rogue.commit(round_no)
    victim = fed.nodes[0]
    other = fed.nodes[1].address
    committed[other] = dataclasses.replace(committed[other], model_hash="0x" + "11" * 32)
    senders = sorted(committed, key=str.lower)
    n_total = sum(c.n_samples for c in committed.values())
    envelopes, _ = rogue.share(
        [victim],
        rogue.chain_roster(round_no),
        committed,
        {victim.address: n_total},
        {victim.address: senders},
    )
    assert envelopes == {}
    assert any("not signed by it" in why for _, _, why in rogue.refusals)
