"""Whole rounds in one process: the coordinator's stages against real node handlers.

A real chain (one anvil per session) and the nodes' real stage handlers, connected by the
in-memory transport. Dropouts and forged messages are injected by replacing what a node
answers at one stage.

Specifications:
- a round with every node finalizes, and each stage is recorded as it happened;
- a round survives one dropout after every sender shared and agreed (n=3, t=2), and fails
  cleanly with fewer than three senders (a dropout before the sum, with three nodes) or
  below t; back with the same nodes, the same round number completes;
- a malformed, impersonating or forged reply at any stage is a dropout, never a crash;
- a node refuses a malformed request at any stage, before touching anything;
- a forget request completes: on chain, certified by the owner, in the next round.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from coordinator.rounds import RoundFailed
from node.stages import answer
from protocol.errors import ProtocolError
from protocol.ledger import ForgetState
from protocol.messages import AGGREGATE, APPROVE, SHARE, TRAIN, WireRecord

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

STAGES = [TRAIN, SHARE, AGGREGATE, APPROVE]


def _fail_at(stage: str):  # type: ignore[no-untyped-def]
    def endpoint(node: NodeHandle, asked: str, record: WireRecord) -> WireRecord:
        if asked == stage:
            raise ConnectionError("node went away")
        return answer(node.runtime, asked, record)

    return endpoint


def _forge_at(stage: str, forge):  # type: ignore[no-untyped-def]
    def endpoint(node: NodeHandle, asked: str, record: WireRecord) -> WireRecord:
        reply = answer(node.runtime, asked, record)
        return forge(reply) if asked == stage else reply

    return endpoint


def _edit_header(**changes: object):  # type: ignore[no-untyped-def]
    def forge(reply: WireRecord) -> WireRecord:
        header = json.loads(reply["header"])
        header.update(changes)
        return {**reply, "header": json.dumps({k: v for k, v in header.items() if v != "DEL"})}

    return forge


def test_round_with_every_node_finalizes(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    everyone = sorted((n.address for n in fed.nodes), key=str.lower)
    assert outcome.info["responders"] == {
        "train": everyone,
        "share": everyone,
        "aggregate": everyone,
    }
    assert outcome.info["dropped"] == []
    assert set(outcome.info["approvals"]) == set(everyone)
    assert fed.chain.owner.round_state(outcome.round).finalized
    assert fed.db.get_round(outcome.round)["state"] == "finalized"
    assert [stage for stage, _ in fed.nodes[0].seen] == STAGES


def test_round_is_proposed_and_approved_in_one_transaction(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    assert set(outcome.info["approvals"].values()) == {outcome.info["propose_tx"]}
    events = fed.chain.owner.events(["RoundProposed", "RoundApprovedBy", "RoundApproved"])
    assert [e.name for e in events] == ["RoundProposed", "RoundApprovedBy"]
    assert {e.tx_hash for e in events} == {outcome.info["propose_tx"]}


def test_a_node_whose_signature_is_withheld_approves_the_round_by_itself(
    memory_federation: MemoryFederation,
) -> None:
    """A coordinator leaving a signature out (here: never receiving it) silences nobody: the
    node, asked again or on its own, finds the round on chain and approves it itself."""
    fed = memory_federation
    asked: list[WireRecord] = []

    def unsigned(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
        reply = answer(node.runtime, stage, record)
        if stage != APPROVE:
            return reply
        asked.append(record)
        forged: WireRecord = _edit_header(signature=None)(reply)
        return forged

    fed.replace(2, unsigned)
    outcome = fed.coordinator.run_round(None)
    left_out = fed.nodes[2].address
    assert outcome.finalized and left_out not in outcome.info["approvals"]
    assert not fed.chain.owner.has_approved(outcome.round, left_out)

    answer(fed.nodes[2].runtime, APPROVE, asked[0])
    assert fed.chain.owner.has_approved(outcome.round, left_out)
    assert fed.chain.owner.round_state(outcome.round).approvals == 3
    approved = fed.chain.owner.events(["RoundApproved"])
    assert [e.args["node"] for e in approved] == [left_out]


@pytest.mark.parametrize("stage", [AGGREGATE, APPROVE])
def test_round_survives_one_dropout_after_every_sender_agreed(
    memory_federation: MemoryFederation, stage: str
) -> None:
    fed = memory_federation
    victim = fed.nodes[1].address
    fed.replace(1, _fail_at(stage))
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    assert victim in outcome.info["responders"]["share"]
    assert (victim in outcome.info["dropped"]) == (stage == AGGREGATE)
    assert victim not in outcome.info["approvals"]
    assert len(outcome.info["approvals"]) == 2


@pytest.mark.parametrize("stage", [TRAIN, SHARE])
def test_round_with_a_dropout_before_the_sum_fails_with_three_nodes(
    memory_federation: MemoryFederation, stage: str
) -> None:
    fed = memory_federation
    fed.replace(1, _fail_at(stage))
    with pytest.raises(RoundFailed, match=r"2 nodes (committed|shared), need"):
        fed.coordinator.run_round(None)
    assert fed.chain.owner.last_round() == 0
    # Back with the same nodes, the same round number completes (retried stages repeat).
    fed.replace(1, lambda node, asked, record: answer(node.runtime, asked, record))
    assert fed.coordinator.run_round(None).finalized


@pytest.mark.parametrize("stage", [TRAIN, SHARE, AGGREGATE])
def test_round_below_threshold_fails_cleanly(
    memory_federation: MemoryFederation, stage: str
) -> None:
    fed = memory_federation
    fed.replace(1, _fail_at(stage))
    fed.replace(2, _fail_at(stage))
    with pytest.raises(RoundFailed):
        fed.coordinator.run_round(None)
    assert fed.chain.owner.last_round() == 0
    # The serve loop logs it and goes on.
    assert fed.coordinator._guarded(lambda: fed.coordinator.run_round(None)) is True


GARBAGE = {
    "missing model_hash": (TRAIN, _edit_header(model_hash="DEL")),
    "extra field": (TRAIN, _edit_header(admin=True)),
    "ill-typed n_samples": (TRAIN, _edit_header(n_samples="many")),
    "forged signature": (TRAIN, _edit_header(signature="0x" + "1b" * 65)),
    "another node's address": (TRAIN, _edit_header(address="0x" + "ab" * 20)),
    "not a record": (TRAIN, lambda _reply: {"garbage": b"\x00"}),
    "share: missing envelopes": (SHARE, lambda r: {"header": r["header"]}),
    "share: impersonation": (SHARE, _edit_header(address="0x" + "ab" * 20)),
    "share: forged set signature": (SHARE, _edit_header(signature="0x" + "1b" * 65)),
    "share: unsigned": (SHARE, _edit_header(signature="DEL")),
    "share: extra envelope": (SHARE, lambda r: {**r, "blob:envelopes:0x" + "ab" * 20: b"x"}),
    "aggregate: unsigned": (AGGREGATE, _edit_header(signature="DEL")),
    "aggregate: bad signature": (AGGREGATE, _edit_header(signature="0x" + "00" * 65)),
    "aggregate: not a reveal": (AGGREGATE, lambda r: {**r, "blob:reveal": b"junk"}),
    "approve: ill-typed accuracy": (APPROVE, _edit_header(accuracy="high")),
    "approve: impersonation": (APPROVE, _edit_header(address="0x" + "ab" * 20)),
    # A bad signature would revert the whole proposal: the coordinator drops it first.
    "approve: forged signature": (APPROVE, _edit_header(signature="0x" + "1b" * 65)),
    "approve: zero signature": (APPROVE, _edit_header(signature="0x" + "00" * 65)),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_malformed_reply_is_a_dropout_not_a_crash(
    memory_federation: MemoryFederation, case: str
) -> None:
    fed = memory_federation
    stage, forge = GARBAGE[case]
    liar = fed.nodes[2].address
    fed.replace(2, _forge_at(stage, forge))
    if stage in (TRAIN, SHARE):  # three nodes: the liar leaves fewer than three senders
        with pytest.raises(RoundFailed, match=r"2 nodes (committed|shared), need"):
            fed.coordinator.run_round(None)
        return
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    assert liar not in outcome.info["approvals"]
    if stage == AGGREGATE:
        assert liar in outcome.info["dropped"]


def test_every_node_sending_garbage_fails_the_round_not_the_loop(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    for i in range(3):
        fed.replace(i, _forge_at(TRAIN, _edit_header(model_hash="DEL")))
    assert fed.coordinator._guarded(lambda: fed.coordinator.run_round(None)) is True
    assert any("0 nodes committed" in line for line in fed.lines)


def _bad_requests(record: WireRecord) -> dict[str, WireRecord]:
    header = json.loads(record["header"])
    first = sorted(header)[0]
    return {
        "missing field": {
            **record,
            "header": json.dumps({k: v for k, v in header.items() if k != first}),
        },
        "extra field": {**record, "header": json.dumps({**header, "threshold": 1})},
        "ill-typed round": {**record, "header": json.dumps({**header, "round": "1"})},
        "smuggled blob": {**record, "blob:extra": b"x"},
        "no header": {k: v for k, v in record.items() if k != "header"},
    }


def test_node_refuses_malformed_request_at_every_stage(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    fed.coordinator.run_round(None)
    node = fed.nodes[0]
    requests = dict(node.seen)
    assert set(requests) == set(STAGES)
    approvals_before = fed.chain.owner.round_state(1).approvals
    for stage, record in requests.items():
        for bad in _bad_requests(record).values():
            with pytest.raises(ProtocolError):
                answer(node.runtime, stage, bad)
    with pytest.raises(ProtocolError, match="unknown stage"):
        answer(node.runtime, "train.admin", requests[TRAIN])
    assert fed.chain.owner.round_state(1).approvals == approvals_before


def test_node_refuses_another_federation(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    request = {
        "header": json.dumps(
            {
                "federation_id": "elsewhere",
                "round": 1,
                "through_slice": None,
                "shards": 2,
                "slices": 4,
                "epoch": "0x" + "00" * 32,
                "forget_requests": [],
            }
        )
    }
    with pytest.raises(ProtocolError, match="federation"):
        answer(fed.nodes[0].runtime, TRAIN, request)


def test_forget_request_completes_in_the_next_round(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[1]
    with owner.runtime.sisa() as node:
        record_id = node.store.record_ids()[3]
    commitment = fed.commitment(record_id)
    fed.db.submit_forget(record_id, commitment, request_id="forget-1")

    assert fed.coordinator.process_forgets()
    request = fed.db.get_forget("forget-1")
    assert request.state == "completed", request
    assert request.node_address == owner.address
    with owner.runtime.sisa() as node:
        assert record_id not in node.store.record_ids()
    from protocol.hashing import keccak256

    status = fed.chain.owner.forget_state(keccak256(b"forget-1"))
    assert status.state == ForgetState.COMPLETED
    round_info = fed.db.get_round(request.round or 0)
    assert round_info["forget_requests"] == ["forget-1"]
    assert not fed.coordinator.process_forgets()


def test_forget_of_a_record_nobody_holds_fails(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    commitment = fed.commitment("nobody-has-this")
    fed.db.submit_forget("nobody-has-this", commitment, request_id="forget-2")
    fed.coordinator.process_forgets()
    assert fed.db.get_forget("forget-2").state == "failed"


def test_node_with_another_layout_refuses_the_round(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    fed.coordinator.config = replace(fed.coordinator.config, slices=8)
    with pytest.raises(RoundFailed, match="0 nodes committed"):
        fed.coordinator.run_round(None)
    reasons = set(fed.transport.errors.values())
    assert len(fed.transport.errors) == 3
    assert all("2 shard(s) × 4 slices, the federation 2 × 8" in r for r in reasons), reasons
    assert all("re-ingest with --federation fed-test --shards 2 --slices 8" in r for r in reasons)
