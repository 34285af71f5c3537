"""Audit a federation from the chain's events and the content store alone (docs/certificate.md).

The audit trusts neither the coordinator nor its database. It replays the ``Lethe``
contract's events in chain order, keeping the roster, coordinator and quorum setting as
they were at each event, fetches every global model, round manifest and unlearning
certificate by CID (the store verifies every byte against the CID), and checks:

- **rounds**: proposed by the coordinator of the time, numbered without gaps, the quorum and
  node count the roster of the time implies; the model's bytes hash to
  ``globalModelHash`` and are, bit for bit, the model recomputed from the manifest's
  signed masked vectors and reveals (``protocol.recompute``, the function nodes run before
  approving); the manifest is for this round and federation, names the same model
  CID and hash, and its Merkle root is ``updatesRoot``; every update is signed by its
  address, an admitted node; every node the manifest lists as a ``share`` responder (stage
  2: its model is in the aggregate) has its update in the manifest, and no one else has;
  ``n_total`` is the sum of the updates' samples; updates are EIP-712 signed for this chain
  and contract; approvals come from nodes admitted before the proposal, once each, and
  ``RoundFinalized`` comes exactly when they reach the quorum.
- **forgets**: requested by the coordinator naming an admitted node; certified by that
  node with a certificate for this chain and contract whose signature is that node's and
  that verifies (fields, the Merkle proof
  putting the record leaf in the old slice root, slices retrained running from at most
  the record's slice to the last); ``keccak256(request id)`` is the on-chain request id;
  ``newModelHash`` is the certificate's ``model_hash_after``; a retrain from slice 0
  started from the all-zero head (the only checkpoint hash an outsider can recompute:
  later ones are private to the node); ``afterRound`` is the last round proposed before;
  the old slice root is one the node committed to in a finalized round up to
  ``afterRound``, and ``model_hash_after`` is not the model it last committed; completed
  by a later finalized round whose manifest holds the certifying node's update with
  ``model_hash == model_hash_after`` and the certificate's new slice root.

- **stakes** (when the federation uses them): every stake, withdrawal, reward and slash
  event is one the contract's rules allow given the history (a reward only for a finalized
  round the node approved, once, of the amount the policy fixed at proposal, never more
  than the pool; a slash only of the node a request with a deadline names, once, before
  certification, of the policy's amount); the report lists each node's stake, rewards and
  slashes.

Not checkable from public data, so not checked: that the certificate's record leaf is the
record the request names (the data subject checks it with ``Certificate.covers``), and the
node's private checkpoints after slice 0.

By default the replay stops at the first inconsistency, which :attr:`AuditReport.failure`
names precisely (what, round or request, CID, tx hash, block); the report keeps the lines
checked so far. ``keep_going=True`` checks every round and forget and marks each one
(the explorer's badges).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from protocol.certificate import Certificate
from protocol.errors import ProtocolError, StoreError
from protocol.hashing import keccak256
from protocol.manifest import RoundManifest
from protocol.noise import DEFAULT_NOISE_SCALE, NOISE_MICROS
from protocol.recompute import check_published
from protocol.stakes import CONTEXT_EVENTS, STAKE_EVENTS, StakeLedger, format_ether
from protocol.typed_data import Domain

if TYPE_CHECKING:
    from protocol.ledger import Ledger, LedgerEvent
    from protocol.store import ContentStore

Status = Literal["verified", "pending", "failed"]
SHARE_STAGE = "share"
"""Key of ``RoundManifest.responders`` listing the nodes whose shares the aggregate sums."""
MARKS: dict[str, str] = {"verified": "✓", "pending": "…", "failed": "✗"}


@dataclass(frozen=True)
class TxRef:
    """Where something happened on chain."""

    tx_hash: str
    block_number: int

    @classmethod
    def of(cls, event: LedgerEvent) -> TxRef:
        return cls(event.tx_hash, event.block_number)


@dataclass(frozen=True)
class Approval:
    """One node's approval of a round."""

    node: str
    tx: TxRef


@dataclass
class RoundAudit:
    """One proposed round: what the chain and the store say, and the audit's verdict."""

    round: int
    proposed: TxRef
    proposer: str
    global_model_hash: str
    global_model_cid: str
    updates_root: str
    manifest_cid: str
    quorum: int
    node_count: int
    admissions: int = 0
    """Nodes admitted (ever) when the round was proposed: later admissions cannot approve."""
    participants: list[str] = field(default_factory=list)
    n_total: int | None = None
    approvals: list[Approval] = field(default_factory=list)
    finalized: TxRef | None = None
    status: Status = "pending"
    problem: str | None = None
    noise_scale: float | None = None
    """σ of the noise inside the sum, as every sender declared it (``None``: not checked)."""

    def line(self) -> str:
        """One readable line for the report."""
        if self.problem is not None:
            return f"{MARKS['failed']} {self.problem}"
        head = f"{MARKS[self.status]} round {self.round}"
        votes = f"{len(self.approvals)}/{self.quorum} approvals"
        state = f"finalized ({votes})" if self.finalized else f"pending ({votes})"
        return (
            f"{head}: {state}, model recomputed from {len(self.participants)} masked updates "
            f"(noise σ {self.noise_scale}), model {self.global_model_cid}, "
            f"tx {self.proposed.tx_hash}"
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "round": self.round,
            "status": self.status,
            "problem": self.problem,
            "proposed": _tx_json(self.proposed),
            "proposer": self.proposer,
            "global_model_hash": self.global_model_hash,
            "global_model_cid": self.global_model_cid,
            "updates_root": self.updates_root,
            "manifest_cid": self.manifest_cid,
            "quorum": self.quorum,
            "node_count": self.node_count,
            "participants": self.participants,
            "n_total": self.n_total,
            "noise_scale": self.noise_scale,
            "approvals": [
                {"node": a.node, "tx_hash": a.tx.tx_hash, "block_number": a.tx.block_number}
                for a in self.approvals
            ],
            "finalized": _tx_json(self.finalized),
        }


