"""A record several nodes announce is owned by all of them: no node takes another's forget.

Real node handlers over the in-memory transport, the real contract on anvil. The default
dataset is public, so a participant can ingest a copy of another node's record (same id,
same text) and announce the same commitment.

Specifications (docs/rounds.md, "Forget requests"):
- the request opens on chain for every holder, each certifies its own part, and the
  request completes only once every holder forgot the record;
- a holder that announces the record but does not forget it fails the request, named in
  the reason: the honest holder's part completes, the request does not, and the request
  on chain that stays open names the holder that did not answer;
- the operator sees the duplicate (with the token), the public ``/health`` only a count.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from coordinator.queue import CoordinatorDB, part_id
from node.stages import answer
from protocol.hashing import keccak256
from protocol.ledger import ForgetState
from protocol.messages import TRAIN, TrainRequest, WireRecord
from tests.node_fixtures import fake_embed

if TYPE_CHECKING:
    from pathlib import Path

    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]


def _copy_record(source: NodeHandle, thief: NodeHandle) -> str:
    """``thief`` ingests ``source``'s fourth record as is; return its id."""
    with source.runtime.sisa() as node:
        record_id = node.store.record_ids()[3]
        (record,) = node.store.records([record_id])
    with thief.runtime.sisa() as node:
        assert node.ingest([record], embed=fake_embed, progress=False) == 1
    return record_id


def _holds(node: NodeHandle, record_id: str) -> bool:
    with node.runtime.sisa() as sisa:
        return record_id in sisa.store.record_ids()


def _run_forgets(fed: MemoryFederation, rounds: int = 3) -> None:
    for _ in range(rounds):
        fed.coordinator.process_forgets()
        fed.coordinator._retry_at = 0.0  # no back-off wait between the test's rounds


def test_a_record_two_nodes_hold_is_forgotten_by_both(memory_federation: MemoryFederation) -> None:
    fed = memory_federation
    honest, thief = fed.nodes[0], fed.nodes[2]
    record_id = _copy_record(honest, thief)
    assert fed.coordinator.run_round(None).finalized
    commitment = fed.commitment(record_id)
    holders = sorted([honest.address, thief.address], key=str.lower)
    assert fed.db.duplicate_records() == [{"commitment": commitment, "owners": holders}]

    fed.db.submit_forget(record_id, commitment, request_id="shared-1")
    _run_forgets(fed)

    assert not _holds(honest, record_id), "the honest holder still has the record"
    assert not _holds(thief, record_id)
    request = fed.db.get_forget("shared-1")
    assert request.state == "completed", request
    assert request.owners == holders
    for holder in holders:
        part = fed.db.get_forget(part_id("shared-1", holder))
        assert part.state == "completed" and part.node_address == holder
        on_chain = fed.chain.owner.forget_state(keccak256(part.request_id.encode()))
        assert on_chain.state == ForgetState.COMPLETED
        assert on_chain.node == holder


def test_a_holder_that_does_not_forget_fails_the_request_by_name(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    honest, thief = fed.nodes[0], fed.nodes[2]
    record_id = _copy_record(honest, thief)

    def silent(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
        """Announces the record, takes no forget request (asked nothing, it has nothing)."""
        if stage == TRAIN:
            request = replace(TrainRequest.from_record(record), forget_requests=[])
            record = request.to_record()
        return answer(node.runtime, stage, record)

    fed.replace(2, silent)
    assert fed.coordinator.run_round(None).finalized
    fed.db.submit_forget(record_id, fed.commitment(record_id), request_id="shared-2")
    _run_forgets(fed)

    assert not _holds(honest, record_id)
    honest_part = fed.db.get_forget(part_id("shared-2", honest.address))
    assert honest_part.state == "completed", honest_part
    thief_part = fed.db.get_forget(part_id("shared-2", thief.address))
    assert thief_part.state == "failed", thief_part
    request = fed.db.get_forget("shared-2")
    assert request.state == "failed", request
    assert thief.address in (request.reason or "")
    on_chain = fed.chain.owner.forget_state(keccak256(thief_part.request_id.encode()))
    assert on_chain.state == ForgetState.REQUESTED  # the thief answers for it, not the holder


def test_an_index_of_one_owner_per_record_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE record_index (commitment TEXT PRIMARY KEY, node_address TEXT NOT NULL)"
    )
    con.execute("INSERT INTO record_index VALUES ('0xaa', '0x01')")
    con.commit()
    con.close()
    db = CoordinatorDB(path)
    assert db.record_owners("0xaa") == ["0x01"]
    db.replace_record_index("0x02", ["0xaa"])
    assert db.record_owners("0xaa") == ["0x01", "0x02"]
    assert db.duplicate_records() == [{"commitment": "0xaa", "owners": ["0x01", "0x02"]}]
