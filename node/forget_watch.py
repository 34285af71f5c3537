"""Answer forget requests from the chain itself, without waiting for the coordinator.

A request opened on chain names this node and carries a deadline; the coordinator then
hands it to the node in the next round's ``train`` message. A coordinator that never does
(down, or on purpose) would get the node slashed for a request it never saw. So the node
follows the contract's ``ForgetRequested`` events that name it: for each one still open,
it finds the record among its own by the commitment (under the federation's record key),
forgets it and certifies on chain, exactly as for a ``train`` message (the request id's
text is in the event), once the coordinator had its chance: after ``GRACE_S`` or half the
deadline window, whichever is first. One lock (``node.stages.SISA_WRITES``) keeps it from
forgetting while the same process trains or forgets for a round. What it cannot do is
reported with the reason, in the log and in what :func:`answer_forget_requests` returns.
The new model is published by the next round, like any certified forget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.errors import LetheError
from protocol.hashing import keccak256

if TYPE_CHECKING:
    from node.runtime import NodeRuntime
    from protocol.ledger import ForgetRequestEvent

logger = logging.getLogger("lethe.node")

WATCH_S = 10.0
"""Seconds between two looks at the chain (a forget deadline is many blocks)."""
GRACE_S = 60.0
"""How long a request is left to the coordinator's ``train`` message first (unless half
its deadline window passes sooner)."""


@dataclass(frozen=True)
class Answered:
    """One open request naming this node: certified (``certify_tx``), or why not."""

    request_id: str
    """The request's id on chain (0x hex)."""
    certify_tx: str | None = None
    reason: str | None = None


def answer_forget_requests(
    rt: NodeRuntime,
    *,
    grace_s: float = 0.0,
    first_seen: dict[bytes, float] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Answered]:
    """Certify every request still open on chain that names this node, if it can.

    With ``grace_s``, a request is left to the coordinator's ``train`` message until it
    has been open that long (as first seen, kept in ``first_seen``) or half its deadline
    window has passed, whichever comes first: the usual path stays the usual path.
    """
    from protocol.ledger import ForgetState

    seen = {} if first_seen is None else first_seen
    opened = rt.ledger.forget_requests_naming(rt.address, from_block=rt.config.deployment_block)
    now, answered = clock(), []
    for event in opened:
        if rt.ledger.forget_state(event.request_id).state is not ForgetState.REQUESTED:
            seen.pop(event.request_id, None)
            continue
        since = seen.setdefault(event.request_id, now)
        if now - since < grace_s and not _deadline_near(rt, event):
            continue
        answered.append(_answer(rt, event))
    return answered


def _deadline_near(rt: NodeRuntime, event: ForgetRequestEvent) -> bool:
    """Whether half the request's deadline window has passed (never, without a deadline)."""
    deadline, _ = rt.ledger.forget_deadline(event.request_id)
    if deadline == 0:
        return False
    return rt.ledger.block_number() >= deadline - (deadline - event.block_number) // 2


def _answer(rt: NodeRuntime, event: ForgetRequestEvent) -> Answered:
    from node.stages import SISA_WRITES, forget_and_certify
    from protocol.messages import ForgetEntry

    chain_id = "0x" + event.request_id.hex()
    if not event.label or keccak256(event.label.encode()) != event.request_id:
        return _refused(
            chain_id,
            "the event carries no request id text: waiting for the coordinator's train message",
        )
    try:
        with SISA_WRITES, rt.sisa() as node:
            held = {rt.record_key.commitment(rid): rid for rid in node.store.record_ids()}
            record_id = held.get(event.record_commitment)
            if record_id is None:
                return _refused(chain_id, "this node holds no record with that commitment")
            results = forget_and_certify(
                rt, node, [ForgetEntry(request_id=event.label, record_id=record_id)]
            )
    except LetheError as exc:
        return _refused(chain_id, f"could not forget: {exc}")
    if not results:
        return _refused(chain_id, "the request was refused (see the log)")
    logger.info("forget %s: certified from the chain (tx %s)", event.label, results[0].certify_tx)
    return Answered(chain_id, certify_tx=results[0].certify_tx)


def _refused(chain_id: str, reason: str) -> Answered:
    logger.warning("forget request %s naming this node: %s", chain_id, reason)
    return Answered(chain_id, reason=reason)


class ForgetWatcher:
    """Runs :func:`answer_forget_requests` every ``interval_s`` in a thread until stopped."""

    def __init__(
        self, rt: NodeRuntime, *, interval_s: float = WATCH_S, grace_s: float = GRACE_S
    ) -> None:
        self.rt = rt
        self.interval_s = interval_s
        self.grace_s = grace_s
        self._first_seen: dict[bytes, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forget-watch", daemon=True)

    def start(self) -> ForgetWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                answer_forget_requests(self.rt, grace_s=self.grace_s, first_seen=self._first_seen)
            except LetheError as exc:  # the chain unreachable for a while: try again later
                logger.warning("cannot read forget requests from the chain: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