@dataclass
class ForgetAudit:
    """One forget request through its three on-chain steps, and the audit's verdict."""

    request_id: str
    record_commitment: str
    requested: TxRef
    owner: str | None = None
    """The node the request names as the record's owner: the only one that may certify."""
    label: str | None = None
    node: str | None = None
    certificate_cid: str | None = None
    new_model_hash: str | None = None
    after_round: int | None = None
    certified: TxRef | None = None
    certificate: Certificate | None = None
    completed: TxRef | None = None
    completed_round: int | None = None
    status: Status = "pending"
    problem: str | None = None

    @property
    def name(self) -> str:
        """The request as people know it: its id string when a certificate gave it."""
        return f'"{self.label}" ({self.request_id})' if self.label else self.request_id

    def line(self) -> str:
        """One readable line for the report."""
        if self.problem is not None:
            return f"{MARKS['failed']} {self.problem}"
        head = f"{MARKS[self.status]} forget {self.name}"
        steps = ["requested"]
        if self.certified is not None and self.certificate is not None:
            cert = self.certificate
            steps.append(
                f"certified by {self.node} (shard {cert.shard} slice {cert.slice}, retrained "
                f"slices {cert.slices_retrained[0]}–{cert.slices_retrained[-1]}, "
                f"certificate {self.certificate_cid})"
            )
        if self.completed_round is not None:
            steps.append(f"completed in round {self.completed_round}")
        return f"{head}: {' → '.join(steps)}"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "request_id": self.request_id,
            "label": self.label,
            "status": self.status,
            "problem": self.problem,
            "record_commitment": self.record_commitment,
            "requested": _tx_json(self.requested),
            "owner": self.owner,
            "node": self.node,
            "certificate_cid": self.certificate_cid,
            "new_model_hash": self.new_model_hash,
            "after_round": self.after_round,
            "certified": _tx_json(self.certified),
            "completed": _tx_json(self.completed),
            "completed_round": self.completed_round,
        }


@dataclass
class NodeAudit:
    """A node as the registry events describe it."""

    address: str
    admitted: TxRef
    removed: TxRef | None = None
    key: str | None = None
    rounds: list[int] = field(default_factory=list)
    serial: int = 0
    """Admission serial (the contract's counter): approves only rounds proposed after it."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "address": self.address,
            "admitted": _tx_json(self.admitted),
            "removed": _tx_json(self.removed),
            "key": self.key,
            "rounds": self.rounds,
        }


@dataclass(frozen=True)
class Failure:
    """One inconsistency: the full message and where it is, field by field."""

    message: str
    round: int | None = None
    request_id: str | None = None
    cid: str | None = None
    tx_hash: str | None = None
    block_number: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "message": self.message,
            "round": self.round,
            "request_id": self.request_id,
            "cid": self.cid,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
        }


@dataclass
class AuditReport:
    """What the audit replayed and found; ``ok`` only if no inconsistency was found."""

    contract: str
    chain_id: int
    from_block: int
    to_block: int
    federation_id: str | None = None
    events: int = 0
    rounds: list[RoundAudit] = field(default_factory=list)
    forgets: list[ForgetAudit] = field(default_factory=list)
    nodes: list[NodeAudit] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    complete: bool = True
    stakes: dict[str, Any] | None = None
    """Stakes, the reward pool and slashes (``StakeLedger.summary()``); None if unused."""

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failure(self) -> Failure | None:
        """The first inconsistency, in chain order."""
        return self.failures[0] if self.failures else None

    def round(self, number: int) -> RoundAudit:
        """The audit of one round (KeyError if it was not replayed)."""
        for item in self.rounds:
            if item.round == number:
                return item
        raise KeyError(number)

    def forget(self, request_id: str) -> ForgetAudit:
        """The audit of one request, by on-chain id (0x…) or by its id string."""
        for item in self.forgets:
            if request_id in (item.request_id, item.label):
                return item
        raise KeyError(request_id)

    def lines(self) -> list[str]:
        """The readable report: one line per round and per forget, then the verdict."""
        out = [
            f"Lethe contract {self.contract} on chain {self.chain_id}, "
            f"blocks {self.from_block}–{self.to_block}, {self.events} events replayed"
            + (f", federation {self.federation_id}" if self.federation_id else ""),
            f"{_count(len(self.nodes), 'node')} admitted over the history",
        ]
        out += [r.line() for r in self.rounds]
        out += [f.line() for f in self.forgets]
        out += _stake_lines(self.stakes)
        out.append(self.verdict())
        return out

    def verdict(self) -> str:
        """One sentence: passed with counts, or the first inconsistency."""
        if self.failure is not None:
            return f"AUDIT FAILED: {self.failure.message}"
        finalized = sum(r.finalized is not None for r in self.rounds)
        completed = sum(f.completed is not None for f in self.forgets)
        return (
            f"AUDIT PASSED: {_count(len(self.rounds), 'round')} ({finalized} finalized), "
            f"{_count(len(self.forgets), 'forget request')} ({completed} completed), "
            "all consistent"
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (what ``lethe audit --json`` prints)."""
        return {
            "ok": self.ok,
            "verdict": self.verdict(),
            "contract": self.contract,
            "chain_id": self.chain_id,
            "from_block": self.from_block,
            "to_block": self.to_block,
            "complete": self.complete,
            "federation_id": self.federation_id,
            "events": self.events,
            "failure": None if self.failure is None else self.failure.to_json(),
            "failures": [f.to_json() for f in self.failures],
            "rounds": [r.to_json() for r in self.rounds],
            "forgets": [f.to_json() for f in self.forgets],
            "nodes": [n.to_json() for n in self.nodes],
            "stakes": self.stakes,
        }


