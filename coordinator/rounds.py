"""The coordinator's work: secure rounds recorded on chain, and forget requests served.

A round (DESIGN §4) is four message stages: ``train`` (commitments), ``train.share``
(sealed Shamir shares), ``train.aggregate`` (summed shares) and, after the coordinator
has reconstructed the sum, stored model and manifest by CID and called ``proposeRound``,
``query.approve`` (each node checks and approves on chain with its own key). The
coordinator sees commitments, envelopes, summed shares and the sum, never one node's model.

Forget requests (DESIGN §8) move through the durable queue: ``requestForget`` on chain,
dispatch to every node (only the owner retrains and certifies), a new round, and
``completeForget`` once that round is finalized with the owner's new model in it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from coordinator.queue import CoordinatorDB, ForgetRequest
from protocol.commitments import recover_leaf_signer, update_leaf
from protocol.errors import LedgerError, LetheError, ProtocolError
from protocol.hashing import keccak256
from protocol.manifest import NodeUpdate, RoundManifest
from protocol.messages import AGGREGATE, APPROVE, SHARE, TRAIN, Payload

if TYPE_CHECKING:
    from coordinator.config import CoordinatorConfig
    from coordinator.transport import Transport
    from protocol.field import FixedPoint
    from protocol.ledger import Ledger
    from protocol.secure_sum import Roster, SummedShare
    from protocol.store import ContentStore

logger = logging.getLogger("lethe.coordinator")


class RoundFailed(LetheError):
    """A round could not complete (too few nodes answered a stage)."""


@dataclass
class RoundOutcome:
    """What one round produced, as saved in the coordinator's database."""

    round: int
    finalized: bool
    info: dict[str, Any] = field(default_factory=dict)
    manifest: RoundManifest | None = None


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class Coordinator:
    """Runs rounds and forget requests for one federation over a :class:`Transport`."""

    def __init__(
        self,
        config: CoordinatorConfig,
        transport: Transport,
        ledger: Ledger,
        store: ContentStore,
        db: CoordinatorDB,
        *,
        report: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.transport = transport
        self.ledger = ledger
        self.store = store
        self.db = db
        self.report = report
        self.fed = config.federation_id
        self.address_of: dict[int, str] = {}
        self.retry_s = 10.0
        self._retry_at = 0.0

    # -- rounds -------------------------------------------------------------------------

    def wait_for_nodes(self, minimum: int, timeout: float = 600.0) -> list[int]:
        """Block until ``minimum`` nodes are connected to the SuperLink."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.transport.node_ids()
            if len(nodes) >= minimum:
                return nodes
            if time.monotonic() > deadline:
                raise RoundFailed(f"only {len(nodes)} of {minimum} nodes connected")
            time.sleep(0.5)

    def _chain_members(self) -> dict[str, tuple[int, bytes]]:
        """Registered nodes from the chain: address → (Shamir x, X25519 key)."""
        return {
            e.address.lower(): (index + 1, e.key)
            for index, e in enumerate(self.ledger.roster())
            if e.key is not None
        }

    def _train(
        self, round_no: int, through_slice: int | None, forgets: Sequence[ForgetRequest]
    ) -> dict[str, dict[str, Any]]:
        """Stage 1: nodes forget what is asked, train and commit; keep registered, signed ones."""
        members = self._chain_members()
        head = {
            "federation_id": self.fed,
            "round": round_no,
            "through_slice": through_slice,
            "forget_requests": [
                {"request_id": r.request_id, "record_id": r.record_id} for r in forgets
            ],
        }
        nodes = self.transport.node_ids()
        replies = self.transport.exchange(
            TRAIN, {n: Payload(dict(head)) for n in nodes}, self.config.train_timeout_s
        )
        accepted: dict[str, dict[str, Any]] = {}
        for node, reply in replies.items():
            h = reply.header
            address = str(h.get("address", ""))
            member = members.get(address.lower())
            if member is None or _hex(member[1]) != h.get("public_key"):
                logger.warning("node %s (%s) is not registered with that key", node, address)
                continue
            leaf = update_leaf(
                self.fed, round_no, address, bytes.fromhex(h["model_hash"][2:]), int(h["n_samples"])
            )
            if recover_leaf_signer(leaf, h["signature"]).lower() != address.lower():
                logger.warning("node %s signed its commitment with another key; ignored", address)
                continue
            records = reply.blobs.get("records", b"")
            self.db.replace_record_index(
                address, [_hex(records[i : i + 32]) for i in range(0, len(records), 32)]
            )
            self.address_of[node] = address
            accepted[address] = {"node": node, "x": member[0], "key": member[1], **h}
            self.db.save_node(
                address,
                {
                    "flower_node_id": node,
                    "x": member[0],
                    "public_key": h["public_key"],
                    "n_samples": int(h["n_samples"]),
                    "model_hash": h["model_hash"],
                    "last_round": round_no,
                },
            )
        self._record_forget_results(forgets, accepted, set(members))
        return accepted

    def _record_forget_results(
        self,
        forgets: Sequence[ForgetRequest],
        accepted: dict[str, dict[str, Any]],
        everyone: set[str],
    ) -> None:
        """Certified by the owner, failed if every registered node answered 'not mine'."""
        claimed = {
            result["request_id"]: (address, result)
            for address, reply in accepted.items()
            for result in reply.get("forget_results", [])
        }
        answered = {a.lower() for a in accepted}
        for req in forgets:
            if req.request_id in claimed:
                address, result = claimed[req.request_id]
                self.db.advance_forget(
                    req.request_id,
                    "dispatched",
                    "certified",
                    node_address=address,
                    certificate_cid=result["certificate_cid"],
                    certify_tx=result["certify_tx"],
                    new_model_hash=result["new_model_hash"],
                )
                self.report(
                    f"forget {req.request_id}: certified by {address} "
                    f"(certificate {result['certificate_cid']})"
                )
            elif everyone <= answered:
                self.db.advance_forget(
                    req.request_id, "dispatched", "failed", reason="no node holds this record"
                )

    def run_round(
        self, through_slice: int | None, *, forgets: Sequence[ForgetRequest] = ()
    ) -> RoundOutcome:
        """Run one secure round end to end and record it; RoundFailed if too few answer."""
        from protocol.field import FixedPoint
        from protocol.model import model_bytes
        from protocol.secure_sum import Member, Roster, SummedShare, default_threshold

        round_no = max(self.ledger.last_round(), self.db.last_round()) + 1
        started = time.monotonic()
        label = "all slices" if through_slice is None else f"slices 1..{through_slice + 1}"
        self.report(f"round {round_no}: training ({label})")
        trained = self._train(round_no, through_slice, forgets)
        forget_requests = [r.request_id for r in forgets]
        if len(trained) < self.config.min_nodes:
            raise RoundFailed(
                f"round {round_no}: {len(trained)} nodes committed, need {self.config.min_nodes}"
            )
        by_x = sorted(trained.values(), key=lambda t: t["x"])
        roster = Roster(
            federation_id=self.fed,
            round=round_no,
            threshold=default_threshold(len(by_x)),
            members=tuple(Member(t["address"], t["x"], t["key"]) for t in by_x),
        )
        fixed_point = FixedPoint.for_parties(roster.n, self.config.clip)
        n_total = sum(int(t["n_samples"]) for t in by_x)
        base = {"federation_id": self.fed, "round": round_no, "through_slice": through_slice}
        roster_blob = {"roster": roster.to_bytes()}

        shares = self.transport.exchange(
            SHARE,
            {
                t["node"]: Payload(
                    {
                        **base,
                        "model_hash": t["model_hash"],
                        "n_total": n_total,
                        "clip": fixed_point.clip,
                        "frac_bits": fixed_point.frac_bits,
                    },
                    dict(roster_blob),
                )
                for t in by_x
            },
            self.config.stage_timeout_s,
        )
        envelopes = {
            self.address_of[node]: reply.blobs
            for node, reply in shares.items()
            if all(f"env:{m.node_id}" in reply.blobs for m in roster.members)
        }
        senders = sorted(envelopes, key=str.lower)
        if len(senders) < roster.threshold:
            raise RoundFailed(
                f"round {round_no}: {len(senders)} nodes shared, threshold {roster.threshold}"
            )
        self.report(
            f"round {round_no}: {len(senders)}/{roster.n} nodes shared (t={roster.threshold})"
        )

        aggregated = self.transport.exchange(
            AGGREGATE,
            {
                trained[s]["node"]: Payload(
                    {**base, "senders": senders},
                    {
                        **roster_blob,
                        **{f"env:{src}": envelopes[src][f"env:{s}"] for src in senders},
                    },
                )
                for s in senders
            },
            self.config.stage_timeout_s,
        )
        summed = []
        for node, reply in aggregated.items():
            data = reply.blobs.get("summed_share", b"")
            signer = recover_leaf_signer(keccak256(data), str(reply.header.get("signature")))
            if signer.lower() != self.address_of[node].lower():
                logger.warning("summed share of %s is not signed by it; ignored", node)
                continue
            summed.append(SummedShare.from_bytes(data))
        if len(summed) < roster.threshold:
            raise RoundFailed(
                f"round {round_no}: {len(summed)} summed shares, threshold {roster.threshold}"
            )
        total = self._reconstruct(
            roster, summed, fixed_point, n_total, sum(int(trained[s]["n_samples"]) for s in senders)
        )
        responders = sorted((s.node_id for s in summed), key=str.lower)
        global_bytes = model_bytes(total)
        global_hash = _hex(keccak256(global_bytes))
        model_cid = self.store.put(global_bytes)
        manifest = RoundManifest(
            federation_id=self.fed,
            round=round_no,
            threshold=roster.threshold,
            roster=[
                {"address": m.node_id, "x": m.x, "public_key": _hex(m.public_key)}
                for m in roster.members
            ],
            updates=[
                NodeUpdate(
                    s,
                    trained[s]["model_hash"],
                    int(trained[s]["n_samples"]),
                    trained[s]["signature"],
                )
                for s in senders
            ],
            responders={
                "train": sorted(trained, key=str.lower),
                "share": senders,
                "aggregate": responders,
            },
            dropped=sorted({m.node_id for m in roster.members} - set(responders), key=str.lower),
            global_model_cid=model_cid,
            global_model_hash=global_hash,
            n_total=sum(int(trained[s]["n_samples"]) for s in senders),
            fixed_point={"clip": fixed_point.clip, "frac_bits": fixed_point.frac_bits},
            forget_requests=list(forget_requests),
        )
        manifest_cid = self.store.put(manifest.to_bytes())
        proposal = self.ledger.propose_round(
            round_no,
            bytes.fromhex(global_hash[2:]),
            model_cid,
            manifest.updates_root(),
            manifest_cid,
        )
        self.report(f"round {round_no}: proposed (tx {proposal.tx_hash}, gas {proposal.gas_used})")

        approvals = self.transport.exchange(
            APPROVE,
            {
                trained[a]["node"]: Payload(
                    {
                        **base,
                        "model_cid": model_cid,
                        "model_hash": global_hash,
                        "updates_root": _hex(manifest.updates_root()),
                        "manifest_cid": manifest_cid,
                    }
                )
                for a in responders
            },
            self.config.stage_timeout_s,
        )
        state = self.ledger.round_state(round_no)
        accuracies = [
            r.header["accuracy"] for r in approvals.values() if r.header.get("accuracy") is not None
        ]
        info = {
            "through_slice": through_slice,
            "threshold": roster.threshold,
            "roster": [m.node_id for m in roster.members],
            "responders": manifest.responders,
            "dropped": manifest.dropped,
            "n_total": manifest.n_total,
            "global_model_cid": model_cid,
            "global_model_hash": global_hash,
            "manifest_cid": manifest_cid,
            "updates_root": _hex(manifest.updates_root()),
            "propose_tx": proposal.tx_hash,
            "propose_block": proposal.block_number,
            "propose_gas": proposal.gas_used,
            "approvals": {
                self.address_of[n]: r.header.get("tx_hash") for n, r in approvals.items()
            },
            "quorum": state.quorum,
            "accuracy": float(np.mean(accuracies)) if accuracies else None,
            "forget_requests": list(forget_requests),
            "seconds": round(time.monotonic() - started, 3),
        }
        self.db.save_round(round_no, "finalized" if state.finalized else "proposed", info)
        acc = "n/a" if info["accuracy"] is None else f"{info['accuracy']:.3f}"
        self.report(
            f"round {round_no}: {'FINALIZED' if state.finalized else 'not finalized'} with "
            f"{state.approvals}/{state.quorum} approvals, accuracy {acc}, "
            f"{info['seconds']:.1f} s"
        )
        return RoundOutcome(round_no, state.finalized, info, manifest)

    @staticmethod
    def _reconstruct(
        roster: Roster,
        summed: list[SummedShare],
        fixed_point: FixedPoint,
        n_total: int,
        n_senders: int,
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Σ (n_i/N)·w_i over the senders, renormalised if some committed nodes never shared."""
        from protocol.secure_sum import reconstruct_sum

        total = reconstruct_sum(roster, summed, fixed_point)
        if n_senders != n_total:
            total = total * (n_total / n_senders)
        return np.asarray(total, dtype=np.float32)

    # -- forget requests ----------------------------------------------------------------

    def _request_on_chain(self, req: ForgetRequest) -> None:
        from protocol.ledger import ContractRevert

        try:
            tx: str | None = self.ledger.request_forget(
                keccak256(req.request_id.encode()), bytes.fromhex(req.record_commitment[2:])
            ).tx_hash
        except ContractRevert as exc:
            if exc.error_name != "RequestExists":  # sent before a crash: already on chain
                raise
            tx = None
        if self.db.advance_forget(req.request_id, "received", "dispatched", request_tx=tx):
            self.report(f"forget {req.request_id}: requested on chain (tx {tx})")

    def _complete(self, round_no: int, manifest: RoundManifest) -> None:
        """Complete every certified request whose owner's new model is in a finalized round."""
        for req in self.db.list_forgets(("certified",)):
            update = manifest.update_of(req.node_address or "")
            if update is None or update.model_hash != req.new_model_hash:
                logger.warning("round %s lacks the new model of %s", round_no, req.request_id)
                continue
            tx = self.ledger.complete_forget(keccak256(req.request_id.encode()), round_no)
            self.db.advance_forget(
                req.request_id, "certified", "completed", complete_tx=tx.tx_hash, round=round_no
            )
            self.report(f"forget {req.request_id}: completed in round {round_no} (tx {tx.tx_hash})")

    def process_forgets(self) -> bool:
        """Move open requests on; return whether a round ran for them.

        New requests go on chain, then ride on the next round's ``train`` message: the
        owner forgets, retrains and certifies before it commits, so that same round
        publishes the new model and completes the request once finalized. Requests that
        cannot progress (their owner is offline) are retried at most every
        ``retry_s`` seconds rather than in a tight loop of rounds.
        """
        batch = self.config.forget_batch
        received = self.db.list_forgets(("received",))[:batch]
        for req in received:
            self._request_on_chain(req)
        dispatched = self.db.list_forgets(("dispatched",))[:batch]
        certified = self.db.list_forgets(("certified",))
        if not (dispatched or certified):
            return False
        if not received and time.monotonic() < self._retry_at:
            return False
        outcome = self.run_round(None, forgets=dispatched)
        if outcome.finalized and outcome.manifest is not None:
            self._complete(outcome.round, outcome.manifest)
        still_open = self.db.list_forgets(("dispatched", "certified"))
        self._retry_at = time.monotonic() + (self.retry_s if still_open else 0.0)
        return True

    # -- the loop -----------------------------------------------------------------------

    def serve(self, stop: Callable[[], bool]) -> None:
        """Initial rounds (one per slice), then forget requests until ``stop()``."""
        nodes = self.wait_for_nodes(self.config.min_nodes)
        self.report(f"{len(nodes)} nodes connected")
        done = {r["through_slice"] for r in self.db.list_rounds() if r["state"] == "finalized"}
        for k in range(self.config.slices):
            through = None if k == self.config.slices - 1 else k
            if through in done:
                continue
            self._guarded(functools.partial(self.run_round, through))
        while not stop():
            if not self._guarded(self.process_forgets):
                time.sleep(0.05)

    def _guarded(self, step: Callable[[], Any]) -> Any:
        """Run a step; log a failed round or chain call instead of ending the loop."""
        try:
            return step()
        except (RoundFailed, LedgerError, ProtocolError) as exc:
            self.report(f"error: {exc}")
            time.sleep(1.0)
            return True
