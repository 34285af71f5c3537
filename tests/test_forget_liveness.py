"""Every accepted request ends or says why not, and no forget round runs for nothing.

Real chain, real nodes, in-memory transport. Specifications:
- an owner offline: its request stays ``dispatched`` with ``waiting: owner … offline since …``
  (GET /forget/<id> shows the reason), the round that cannot move it is stopped after
  ``train`` (nothing shared, nothing proposed), and the next try backs off (logged, and
  shown as the ServerApp's step) until a node connects;
- the owner back under a new Flower id: the request resumes by itself and completes once;
- with four nodes and the owner offline, the three others' unchanged models are not
  republished in a useless round;
- a certification lost with its block: the queue goes back to ``dispatched``, the owner
  certifies again, and the request completes exactly once on chain.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import requests

from coordinator.queue import ForgetRequest
from protocol.hashing import keccak256
from protocol.ledger import ForgetState
from protocol.messages import TRAIN
from tests.round_fixtures import RECORD_KEY

if TYPE_CHECKING:
    from launcher.devnet import Devnet
    from tests.round_fixtures import MakeFederation, MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]


def _ask_to_forget(fed: MemoryFederation, owner: NodeHandle, request_id: str) -> str:
    with owner.runtime.sisa() as node:
        record_id = node.store.record_ids()[3]
    commitment = RECORD_KEY.commitment_hex(record_id)
    fed.db.submit_forget(record_id, commitment, request_id=request_id)
    return record_id


def _trains(node: NodeHandle) -> int:
    return sum(stage == TRAIN for stage, _ in node.seen)


def _deadline_now(fed: MemoryFederation) -> None:
    """Owners count as offline at once (the default waits ``owner_offline_s`` = 30 s)."""
    fed.coordinator.config = dataclasses.replace(fed.coordinator.config, owner_offline_s=0.0)


def test_an_offline_owner_is_shown_waiting_and_no_round_runs_for_nothing(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    _deadline_now(fed)
    steps: list[str] = []
    fed.coordinator.on_step = steps.append
    assert fed.coordinator.run_round(None).finalized
    owner, other = fed.nodes[1], fed.nodes[0]
    del fed.transport.nodes[owner.flower_id]  # killed
    _ask_to_forget(fed, owner, "wait-1")

    assert fed.coordinator.process_forgets()  # one try: stopped after train
    request = fed.db.get_forget("wait-1")
    assert request.state == "dispatched"
    assert request.reason is not None
    assert request.reason.startswith(f"waiting: owner {owner.address} offline since 20")
    assert fed.chain.owner.last_round() == 1, "nothing proposed"
    assert any("not shared nor proposed" in line for line in fed.lines)
    assert any(line.startswith("forgets: backing off 5 s") for line in fed.lines)
    assert steps[-1].startswith("backing off 5 s")

    trains = _trains(other)
    for _ in range(20):  # the serve loop spins: no round while nothing changed
        assert not fed.coordinator.process_forgets()
    assert _trains(other) == trains

    # The owner is restarted: a new Flower id. The request resumes by itself.
    fed.transport.nodes[owner.flower_id + 1000] = owner.endpoint
    for _ in range(3):
        fed.coordinator.process_forgets()
        if fed.db.get_forget("wait-1").state == "completed":
            break
    request = fed.db.get_forget("wait-1")
    assert request.state == "completed", (request, fed.lines)
    assert request.reason is None
    assert any(step.get("reason", "").startswith("waiting:") for step in request.history)
    assert any("is back" in line for line in fed.lines)
    status = fed.chain.owner.forget_state(keccak256(b"wait-1"))
    assert status.state == ForgetState.COMPLETED
    assert fed.chain.owner.last_round() == 2, "one round for the forget, none wasted"


def test_an_owner_back_under_a_new_id_is_not_failed(memory_federation: MemoryFederation) -> None:
    """Every registered node answered, but the owner was not asked (its id was new):
    the request stays open for the next round instead of failing as 'nobody holds it'."""
    fed = memory_federation
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[2]
    fed.transport.nodes[owner.flower_id + 1000] = fed.transport.nodes.pop(owner.flower_id)
    _ask_to_forget(fed, owner, "renamed-1")
    fed.coordinator.process_forgets()
    assert fed.db.get_forget("renamed-1").state == "dispatched"
    fed.coordinator.process_forgets()  # no back-off: the owner is known now
    assert fed.db.get_forget("renamed-1").state == "completed"


def test_four_nodes_with_the_owner_offline_republish_nothing(
    memory_federation_of: MakeFederation,
) -> None:
    fed = memory_federation_of(4)
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[3]
    del fed.transport.nodes[owner.flower_id]
    _ask_to_forget(fed, owner, "four-1")
    fed.coordinator.process_forgets()
    assert fed.chain.owner.last_round() == 1
    shares = [stage for node in fed.nodes[:3] for stage, _ in node.seen if stage != TRAIN]
    assert len(shares) == 3 * 3, "only the first round's share, aggregate and approve"


def _rpc(devnet: Devnet, method: str, params: list[Any] | None = None) -> Any:
    return requests.post(
        devnet.rpc_url,
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []},
        timeout=5,
    ).json()["result"]


def test_a_certification_lost_with_its_block_is_redone_and_completes_once(
    memory_federation: MemoryFederation, devnet: Devnet
) -> None:
    fed = memory_federation
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[0]
    _ask_to_forget(fed, owner, "lost-1")
    fed.coordinator._request_on_chain(fed.db.get_forget("lost-1"))
    snapshot = _rpc(devnet, "evm_snapshot")
    assert fed.coordinator.process_forgets()
    first: ForgetRequest = fed.db.get_forget("lost-1")
    assert first.state == "completed"

    assert _rpc(devnet, "evm_revert", [snapshot]) is True  # certify, round 2, complete: gone
    fed.coordinator.reconcile()
    assert fed.db.get_forget("lost-1").state == "dispatched"
    assert fed.coordinator.process_forgets()
    request = fed.db.get_forget("lost-1")
    assert request.state == "completed", (request, fed.lines)
    chain_id = keccak256(b"lost-1")
    assert fed.chain.owner.forget_state(chain_id).state == ForgetState.COMPLETED
    completions = fed.chain.owner.events(["ForgetCompleted"], first_indexed=chain_id)
    certifications = fed.chain.owner.events(["ForgetCertified"], first_indexed=chain_id)
    assert len(completions) == 1 and len(certifications) == 1
    assert certifications[0].args["certificateCid"] == request.certificate_cid
    assert request.round == first.round, "the lost round is run again under its number"
