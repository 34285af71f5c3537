"""Bring the coordinator's queue back in line with the chain after a crash or a lost block.

The queue (SQLite) and the chain are written one after the other, so a crash between the
two, or a dev chain that lost its newest blocks, leaves them disagreeing: a request the
queue calls ``certified`` whose certification is not on chain would wait forever for a
completion the contract will refuse. The chain is the record. :func:`reconcile` moves
each open or completed request back to the state the chain supports (the transition is
kept in the request's history with the reason), so the coordinator's loop redoes exactly
the missing steps. A certification the queue never saw is not copied forward: the owner
reports it again in its next round. It runs when the ServerApp starts and after every
chain error.
"""

from __future__ import annotations

from collections.abc import Callable

from coordinator.queue import CoordinatorDB
from protocol.hashing import keccak256
from protocol.ledger import ForgetState, Ledger

# What the queue's state needs on chain, and where it goes back to without it.
_BACK_TO = {ForgetState.NONE: "received", ForgetState.REQUESTED: "dispatched"}
_RANK = {"received": 0, "dispatched": 1, "certified": 2, "completed": 3}
_CHAIN_RANK = {
    ForgetState.NONE: 0,
    ForgetState.REQUESTED: 1,
    ForgetState.CERTIFIED: 2,
    ForgetState.COMPLETED: 3,
}


def reconcile(
    db: CoordinatorDB, ledger: Ledger, report: Callable[[str], None] = print
) -> list[tuple[str, str, str]]:
    """Align every request with the chain; return ``(request id, from, to)`` per move."""
    moves = []
    for req in db.list_forgets(("dispatched", "certified", "completed")):
        if req.is_split:  # not on chain itself: its parts are, each reconciled here
            continue
        chain = ledger.forget_state(keccak256(req.request_id.encode())).state
        if _RANK[req.state] <= _CHAIN_RANK[chain]:
            continue
        target = _BACK_TO.get(chain, "certified")
        reason = f"reconciled with the chain: it holds this request as {chain.name.lower()}"
        if db.advance_forget(req.request_id, req.state, target, reason=reason):
            moves.append((req.request_id, req.state, target))
            report(f"forget {req.request_id}: {req.state} → {target} ({reason})")
    return moves
