"""A node acts on what the chain records, not on what the coordinator tells it.

Real chain, real node stage handlers, the in-memory transport; the coordinator misbehaves.

Specifications:
- a node approves only the proposal on chain: a coordinator that shows the nodes one model
  and proposes another gets no approval (their signatures of the shown model revert the
  signed proposal; asked again, they refuse the other one), so the round never finalizes;
- a node deletes nothing for a forget request that is not on chain, still open, naming it
  as the owner, with the commitment of the record it holds;
- record ids of a forget request go to the owner node only, never to the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from node.stages import answer
from protocol.epoch import chain_epoch
from protocol.hashing import keccak256
from protocol.ledger import Ledger, TxResult
from protocol.messages import TRAIN, ForgetEntry, TrainReply, TrainRequest
from tests.records_proofs import finalize_next_round, request_committed

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]


class SwappingLedger:
    """The coordinator's ledger, except that it proposes another model than it shows."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.signed_attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def propose_round(
        self, round_number: int, _hash: bytes, model_cid: str, root: bytes, manifest: str
    ) -> TxResult:
        return self._ledger.propose_round(
            round_number, keccak256(b"another model"), model_cid, root, manifest
        )

    def propose_round_signed(
        self,
        round_number: int,
        _hash: bytes,
        model_cid: str,
        root: bytes,
        manifest: str,
        signatures: dict[str, str],
    ) -> TxResult:
        """The nodes' signatures of the model shown, carried with another model's proposal."""
        self.signed_attempts += 1
        return self._ledger.propose_round_signed(
            round_number, keccak256(b"another model"), model_cid, root, manifest, signatures
        )


def test_nodes_do_not_approve_a_model_other_than_the_one_on_chain(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    swapping = SwappingLedger(fed.chain.coordinator)
    fed.coordinator.ledger = swapping  # type: ignore[assignment]
    outcome = fed.coordinator.run_round(None)
    # The signatures of the shown model made the swapped signed proposal revert; proposed
    # alone, the swapped model is then refused by every node it asks again.
    assert swapping.signed_attempts == 1
    assert not outcome.finalized
    assert fed.chain.owner.round_state(outcome.round).approvals == 0
    refusals = list(fed.transport.errors.values())
    assert len(refusals) == 3 and all("not the proposal on chain" in r for r in refusals)


def _held_record(node: NodeHandle, index: int = 3) -> str:
    with node.runtime.sisa() as sisa:
        return sisa.store.record_ids()[index]


def _train(fed: MemoryFederation, node: NodeHandle, request_id: str, record_id: str) -> TrainReply:
    request = TrainRequest(
        federation_id=fed.federation_id,
        round=1,
        through_slice=None,
        shards=2,
        slices=4,
        epoch="0x" + chain_epoch(fed.chain.owner.roster()).hex(),
        forget_requests=[ForgetEntry(request_id=request_id, record_id=record_id)],
    )
    return TrainReply.from_record(answer(node.runtime, TRAIN, request.to_record()))


@pytest.mark.parametrize("opened", ["never", "for another record", "naming another node"])
def test_a_node_deletes_nothing_for_a_forget_request_the_chain_does_not_authorise(
    memory_federation: MemoryFederation, opened: str
) -> None:
    # Attack: the coordinator slips a forget into a train request that the chain does not
    # back; the node must keep the record (and its models) as they are.
    fed = memory_federation
    victim, other = fed.nodes[1], fed.nodes[2]
    record_id = _held_record(victim)
    chain_id = keccak256(b"made-up")
    if opened != "never":
        finalize_next_round(fed.chain)
    if opened == "for another record":
        other_record = fed.record_key.commitment(_held_record(victim, 4))
        rt = victim.runtime
        request_committed(fed.chain, chain_id, other_record, rt.ledger, rt.eth_key)
    elif opened == "naming another node":  # which committed to a copy of the record
        commitment = fed.record_key.commitment(record_id)
        rt = other.runtime
        request_committed(fed.chain, chain_id, commitment, rt.ledger, rt.eth_key)
    with victim.runtime.sisa() as sisa:  # trained for the federation's roster, as in a round
        sisa.enter_epoch(chain_epoch(fed.chain.owner.roster()))
        sisa.train()
        before = sisa.model().hash_hex
    reply = _train(fed, victim, "made-up", record_id)
    assert reply.forget_results == []
    assert reply.model_hash == before
    with victim.runtime.sisa() as sisa:
        assert record_id in sisa.store.record_ids()


def test_record_ids_go_to_the_owner_node_only(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[1]
    record_id = _held_record(owner)
    fed.db.submit_forget(record_id, fed.commitment(record_id), "forget-1")
    for node in fed.nodes:
        node.seen.clear()
    assert fed.coordinator.process_forgets()
    assert fed.db.get_forget("forget-1").state == "completed"
    for node in fed.nodes:
        trains = [record for stage, record in node.seen if stage == TRAIN]
        assert trains, node.address
        named = any(record_id in str(record) for record in trains)
        assert named == (node is owner), node.address
