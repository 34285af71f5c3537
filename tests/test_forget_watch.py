"""A node answers forget requests naming it from the chain, whether dispatched or not.

Real node handlers, the real contract on anvil with a forget deadline; the coordinator
opens requests on chain and never sends them in a ``train`` message.

Specifications (docs/rounds.md, "Forget requests"):
- a request never dispatched is certified by its owner from the ``ForgetRequested`` event
  before the deadline, so nobody can slash it; the next round completes it as usual;
- a request for a record the node does not hold is reported with that reason, and nothing
  is deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from web3 import Web3

from node.forget_watch import Answered, answer_forget_requests
from protocol.hashing import keccak256
from protocol.ledger import ContractRevert, ForgetState, StakePolicy
from tests.records_proofs import finalize_next_round, request_committed

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

DEADLINE = 30


def _mine(fed: MemoryFederation, blocks: int) -> None:
    w3 = Web3(Web3.HTTPProvider(fed.chain.deployment.rpc_url))
    w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]


def test_a_request_never_dispatched_is_certified_from_the_chain(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    fed.chain.owner.set_stake_policy(StakePolicy(0, 10**17, 0, DEADLINE, 0))
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[1]
    with owner.runtime.sisa() as node:
        record_id = node.store.record_ids()[5]
    req, _ = fed.db.submit_forget(record_id, fed.commitment(record_id), request_id="quiet-1")
    fed.coordinator._request_on_chain(req)  # on chain, and then never dispatched
    chain_id = keccak256(b"quiet-1")
    assert fed.chain.owner.forget_state(chain_id).state is ForgetState.REQUESTED

    (answered,) = answer_forget_requests(owner.runtime)

    assert answered.certify_tx is not None, answered.reason
    assert fed.chain.owner.forget_state(chain_id).state is ForgetState.CERTIFIED
    with owner.runtime.sisa() as node:
        assert record_id not in node.store.record_ids()
    _mine(fed, DEADLINE + 1)
    with pytest.raises(ContractRevert) as excinfo:
        fed.chain.outsider.slash(chain_id)
    assert excinfo.value.error_name == "AlreadyCertified"
    assert answer_forget_requests(owner.runtime) == []  # nothing open any more

    fed.coordinator.process_forgets()
    assert fed.db.get_forget("quiet-1").state == "completed"


def test_a_request_for_a_record_the_node_lacks_is_reported_with_the_reason(
    memory_federation: MemoryFederation,
) -> None:
    # A record the node committed to but no longer holds (the chain refuses any other).
    fed = memory_federation
    victim = fed.nodes[0]
    with victim.runtime.sisa() as node:
        before = node.store.record_ids()
    finalize_next_round(fed.chain)
    rt = victim.runtime
    request_committed(fed.chain, "bogus-1", keccak256(b"no such record"), rt.ledger, rt.eth_key)

    (answered,) = answer_forget_requests(victim.runtime)

    assert answered.certify_tx is None
    assert answered.reason == "this node holds no record with that commitment"
    with victim.runtime.sisa() as node:
        assert node.store.record_ids() == before


def test_the_watcher_leaves_a_request_to_the_coordinator_until_half_its_deadline(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    fed.chain.owner.set_stake_policy(StakePolicy(0, 10**17, 0, DEADLINE, 0))
    assert fed.coordinator.run_round(None).finalized
    owner = fed.nodes[2]
    with owner.runtime.sisa() as node:
        record_id = node.store.record_ids()[2]
    commitment = bytes.fromhex(fed.commitment(record_id)[2:])
    rt = owner.runtime
    request_committed(fed.chain, "late-1", commitment, rt.ledger, rt.eth_key)
    seen: dict[bytes, float] = {}

    def watch() -> list[Answered]:
        return answer_forget_requests(
            owner.runtime, grace_s=60.0, first_seen=seen, clock=lambda: 0.0
        )

    assert watch() == []  # fresh: the coordinator's train message goes first
    _mine(fed, DEADLINE // 2 + 1)
    (answered,) = watch()
    assert answered.certify_tx is not None, answered.reason
    assert fed.chain.owner.forget_state(keccak256(b"late-1")).state is ForgetState.CERTIFIED
