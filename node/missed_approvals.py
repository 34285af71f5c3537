"""Approve, on the node's own key, finalized rounds it contributed to but was left out of.

A coordinator proposing a round with signed approvals may leave one node's signature out
(lost, or on purpose): the round still finalizes with the others, and the node, not an
approver, cannot claim its reward for it. The contract's ``approveRoundWitnessed`` lets a
node approve a round already proposed; this module finds such rounds and does it. It runs
at the start of every round the node is asked to train for, and on demand from
``lethe-node approve``.

A node approves only a round whose manifest carries its own update, signed by it, under
the updates root on chain, and whose model is the one it recomputes from the manifest's
transcript (``protocol.recompute``): it never approves content it did not contribute to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.errors import LetheError, ProtocolError
from protocol.typed_data import Domain

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

logger = logging.getLogger("lethe.node")

LOOKBACK = 16
"""Rounds back from the chain's last that the automatic check looks at."""


@dataclass(frozen=True)
class Approval:
    """One round this node looked at: approved now (``tx_hash``), or why not (``reason``)."""

    round: int
    tx_hash: str | None = None
    reason: str | None = None


def approve_missed(rt: NodeRuntime, rounds: Iterable[int] | None = None) -> list[Approval]:
    """Approve every finalized round in ``rounds`` (default: the last ``LOOKBACK`` rounds
    this node shared in) that it contributed to and has not approved yet."""
    last = rt.ledger.last_round()
    if rounds is None:
        recent = range(max(1, last - LOOKBACK + 1), last + 1)
        rounds = [r for r in recent if rt.rounds.sharing(r) is not None]
    return [_approve(rt, r, last) for r in rounds]


def _approve(rt: NodeRuntime, round_no: int, last: int) -> Approval:
    from node.stages import approve_on_chain, check_is_the_sum
    from protocol.hashing import keccak256
    from protocol.manifest import RoundManifest

    if not 1 <= round_no <= last:
        return Approval(round_no, reason=f"not a round on chain (last is {last})")
    if not rt.ledger.round_state(round_no).finalized:
        return Approval(round_no, reason="not finalized")
    if rt.ledger.has_approved(round_no, rt.address):
        return Approval(round_no, reason="already approved")
    proposal = rt.ledger.round_proposal(round_no)
    if proposal is None:
        return Approval(round_no, reason="no proposal event on chain")
    try:
        manifest = RoundManifest.from_bytes(rt.store.get(proposal.manifest_cid))
        if manifest.updates_root() != proposal.updates_root:
            raise ProtocolError("the manifest's updates are not the updates root on chain")
        mine = manifest.update_of(rt.address)
        if mine is None:
            return Approval(round_no, reason="this node did not contribute to it")
        signer = mine.signer(Domain.of(rt.ledger), manifest.federation_id, round_no)
        if signer.lower() != rt.address.lower():
            raise ProtocolError("this node's update in the manifest is not signed by it")
        model = rt.store.get(proposal.global_model_cid)
        if keccak256(model) != proposal.global_model_hash:
            raise ProtocolError("the global model's bytes do not hash to the proposed hash")
        check_is_the_sum(rt, manifest, model)
        tx = approve_on_chain(rt, proposal)
    except LetheError as exc:
        return Approval(round_no, reason=str(exc))
    logger.info("round %s: approved by this node itself (left out of the signatures)", round_no)
    return Approval(round_no, tx_hash=tx, reason=None if tx else "already approved")