def _stake_lines(stakes: dict[str, Any] | None) -> list[str]:
    """The pool, then one line per node: stake, rewards claimed and claimable, slashes."""
    if stakes is None:
        return []
    out = [
        f"reward pool {format_ether(stakes['pool_wei'])}: funded "
        f"{format_ether(stakes['funded_wei'])}, slashed in {format_ether(stakes['slashed_wei'])}, "
        f"paid out {format_ether(stakes['paid_wei'])}"
    ]
    for node in stakes["nodes"]:
        slashes = len(node["slashed_requests"])
        out.append(
            f"  node {node['address']}: stake {format_ether(node['stake_wei'])}, rewards "
            f"{format_ether(node['rewards_claimed_wei'])} claimed + "
            f"{format_ether(node['rewards_claimable_wei'])} claimable, "
            f"{slashes} slash{'' if slashes == 1 else 'es'} ({format_ether(node['slashed_wei'])})"
        )
    return out


def _declared_noise(manifest: RoundManifest) -> float:
    """σ the senders' masked vectors declare (they all declare the same: recomputed)."""
    from protocol.recompute import Transcript
    from protocol.secure_sum import MaskedInput

    first = next(iter(Transcript.from_json(manifest.transcript).masked.values()))
    return MaskedInput.from_bytes(first.data).settings.sigma


def audit(
    ledger: Ledger,
    store: ContentStore,
    *,
    federation_id: str | None = None,
    from_block: int | None = None,
    to_block: int | None = None,
    keep_going: bool = False,
) -> AuditReport:
    """Replay the contract's history and check it against the store.

    Parameters
    ----------
    ledger
        The contract to audit (a read-only :class:`~protocol.ledger.Ledger` is enough).
    store
        Where the CIDs named on chain are fetched from.
    federation_id
        The federation the history must belong to; default: the first manifest's.
    from_block, to_block
        Blocks to replay; default: from the deployment block to the latest block.
    keep_going
        Check every round and forget instead of stopping at the first inconsistency.

    Raises LedgerError when the chain cannot be read: that is no verdict on the history.
    """
    start = ledger.deployment_block if from_block is None else from_block
    end = ledger.block_number() if to_block is None else to_block
    events = ledger.events(from_block=start, to_block=end)
    replay = _Replay(store, federation_id, Domain.of(ledger))
    report = AuditReport(
        contract=ledger.address, chain_id=ledger.chain_id, from_block=start, to_block=end
    )
    for event in events:
        report.events += 1
        if not replay.apply(event) and not keep_going:
            report.complete = False
            break
    else:
        replay.finish()
    replay.fill(report)
    return report


class IncrementalAudit:
    """``audit(..., keep_going=True)`` kept current: each update replays only new blocks.

    The replay's state (roster, rounds, forgets, verdicts) is kept between updates, so
    serving the explorer costs the events and CIDs added since the last update, not the
    whole history again. Blocks are replayed whole, so no update sees half a transaction.
    """

    def __init__(self, ledger: Ledger, store: ContentStore) -> None:
        self.ledger = ledger
        self._replay = _Replay(store, None, Domain.of(ledger))
        self._next_block = ledger.deployment_block
        self._events = 0

    def update(self, to_block: int | None = None) -> AuditReport:
        """Replay the blocks up to ``to_block`` (default: latest) not replayed yet.

        Raises LedgerError when the chain cannot be read; the state is then unchanged.
        """
        end = self.ledger.block_number() if to_block is None else to_block
        if end >= self._next_block:
            events = self.ledger.events(from_block=self._next_block, to_block=end)
            for event in events:
                self._events += 1
                self._replay.apply(event)
            self._next_block = end + 1
            self._replay.finish()
        report = AuditReport(
            contract=self.ledger.address,
            chain_id=self.ledger.chain_id,
            from_block=self.ledger.deployment_block,
            to_block=self._next_block - 1,
            events=self._events,
        )
        self._replay.fill(report)
        return report


