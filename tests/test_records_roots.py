"""A forget request can name a node only for a record under the node's signed records root.

Real node handlers over the in-memory transport, the real contract on anvil.

Specifications (docs/rounds.md "Forget requests", docs/messages.md "RecordsRoot"):
- a train reply whose records root does not check (signed by another key, records out of
  order, a certification count other than the chain's) is left out of the round: a node
  cannot hold records no request could name;
- a request the owner's newest finalized root cannot back (the owner certified a forget
  since) waits in ``received`` with the reason, the coordinator runs a round to refresh the
  roots, and the request then goes on chain and completes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from coordinator.rounds import WAITING_FOR_ROOT, RoundFailed
from node.forget_watch import answer_forget_requests
from node.stages import answer
from protocol.messages import TRAIN, TrainReply, WireRecord
from protocol.records_root import RecordsRoot
from protocol.typed_data import Domain

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

OTHER_KEY = "0x" + "77" * 32


def _tampered(how: str, node: NodeHandle, reply: TrainReply, round_no: int) -> TrainReply:
    rt = node.runtime
    domain = Domain.of(rt.ledger)
    leaves = [reply.records[i : i + 32] for i in range(0, len(reply.records), 32)]
    if how == "signed by another key":
        records = RecordsRoot.of(round_no, leaves, reply.records_certifications)
        return replace(reply, records_signature=records.sign(domain, OTHER_KEY))
    if how == "records out of order":
        return replace(reply, records=b"".join(reversed(leaves)))
    # A count the chain has not reached: a root no request could ever use.
    records = RecordsRoot.of(round_no, leaves, reply.records_certifications + 1)
    return replace(
        reply,
        records_certifications=records.certifications,
        records_signature=records.sign(domain, rt.eth_key),
    )


@pytest.mark.parametrize(
    "how", ["signed by another key", "records out of order", "a stale certification count"]
)
def test_a_node_whose_records_root_does_not_check_is_left_out(
    memory_federation: MemoryFederation, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    fed = memory_federation
    cheater = fed.nodes[2]

    def cheat(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
        out = answer(node.runtime, stage, record)
        if stage != TRAIN:
            return out
        reply = TrainReply.from_record(out)
        round_no = fed.chain.owner.last_round() + 1
        return _tampered(how, node, reply, round_no).to_record()

    fed.replace(2, cheat)
    with pytest.raises(RoundFailed, match="2 nodes committed, need 3"):
        fed.coordinator.run_round(None)  # left out: too few for the three-node federation
    reasons = {
        "signed by another key": "signed its records root with another key",
        "records out of order": "sorted, distinct commitments",
        "a stale certification count": "names 1 certified forgets, the chain has 0",
    }
    assert f"dropped: {cheater.address}" in caplog.text and reasons[how] in caplog.text
    honest = {n.address.lower() for n in fed.nodes[:2]}
    assert fed.coordinator.last_committed == honest


def test_a_request_waits_for_a_fresh_root_after_its_owner_certified(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[1]
    with owner.runtime.sisa() as node:
        first, second = node.store.record_ids()[4:6]
    # The owner certifies one request from the chain alone: its round-1 root is stale now.
    req, _ = fed.db.submit_forget(first, fed.commitment(first), request_id="watched")
    fed.coordinator._request_on_chain(req)
    (answered,) = answer_forget_requests(owner.runtime)
    assert answered.certify_tx is not None, answered.reason
    assert fed.chain.owner.certifications_of(owner.address) == 1

    fed.db.submit_forget(second, fed.commitment(second), request_id="after")
    fed.coordinator.process_forgets()  # stale root: waits, and a round refreshes the roots
    waiting = fed.db.get_forget("after")
    assert waiting.state == "received"
    assert any(WAITING_FOR_ROOT in (h.get("reason") or "") for h in waiting.history), waiting
    for _ in range(3):
        fed.coordinator._retry_at = 0.0  # no back-off wait between the test's rounds
        fed.coordinator.process_forgets()
    done = fed.db.get_forget("after")
    assert done.state == "completed", done
    with owner.runtime.sisa() as node:
        assert second not in node.store.record_ids()
