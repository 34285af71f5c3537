"""A node the coordinator leaves out of a round's signatures approves it itself, and is paid.

Real node handlers over the in-memory transport, the real contract on anvil with a reward
per round. The coordinator drops one node's EIP-712 signature from the proposal; the round
finalizes with the others' approvals.

Specifications (docs/staking.md, "Rewards"):
- at its next ``train`` the left-out node finds the finalized round carrying its own signed
  update, approves it on chain (``approveRoundWitnessed``) and can claim its reward;
- ``lethe-node approve`` does the same on demand, and says why it approves nothing;
- a node never approves a round it did not contribute to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from click.testing import CliRunner

from node.cli import main as lethe_node
from node.missed_approvals import approve_missed
from node.stages import answer
from protocol.ledger import StakePolicy
from protocol.messages import APPROVE, WireRecord
from tests.test_rounds import _edit_header

if TYPE_CHECKING:
    from pathlib import Path

    from tests.round_fixtures import MemoryFederation, NodeHandle

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]

REWARD = 10**16


def _leave_out(fed: MemoryFederation, index: int) -> None:
    """The coordinator never receives node ``index``'s approval signature."""

    def unsigned(node: NodeHandle, stage: str, record: WireRecord) -> WireRecord:
        reply = answer(node.runtime, stage, record)
        if stage != APPROVE:
            return reply
        forged: WireRecord = _edit_header(signature=None)(reply)
        return forged

    fed.replace(index, unsigned)


def _rewarded(fed: MemoryFederation) -> None:
    fed.chain.owner.set_stake_policy(StakePolicy(0, 0, REWARD, 0, 0))
    fed.chain.owner.fund(10 * REWARD)


def test_a_node_left_out_of_the_signatures_approves_at_its_next_round_and_is_paid(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    _rewarded(fed)
    left_out = fed.nodes[2]
    _leave_out(fed, 2)
    first = fed.coordinator.run_round(None)
    assert first.finalized
    assert not fed.chain.owner.has_approved(first.round, left_out.address)

    fed.transport.nodes[left_out.flower_id] = left_out.endpoint  # honest coordinator again
    assert fed.coordinator.run_round(None).finalized

    assert fed.chain.owner.has_approved(first.round, left_out.address)
    left_out.runtime.ledger.claim_rewards([first.round])
    (claimed,) = fed.chain.owner.events(["RewardClaimed"])
    assert claimed.args["node"] == left_out.address
    assert (claimed.args["round"], claimed.args["amount"]) == (first.round, REWARD)


def test_lethe_node_approve_approves_on_demand_and_says_why_not(
    memory_federation: MemoryFederation, tmp_path: Path
) -> None:
    fed = memory_federation
    left_out = fed.nodes[1]
    _leave_out(fed, 1)
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    config = tmp_path / "node.json"
    left_out.runtime.config.save(config)

    shown = CliRunner().invoke(lethe_node, ["approve", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    assert f"round {outcome.round}: approved (tx 0x" in shown.output
    assert fed.chain.owner.has_approved(outcome.round, left_out.address)
    again = CliRunner().invoke(
        lethe_node, ["approve", "--config", str(config), "--round", str(outcome.round)]
    )
    assert f"round {outcome.round}: already approved" in again.output
    future = CliRunner().invoke(lethe_node, ["approve", "--config", str(config), "--round", "9"])
    assert "round 9: not a round on chain" in future.output


def test_a_node_never_approves_a_round_without_its_update(
    memory_federation_of: object,
) -> None:
    make = memory_federation_of
    fed: MemoryFederation = make(4)  # type: ignore[operator]
    outsider = fed.nodes[3]
    del fed.transport.nodes[outsider.flower_id]  # it takes no part in the round
    outcome = fed.coordinator.run_round(None)
    assert outcome.finalized
    (result,) = approve_missed(outsider.runtime, [outcome.round])
    assert result.reason == "this node did not contribute to it"
    assert not fed.chain.owner.has_approved(outcome.round, outsider.address)