# ----- the replay --------------------------------------------------------------------------


Item = RoundAudit | ForgetAudit


class _Inconsistent(Exception):
    """Raised inside the replay; carries the failure and the round or forget it concerns."""

    def __init__(self, failure: Failure, item: Item | None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.item = item


def _tx_json(tx: TxRef | None) -> dict[str, Any] | None:
    return None if tx is None else {"tx_hash": tx.tx_hash, "block_number": tx.block_number}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _quorum_for(configured: int, nodes: int) -> int:
    """The contract's rule: the configured quorum, or ⌈2n/3⌉ when it is 0."""
    return configured if configured else (2 * nodes + 2) // 3


class _Replay:
    """The registry, rounds and forgets as the events so far make them, checked one by one."""

    def __init__(self, store: ContentStore, federation_id: str | None, domain: Domain) -> None:
        self.store = store
        self.domain = domain
        self.federation_id = federation_id
        self.coordinator: str | None = None
        self.configured_quorum = 0
        self.noise_micros = round(DEFAULT_NOISE_SCALE * NOISE_MICROS)
        """σ of the noise inside the sum in force (the contract's initial value first)."""
        self.noise_since_last_round = {self.noise_micros}
        """Every σ in force since the last proposal: a round shared under one of them."""
        self.admitted: dict[str, NodeAudit] = {}
        self.nodes: list[NodeAudit] = []
        self.rounds: dict[int, RoundAudit] = {}
        self.manifests: dict[int, RoundManifest] = {}
        self.approval_events: dict[int, int] = {}
        self.forgets: dict[str, ForgetAudit] = {}
        self.admissions = 0
        self.last_round = 0
        self.model_size: int | None = None
        self.failures: list[Failure] = []
        self._handlers: dict[str, Callable[[LedgerEvent], None]] = {
            "CoordinatorAdmitted": self._coordinator_admitted,
            "QuorumSet": self._quorum_set,
            "NoiseScaleSet": self._noise_scale_set,
            "NodeAdmitted": self._node_admitted,
            "NodeRemoved": self._node_removed,
            "KeyRegistered": self._key_registered,
            "RoundProposed": self._round_proposed,
            "RoundApproved": self._round_approved,
            "RoundApprovedBy": self._round_approved_by,
            "RoundFinalized": self._round_finalized,
            "ForgetRequested": self._forget_requested,
            "ForgetCertified": self._forget_certified,
            "ForgetCompleted": self._forget_completed,
        }
        self._watch_stakes()

    # -- driving ---------------------------------------------------------------------------

    def apply(self, event: LedgerEvent) -> bool:
        """Check one event; False if it revealed an inconsistency."""
        try:
            self._handlers[event.name](event)
        except _Inconsistent as exc:
            self._record(exc)
            return False
        return True

    def finish(self) -> None:
        """Checks that need the whole history: a round at quorum must have been finalized."""
        for item in self.rounds.values():
            reached = len(item.approvals) >= item.quorum
            if reached and item.finalized is None and item.problem is None:
                what = (
                    f"{len(item.approvals)} approvals reached the quorum {item.quorum} "
                    "but no RoundFinalized event followed"
                )
                at = item.approvals[item.quorum - 1].tx
                self._record(self._failure(at, f"round {item.round}", what, item, round=item.round))

    def fill(self, report: AuditReport) -> None:
        """Copy the findings into ``report`` and settle each line's status."""
        for r in self.rounds.values():
            if r.problem is None:
                r.status = "verified" if r.finalized is not None else "pending"
        for f in self.forgets.values():
            if f.problem is None:
                f.status = "verified" if f.completed is not None else "pending"
        report.federation_id = self.federation_id
        report.rounds = sorted(self.rounds.values(), key=lambda r: r.round)
        report.forgets = list(self.forgets.values())
        report.nodes = self.nodes
        report.failures = self.failures
        report.stakes = self.stakes.settle().summary() if self.stakes.in_use else None

    def _record(self, exc: _Inconsistent) -> None:
        self.failures.append(exc.failure)
        if exc.item is not None and exc.item.problem is None:
            exc.item.status = "failed"
            exc.item.problem = exc.failure.message

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _failure(
        at: TxRef, subject: str, what: str, item: Item | None = None, **where: Any
    ) -> _Inconsistent:
        message = f"{subject} (tx {at.tx_hash}, block {at.block_number}): {what}"
        failure = Failure(message, tx_hash=at.tx_hash, block_number=at.block_number, **where)
        return _Inconsistent(failure, item)

    def _round_failure(
        self, item: RoundAudit | None, number: int, event: LedgerEvent, what: str, **where: Any
    ) -> _Inconsistent:
        at = TxRef.of(event)
        return self._failure(at, f"round {number}", what, item, round=number, **where)

    def _forget_failure(
        self, item: ForgetAudit | None, request_id: str, event: LedgerEvent, what: str, **where: Any
    ) -> _Inconsistent:
        name = item.name if item is not None else request_id
        subject = f"forget request {name}"
        return self._failure(TxRef.of(event), subject, what, item, request_id=request_id, **where)

    def _registry_failure(self, event: LedgerEvent, what: str) -> _Inconsistent:
        return self._failure(TxRef.of(event), event.name, what)

    def _check_node_count(self, event: LedgerEvent) -> None:
        if int(event.args["nodeCount"]) != len(self.admitted):
            raise self._registry_failure(
                event, f"says {event.args['nodeCount']} nodes, the history has {len(self.admitted)}"
            )

    def _fetch(self, cid: str, what: str, fail: Callable[..., _Inconsistent]) -> bytes:
        try:
            return self.store.get(cid)
        except StoreError as exc:
            raise fail(f"{what} {cid} cannot be fetched intact: {exc}", cid=cid) from exc

    def _admitted(self, address: str) -> NodeAudit | None:
        return self.admitted.get(address.lower())

    def _check_federation(
        self, found: str, what: str, cid: str, fail: Callable[..., _Inconsistent]
    ) -> None:
        if self.federation_id is None:
            self.federation_id = found
        elif found != self.federation_id:
            raise fail(
                f"{what} {cid} is for federation {found!r}, not {self.federation_id!r}", cid=cid
            )

    # -- registry --------------------------------------------------------------------------

    def _coordinator_admitted(self, event: LedgerEvent) -> None:
        previous = str(event.args["previous"])
        if int(previous, 16) != 0 and (
            self.coordinator is None or previous.lower() != self.coordinator.lower()
        ):
            raise self._registry_failure(
                event,
                f"names {previous} as the previous coordinator, the history says "
                f"{self.coordinator}",
            )
        self.coordinator = str(event.args["coordinator"])

    def _quorum_set(self, event: LedgerEvent) -> None:
        self.configured_quorum = int(event.args["configuredQuorum"])

    def _noise_scale_set(self, event: LedgerEvent) -> None:
        self.noise_micros = int(event.args["noiseScaleMicros"])
        self.noise_since_last_round.add(self.noise_micros)

    def _node_admitted(self, event: LedgerEvent) -> None:
        node = str(event.args["node"])
        if self._admitted(node) is not None:
            raise self._registry_failure(event, f"{node} is admitted twice")
        if self.coordinator is not None and node.lower() == self.coordinator.lower():
            raise self._registry_failure(event, f"the coordinator {node} is admitted as a node")
        self.admissions += 1
        entry = NodeAudit(address=node, admitted=TxRef.of(event), serial=self.admissions)
        self.admitted[node.lower()] = entry
        self.nodes.append(entry)
        self._check_node_count(event)

    def _node_removed(self, event: LedgerEvent) -> None:
        node = str(event.args["node"])
        entry = self.admitted.pop(node.lower(), None)
        if entry is None:
            raise self._registry_failure(event, f"removes {node}, which is not an admitted node")
        entry.removed = TxRef.of(event)
        entry.key = None
        self._check_node_count(event)

    def _key_registered(self, event: LedgerEvent) -> None:
        node = str(event.args["node"])
        entry = self._admitted(node)
        if entry is None:
            raise self._registry_failure(event, f"key from {node}, which is not an admitted node")
        entry.key = _hex(event.args["key"])

    # -- rounds ----------------------------------------------------------------------------

    def _round_proposed(self, event: LedgerEvent) -> None:
        a = event.args
        number = int(a["round"])
        item = RoundAudit(
            round=number,
            proposed=TxRef.of(event),
            proposer=str(a["proposer"]),
            global_model_hash=_hex(a["globalModelHash"]),
            global_model_cid=str(a["globalModelCid"]),
            updates_root=_hex(a["updatesRoot"]),
            manifest_cid=str(a["manifestCid"]),
            quorum=int(a["quorum"]),
            node_count=int(a["nodeCount"]),
            admissions=self.admissions,
        )

        def fail(what: str, **where: Any) -> _Inconsistent:
            return self._round_failure(item, number, event, what, **where)

        if number in self.rounds:
            raise self._round_failure(None, number, event, "proposed a second time")
        self.rounds[number] = item
        previous, self.last_round = self.last_round, max(self.last_round, number)
        if self.coordinator is None or item.proposer.lower() != self.coordinator.lower():
            raise fail(f"proposed by {item.proposer}, not by the coordinator {self.coordinator}")
        if number != previous + 1:
            raise fail(f"rounds are numbered without gaps, the previous round was {previous}")
        nodes = len(self.admitted)
        expected = _quorum_for(self.configured_quorum, nodes)
        if item.node_count != nodes or item.quorum != expected:
            raise fail(
                f"the event says quorum {item.quorum} of {item.node_count} nodes; the roster of "
                f"the time has {nodes} nodes, so the quorum is {expected}"
            )
        model = self._fetch(item.global_model_cid, "global model", fail)
        self.model_size = len(model)
        if _hex(keccak256(model)) != item.global_model_hash:
            raise fail(
                f"global model {item.global_model_cid} hashes to {_hex(keccak256(model))}, the "
                f"chain's globalModelHash is {item.global_model_hash}",
                cid=item.global_model_cid,
            )
        manifest = self._manifest(item, fail)
        try:
            check_published(manifest, model)
        except ProtocolError as exc:
            raise fail(f"{exc} (manifest {item.manifest_cid})", cid=item.manifest_cid) from exc
        item.noise_scale = _declared_noise(manifest)
        declared = round(item.noise_scale * NOISE_MICROS)
        if declared not in self.noise_since_last_round:
            raise fail(
                f"its senders declared noise σ {item.noise_scale}; the chain's σ since the "
                f"previous round was "
                f"{sorted(v / NOISE_MICROS for v in self.noise_since_last_round)}",
                cid=item.manifest_cid,
            )
        self.noise_since_last_round = {self.noise_micros}
        self.manifests[number] = manifest
        for address in item.participants:
            entry = self._admitted(address)
            if entry is not None:
                entry.rounds.append(number)

    def _manifest(self, item: RoundAudit, fail: Callable[..., _Inconsistent]) -> RoundManifest:
        """Fetch, parse and check a round's manifest against the event and the roster."""
        cid = item.manifest_cid
        data = self._fetch(cid, "manifest", fail)
        try:
            manifest = RoundManifest.from_bytes(data)
        except ProtocolError as exc:
            raise fail(f"manifest {cid}: {exc}", cid=cid) from exc
        item.participants = [u.address for u in manifest.updates]
        item.n_total = manifest.n_total
        if manifest.round != item.round:
            raise fail(f"manifest {cid} is for round {manifest.round}", cid=cid)
        self._check_federation(manifest.federation_id, "manifest", cid, fail)
        if (manifest.global_model_cid, manifest.global_model_hash.lower()) != (
            item.global_model_cid,
            item.global_model_hash,
        ):
            raise fail(
                f"manifest {cid} names model {manifest.global_model_cid} "
                f"({manifest.global_model_hash}), the chain names {item.global_model_cid} "
                f"({item.global_model_hash})",
                cid=cid,
            )
        try:
            root = _hex(manifest.updates_root())
        except (ProtocolError, ValueError) as exc:
            raise fail(f"manifest {cid} has a malformed update: {exc}", cid=cid) from exc
        if root != item.updates_root:
            raise fail(
                f"manifest {cid} has updates root {root}, the chain's updatesRoot is "
                f"{item.updates_root}",
                cid=cid,
            )
        for update in manifest.updates:
            try:
                signer = update.signer(self.domain, manifest.federation_id, manifest.round)
            except (ProtocolError, ValueError) as exc:
                raise fail(f"manifest {cid}: update of {update.address}: {exc}", cid=cid) from exc
            if signer.lower() != update.address.lower():
                raise fail(
                    f"manifest {cid}: the update of {update.address} is signed by {signer}",
                    cid=cid,
                )
            if self._admitted(update.address) is None:
                raise fail(
                    f"manifest {cid}: update from {update.address}, which is not an admitted "
                    f"node at block {item.proposed.block_number}",
                    cid=cid,
                )
        self._check_responders(manifest, cid, fail)
        total = sum(u.n_samples for u in manifest.updates)
        if manifest.n_total != total:
            raise fail(
                f"manifest {cid} says n_total {manifest.n_total}, its updates sum to {total}",
                cid=cid,
            )
        return manifest

    @staticmethod
    def _check_responders(
        manifest: RoundManifest, cid: str, fail: Callable[..., _Inconsistent]
    ) -> None:
        """The updates are exactly the models in the aggregate: the stage-2 responders."""
        if SHARE_STAGE not in manifest.responders:
            raise fail(
                f"manifest {cid} does not list the {SHARE_STAGE} responders (whose models the "
                "aggregate sums), so its updates cannot be checked complete",
                cid=cid,
            )
        summed = {a.lower(): a for a in manifest.responders[SHARE_STAGE]}
        committed = {u.address.lower() for u in manifest.updates}
        missing = [summed[a] for a in summed if a not in committed]
        if missing:
            raise fail(
                f"manifest {cid}: {', '.join(missing)} answered stage {SHARE_STAGE} (its model "
                "is in the aggregate) but its signed commitment is missing from the updates",
                cid=cid,
            )
        extra = [u.address for u in manifest.updates if u.address.lower() not in summed]
        if extra:
            raise fail(
                f"manifest {cid}: updates from {', '.join(extra)}, which did not answer stage "
                f"{SHARE_STAGE}, so their models are not in the aggregate",
                cid=cid,
            )

    def _round_approved(self, event: LedgerEvent) -> None:
        self._count_approvals(event, [str(event.args["node"])])

    def _round_approved_by(self, event: LedgerEvent) -> None:
        """Approvals signed off chain, carried by one transaction (``proposeRoundSigned``)."""
        self._count_approvals(event, [str(n) for n in event.args["nodes"]])

    def _count_approvals(self, event: LedgerEvent, nodes: list[str]) -> None:
        """Each node must be admitted by the round's proposal and approve it once; the event's
        count must be the history's."""
        number = int(event.args["round"])
        item = self.rounds.get(number)
        if item is None:
            raise self._round_failure(
                None, number, event, f"approval by {', '.join(nodes)}, never proposed"
            )
        count = self.approval_events.get(number, 0) + len(nodes)
        self.approval_events[number] = count
        for node in nodes:
            approver = self._admitted(node)
            if approver is None:
                raise self._round_failure(
                    item,
                    number,
                    event,
                    f"approval from {node}, which is not an admitted node at block "
                    f"{event.block_number}",
                )
            if approver.serial > item.admissions:
                raise self._round_failure(
                    item,
                    number,
                    event,
                    f"approval from {node}, admitted after the round was proposed",
                )
            if any(a.node.lower() == node.lower() for a in item.approvals):
                raise self._round_failure(item, number, event, f"{node} approved twice")
            item.approvals.append(Approval(node, TxRef.of(event)))
        if int(event.args["approvals"]) != count:
            raise self._round_failure(
                item,
                number,
                event,
                f"the event counts {event.args['approvals']} approvals, the history has {count}",
            )

    def _round_finalized(self, event: LedgerEvent) -> None:
        number = int(event.args["round"])
        item = self.rounds.get(number)
        if item is None:
            raise self._round_failure(None, number, event, "finalized, never proposed")
        if item.finalized is not None:
            raise self._round_failure(item, number, event, "finalized twice")
        valid = len(item.approvals)
        claimed = (int(event.args["approvals"]), int(event.args["quorum"]))
        if claimed != (item.quorum, item.quorum) or valid < item.quorum:
            raise self._round_failure(
                item,
                number,
                event,
                f"finalized with {claimed[0]} approvals for quorum {claimed[1]}, but the round's "
                f"quorum is {item.quorum} and admitted nodes approved it {valid} times",
            )
        item.finalized = TxRef.of(event)

    # -- forgets ---------------------------------------------------------------------------

    def _forget_requested(self, event: LedgerEvent) -> None:
        request_id = _hex(event.args["requestId"])
        if request_id in self.forgets:
            raise self._forget_failure(None, request_id, event, "requested a second time")
        item = ForgetAudit(
            request_id=request_id,
            record_commitment=_hex(event.args["recordCommitment"]),
            requested=TxRef.of(event),
        )
        self.forgets[request_id] = item
        requester = str(event.args["coordinator"])
        if self.coordinator is None or requester.lower() != self.coordinator.lower():
            raise self._forget_failure(
                item,
                request_id,
                event,
                f"requested by {requester}, not by the coordinator {self.coordinator}",
            )
        item.owner = str(event.args["node"])
        if self._admitted(item.owner) is None:
            raise self._forget_failure(
                item, request_id, event, f"names {item.owner}, which is not an admitted node"
            )

    def _forget_certified(self, event: LedgerEvent) -> None:
        a = event.args
        request_id = _hex(a["requestId"])
        item = self.forgets.get(request_id)
        if item is None:
            raise self._forget_failure(None, request_id, event, "certified, never requested")

        def fail(what: str, **where: Any) -> _Inconsistent:
            return self._forget_failure(item, request_id, event, what, **where)

        if item.certified is not None:
            raise fail("certified a second time")
        item.node = str(a["node"])
        item.certificate_cid = str(a["certificateCid"])
        item.new_model_hash = _hex(a["newModelHash"])
        item.after_round = int(a["afterRound"])
        item.certified = TxRef.of(event)
        if self._admitted(item.node) is None:
            raise fail(f"certified by {item.node}, which is not an admitted node")
        if item.owner is None or item.node.lower() != item.owner.lower():
            raise fail(f"certified by {item.node}, but the request names {item.owner}")
        if item.after_round != self.last_round:
            raise fail(
                f"afterRound is {item.after_round}, the last round proposed was {self.last_round}"
            )
        cid = item.certificate_cid
        data = self._fetch(cid, "certificate", fail)
        try:
            cert = Certificate.from_bytes(data)
            cert.verify(expected_signer=item.node)
        except ProtocolError as exc:
            raise fail(f"certificate {cid}: {exc}", cid=cid) from exc
        if not self.domain.matches(cert.chain_id, cert.contract):
            raise fail(
                f"certificate {cid} is signed for contract {cert.contract} on chain "
                f"{cert.chain_id}, not this one ({self.domain.contract} on chain "
                f"{self.domain.chain_id})",
                cid=cid,
            )
        item.certificate = cert
        item.label = cert.request_id
        if _hex(keccak256(cert.request_id.encode())) != request_id:
            raise fail(
                f"certificate {cid} is for request {cert.request_id!r}, whose keccak256 is not "
                "the on-chain request id",
                cid=cid,
            )
        self._check_federation(cert.federation_id, "certificate", cid, fail)
        if cert.model_hash_after != item.new_model_hash:
            raise fail(
                f"certificate {cid} says model hash after {cert.model_hash_after}, the chain's "
                f"newModelHash is {item.new_model_hash}",
                cid=cid,
            )
        self._check_committed_before(item, cert, fail)
        if cert.slices_retrained[0] == 0 and self.model_size is not None:
            zero_head = _hex(keccak256(bytes(self.model_size)))
            if cert.from_checkpoint_hash != zero_head:
                raise fail(
                    f"certificate {cid} retrains from slice 0 but starts from checkpoint "
                    f"{cert.from_checkpoint_hash}, not the all-zero head {zero_head}",
                    cid=cid,
                )

    def _check_committed_before(
        self, item: ForgetAudit, cert: Certificate, fail: Callable[..., _Inconsistent]
    ) -> None:
        """The certificate's old slice root is one the node committed to in a finalized round
        before, and its model after the forget is not the one it last committed."""
        assert item.node is not None and item.after_round is not None
        cid = item.certificate_cid
        earlier = [
            (number, update)
            for number in sorted(self.manifests)
            if number <= item.after_round
            and self.rounds[number].finalized is not None
            and self.rounds[number].problem is None
            and (update := self.manifests[number].update_of(item.node)) is not None
        ]
        old_root = cert.old_slice_root.lower()
        if not any(
            u.slice_root(cert.shard, cert.slice, cert.slices_total) == old_root for _, u in earlier
        ):
            raise fail(
                f"certificate {cid}: old slice root {old_root} (shard {cert.shard}, slice "
                f"{cert.slice}) was never committed by {item.node} in a finalized round before",
                cid=cid,
            )
        last_round, last = earlier[-1]
        if last.model_hash.lower() == cert.model_hash_after.lower():
            raise fail(
                f"certificate {cid}: model hash after {cert.model_hash_after} is the model "
                f"{item.node} already committed in round {last_round}: nothing was retrained",
                cid=cid,
            )

    def _forget_completed(self, event: LedgerEvent) -> None:
        request_id = _hex(event.args["requestId"])
        number = int(event.args["round"])
        node = str(event.args["node"])
        item = self.forgets.get(request_id)
        if item is None:
            raise self._forget_failure(None, request_id, event, "completed, never requested")

        def fail(what: str, **where: Any) -> _Inconsistent:
            return self._forget_failure(item, request_id, event, what, round=number, **where)

        if item.completed is not None:
            raise fail("completed a second time")
        item.completed = TxRef.of(event)
        item.completed_round = number
        if item.certified is None or item.node is None or item.after_round is None:
            raise fail(f"completed in round {number} but never certified")
        if node.lower() != item.node.lower():
            raise fail(f"completion names node {node}, the certifying node is {item.node}")
        completing = self.rounds.get(number)
        if completing is None or completing.finalized is None:
            raise fail(f"completed in round {number}, which is not finalized")
        if completing.problem is not None:
            raise fail(f"completed in round {number}, which failed its audit")
        if number <= item.after_round:
            raise fail(
                f"completed in round {number}, not after round {item.after_round} "
                "(the last round proposed when it was certified)"
            )
        if item.certificate is None:
            raise fail("its certificate did not verify")
        after = item.certificate.model_hash_after
        update = self.manifests[number].update_of(item.node)
        if update is None:
            raise fail(
                f"round {number}'s manifest {completing.manifest_cid} has no update from the "
                f"certifying node {item.node}",
                cid=completing.manifest_cid,
            )
        if update.model_hash.lower() != after:
            raise fail(
                f"in round {number} (manifest {completing.manifest_cid}) node {item.node} "
                f"committed model {update.model_hash}, but its certificate "
                f"{item.certificate_cid} says model hash after {after}",
                cid=completing.manifest_cid,
            )
        cert = item.certificate
        new_root = update.slice_root(cert.shard, cert.slice, cert.slices_total)
        if new_root != cert.new_slice_root.lower():
            raise fail(
                f"in round {number} (manifest {completing.manifest_cid}) node {item.node} "
                f"committed slice root {new_root} for shard {cert.shard} slice {cert.slice}, "
                f"but its certificate {item.certificate_cid} says {cert.new_slice_root}",
                cid=completing.manifest_cid,
            )

    # -- stakes, rewards and slashes -------------------------------------------------------

    def _watch_stakes(self) -> None:
        """Replay stake events too, and show the stake replay the events it depends on."""
        self.stakes = StakeLedger()
        for name in STAKE_EVENTS:
            self._handlers[name] = self._stake_event
        for name in CONTEXT_EVENTS:
            self._handlers[name] = self._seen_by_stakes(self._handlers[name])

    def _seen_by_stakes(
        self, handler: Callable[[LedgerEvent], None]
    ) -> Callable[[LedgerEvent], None]:
        def both(event: LedgerEvent) -> None:
            self.stakes.apply(event)
            handler(event)

        return both

    def _stake_event(self, event: LedgerEvent) -> None:
        problem = self.stakes.apply(event)
        if problem is not None:
            raise self._failure(TxRef.of(event), event.name, problem)
