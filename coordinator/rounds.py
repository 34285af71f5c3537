"""The coordinator's work: secure rounds recorded on chain, and forget requests served.

A round (docs/rounds.md) is four message stages: ``train`` (commitments), ``train.share``
(each committed node signs the sender set, uploads its masked model and seals Shamir
shares of the mask seeds to the chain's whole roster), ``train.aggregate`` (the seed
shares that unmask the sum, shown every sender's signature on that set) and, after the
coordinator has unmasked the sum and stored model and manifest by CID, ``query.approve``
(each node checks the content and signs an EIP-712 approval; one ``proposeRoundSigned``
proposes the round with every signature). The coordinator sees commitments, masked
models, envelopes, the sum's mask seeds and the sum, never one node's model.

Forget requests (docs/rounds.md) move through the durable queue: ``requestForget`` on chain,
dispatch to every node (only the owner retrains and certifies), a new round, and
``completeForget`` once that round is finalized with the owner's new model in it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from coordinator.deadline import StragglerRule
from coordinator.metrics import count_round
from coordinator.queue import CoordinatorDB, ForgetRequest
from infra.logs import bind_round, log_context
from protocol.canonical import canonical_json
from protocol.commitments import Update, recover_leaf_signer
from protocol.epoch import roster_epoch
from protocol.errors import LedgerError, LetheError, ProtocolError
from protocol.hashing import keccak256
from protocol.manifest import NodeUpdate, RoundManifest
from protocol.messages import (
    AGGREGATE,
    SHARE,
    TRAIN,
    AggregateReply,
    AggregateRequest,
    Agreement,
    ApproveReply,
    ApproveRequest,
    ForgetEntry,
    ForgetResult,
    NodeReply,
    ShareReply,
    ShareRequest,
    StageMessage,
    TrainReply,
    TrainRequest,
)
from protocol.records_root import RecordsProof, RecordsRoot
from protocol.typed_data import Domain

if TYPE_CHECKING:
    from coordinator.config import CoordinatorConfig
    from coordinator.transport import Transport
    from protocol.ledger import Ledger, TxResult
    from protocol.recompute import Signed
    from protocol.secure_sum import MaskedInput, Reveal, Roster, SumSettings
    from protocol.store import ContentStore

logger = logging.getLogger("lethe.coordinator")

R = TypeVar("R", bound=NodeReply)


class RoundFailed(LetheError):
    """A round could not complete (too few nodes answered a stage)."""


class RoundFutile(RoundFailed):
    """A forget round stopped after ``train``: nothing it could publish would move a request
    (no owner certified, no certified owner committed its new model), so nothing is shared
    or proposed."""


@dataclass
class RoundOutcome:
    """What one round produced, as saved in the coordinator's database."""

    round: int
    finalized: bool
    info: dict[str, Any] = field(default_factory=dict)
    manifest: RoundManifest | None = None


WAITING_FOR_ROOT = "waiting for a finalized round with the records root"
"""Why a request is not on chain yet: ``requestForget`` needs the owner's records root of a
finalized round holding the record, at its current certification count."""


@dataclass(frozen=True)
class Committed:
    """A node whose train reply was accepted: its Flower id, roster place and commitment."""

    node: int
    x: int
    key: bytes
    reply: TrainReply


@dataclass
class RoundState:
    """Everything one round has gathered so far; each stage method reads and extends it."""

    federation_id: str
    round: int
    through_slice: int | None
    forgets: Sequence[ForgetRequest]
    started: float = field(default_factory=time.monotonic)
    asked: dict[str, int] = field(default_factory=dict)
    """Request id → the Flower node its record id was sent to (its owner as last seen)."""
    committed: dict[str, Committed] = field(default_factory=dict)
    """Address → accepted train reply (stage 1)."""
    roster: Roster | None = None
    settings: SumSettings | None = None
    """The round's sum settings, derived from the chain as every node derives them."""
    envelopes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """Sender → recipient → sealed seed shares (stage 2)."""
    masked: dict[str, MaskedInput] = field(default_factory=dict)
    """Sender → its masked vector (stage 2)."""
    masked_signed: dict[str, Signed] = field(default_factory=dict)
    """Sender → its masked vector's bytes and its signature on them (the transcript)."""
    agreements: dict[str, str] = field(default_factory=dict)
    """Sender → its signature on the sender set (stage 2)."""
    reveals: list[Reveal] = field(default_factory=list)
    """The senders' seed shares, each signed by its node (stage 3)."""
    reveals_signed: dict[str, Signed] = field(default_factory=dict)
    """Revealer → its reveal's bytes and signature (the transcript)."""
    manifest: RoundManifest | None = None
    manifest_cid: str = ""
    proposal: TxResult | None = None
    approvals: dict[str, ApproveReply] = field(default_factory=dict)

    @property
    def n_total(self) -> int:
        """Samples of every committed node: the weights' denominator."""
        return sum(c.reply.n_samples for c in self.committed.values())

    @property
    def senders(self) -> list[str]:
        """Nodes whose shares reached every roster member, in canonical order."""
        return sorted(self.envelopes, key=str.lower)

    def addresses(self) -> dict[int, str]:
        """Flower node id → the address it committed as."""
        return {c.node: address for address, c in self.committed.items()}

    def base(self) -> dict[str, Any]:
        """The fields every request of this round carries."""
        return {
            "federation_id": self.federation_id,
            "round": self.round,
            "through_slice": self.through_slice,
        }


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _receipt(federation_id: str, address: str, result: ForgetResult) -> dict[str, Any]:
    """The data subject's receipt (``protocol.receipt``) from the owner's forget result."""
    from protocol.receipt import Receipt

    return Receipt(
        request_id=result.request_id,
        federation_id=federation_id,
        node_address=address,
        certificate_cid=result.certificate_cid,
        record_salt=result.record_salt.lower(),  # hex checked by the reply's schema
        commitment_salt=result.commitment_salt.lower(),
    ).to_json()


def _roots_hex(roots: bytes) -> list[str]:
    return [_hex(roots[i : i + 32]) for i in range(0, len(roots), 32)]


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
        self.retry_s = 5.0
        """First back-off after a futile forget round (doubles up to ``backoff_max_s``)."""
        self.error_pause_s = 1.0
        self.stragglers = StragglerRule(config.straggler_floor_s, config.straggler_factor)
        """When a stage after ``train`` stops waiting for nodes behind a majority."""
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self._backoff_nodes: frozenset[int] = frozenset()
        self._backoff_step = ""
        self._absent_since: dict[str, float] = {}
        self.last_committed: set[str] = set()
        """Addresses that committed in the last round's ``train`` (lower case)."""
        self.last_unasked_owner = False
        self.on_step: Callable[[str], None] = lambda step: None
        """Told what the loop does now (the ServerApp's heartbeat shows it in ``/health``)."""

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

    def _chain_members_named(self) -> dict[str, tuple[int, bytes]]:
        """Registered nodes from the chain: checksummed address → (Shamir x, X25519 key)."""
        return {
            e.address: (index + 1, e.key)
            for index, e in enumerate(self.ledger.roster())
            if e.key is not None
        }

    def _exchange(
        self,
        requests: dict[int, StageMessage],
        reply_type: type[R],
        timeout: float,
        *,
        answering_as: dict[int, str] | None = None,
    ) -> dict[int, R]:
        """One stage: send each node its request, keep the replies that are well-formed.

        A reply that is not exactly ``reply_type`` (missing, extra or ill-typed fields), or
        that names another address than ``answering_as`` expects of its node, is a dropout
        like silence: logged, and the node is left out of the rest of the round. Every
        stage but ``train`` stops waiting early for nodes far behind a majority
        (:class:`~coordinator.deadline.StragglerRule`); at ``train`` a forget owner
        retrains while the others only commit, so only the SuperLink's heartbeat (or the
        train timeout) drops a node there.
        """
        stage = reply_type.STAGE
        records = {node: request.to_record() for node, request in requests.items()}
        replies: dict[int, R] = {}
        stragglers = None if stage == TRAIN else self.stragglers
        for node, record in self.transport.exchange(
            stage, records, timeout, stragglers=stragglers
        ).items():
            if node not in requests:
                self._drop(stage, node, "answered unasked")
                continue
            try:
                reply = reply_type.from_record(record)
            except ProtocolError as exc:
                self._drop(stage, node, f"malformed reply: {exc}")
                continue
            if answering_as is not None and reply.address != answering_as.get(node):
                self._drop(stage, node, f"answered as {reply.address}")
                continue
            replies[node] = reply
        return replies

    def _drop(self, stage: str, node: int, why: str) -> None:
        logger.warning("%s: node %s dropped: %s", stage, node, why)

    def train_stage(self, state: RoundState) -> None:
        """Stage 1: nodes forget what is asked, train and commit; keep registered, signed ones."""
        named = self._chain_members_named()
        members = {a.lower(): member for a, member in named.items()}
        epoch = _hex(roster_epoch(named))
        nodes = self.transport.node_ids()
        replies = self._exchange(
            {n: self._train_request(state, n, epoch) for n in nodes},
            TrainReply,
            self.config.train_timeout_s,
        )
        for node, reply in sorted(replies.items()):
            address = reply.address
            member = members.get(address.lower())
            if member is None or _hex(member[1]) != reply.public_key:
                self._drop(TRAIN, node, f"{address} is not registered with that key")
                continue
            if address in state.committed:
                self._drop(TRAIN, node, f"{address} already answered from another node")
                continue
            roots = reply.slice_roots
            update = Update(
                self.fed,
                state.round,
                address,
                bytes.fromhex(reply.model_hash[2:]),
                reply.n_samples,
                tuple(roots[i : i + 32] for i in range(0, len(roots), 32)),
            )
            try:
                signer = update.signer(Domain.of(self.ledger), reply.signature)
            except ProtocolError as exc:
                self._drop(TRAIN, node, str(exc))
                continue
            if signer.lower() != address.lower():
                self._drop(TRAIN, node, f"{address} signed its commitment with another key")
                continue
            problem = self._records_root_problem(state.round, reply)
            if problem:
                self._drop(TRAIN, node, problem)
                continue
            state.committed[address] = Committed(node, member[0], member[1], reply)
            self._save_node(state.round, state.committed[address])
        self._record_forget_results(state, set(members))
        self.last_committed = {a.lower() for a in state.committed}
        if len(state.committed) < self.config.min_nodes:
            raise RoundFailed(
                f"round {state.round}: {len(state.committed)} nodes committed, "
                f"need {self.config.min_nodes}"
            )

    def _train_request(self, state: RoundState, node: int, epoch: str) -> TrainRequest:
        """The train request for one Flower node: a record id goes only to the node named as
        its owner on chain (as it last answered from this Flower node), never to the others.
        ``epoch`` is the chain's roster epoch, which every node checks for itself."""
        last_seen = {
            int(n["flower_node_id"]): str(n["address"]).lower()
            for n in self.db.list_nodes()
            if n.get("flower_node_id") is not None
        }
        address = last_seen.get(node)
        entries = [
            ForgetEntry(request_id=r.request_id, record_id=r.record_id)
            for r in state.forgets
            if address is not None and (r.node_address or "").lower() == address
        ]
        state.asked.update({e.request_id: node for e in entries})
        return TrainRequest(
            **state.base(),
            shards=self.config.shards,
            slices=self.config.slices,
            epoch=epoch,
            forget_requests=entries,
        )

    def _records_root_problem(self, round_no: int, reply: TrainReply) -> str | None:
        """Why a reply's records root could not back a forget request, or None: a node whose
        root is unsigned, out of order or names a stale certification count would hold
        records no request can name, so it is not let into the round."""
        try:
            records = RecordsRoot.unpack(round_no, reply.records, reply.records_certifications)
            signer = records.signer(Domain.of(self.ledger), reply.records_signature)
        except ProtocolError as exc:
            return f"{reply.address} sent an unusable records root: {exc}"
        if signer.lower() != reply.address.lower():
            return f"{reply.address} signed its records root with another key"
        current = self.ledger.certifications_of(reply.address)
        if reply.records_certifications != current:
            return (
                f"{reply.address}'s records root names {reply.records_certifications} "
                f"certified forgets, the chain has {current}"
            )
        return None

    def _save_node(self, round_no: int, committed: Committed) -> None:
        reply = committed.reply
        records = reply.records
        self.db.replace_record_index(
            reply.address, [_hex(records[i : i + 32]) for i in range(0, len(records), 32)]
        )
        self.db.save_records_root(
            reply.address,
            round_no,
            reply.records_certifications,
            reply.records_signature,
            records,
        )
        self.db.save_node(
            reply.address,
            {
                "flower_node_id": committed.node,
                "x": committed.x,
                "public_key": reply.public_key,
                "n_samples": reply.n_samples,
                "model_hash": reply.model_hash,
                "last_round": round_no,
            },
        )

    def _record_forget_results(self, state: RoundState, everyone: set[str]) -> None:
        """Certified by the owner; failed if every registered node answered and the owner,
        asked, did not claim it (an owner that came back under a new Flower id was not asked
        this round: it is asked in the next one)."""
        asked = {r.request_id for r in state.forgets}
        claimed = {
            result.request_id: (address, result)
            for address, committed in state.committed.items()
            for result in committed.reply.forget_results
            if result.request_id in asked
        }
        answered = {a.lower() for a in state.committed}
        for req in state.forgets:
            if req.request_id in claimed:
                address, result = claimed[req.request_id]
                self.db.save_receipt(req.request_id, _receipt(self.fed, address, result))
                self.db.advance_forget(
                    req.request_id,
                    "dispatched",
                    "certified",
                    node_address=address,
                    certificate_cid=result.certificate_cid,
                    certify_tx=result.certify_tx,
                    new_model_hash=result.new_model_hash,
                    reason=None,
                )
                self.report(
                    f"forget {req.request_id}: certified by {address} "
                    f"(certificate {result.certificate_cid})"
                )
            elif everyone <= answered and self._owner_was_asked(state, req):
                self.db.advance_forget(
                    req.request_id, "dispatched", "failed", reason="no node holds this record"
                )

    @staticmethod
    def _owner_was_asked(state: RoundState, req: ForgetRequest) -> bool:
        owner = (req.node_address or "").lower()
        nodes = [c.node for a, c in state.committed.items() if a.lower() == owner]
        return bool(nodes) and state.asked.get(req.request_id) == nodes[0]

    def share_stage(self, state: RoundState) -> None:
        """Stage 2: every committed node signs the sender set (all of them), uploads α_i·w_i
        masked and signed, and seals Shamir shares of its mask seeds for every roster
        member; if some did not share but at least max(t, 3) did, those are asked once to
        agree to themselves alone (with the same masked vectors)."""
        from protocol.recompute import Signed
        from protocol.secure_sum import (
            MIN_SENDERS,
            MaskedInput,
            Member,
            Roster,
            SumSettings,
            default_threshold,
            order,
            roster_digest,
            sender_set_digest,
        )

        # The roster is the chain's, whoever committed: nodes refuse any other.
        chain = sorted(self._chain_members_named().items(), key=lambda item: item[1][0])
        by_x = sorted(state.committed.values(), key=lambda c: c.x)
        need = max(default_threshold(len(chain)), MIN_SENDERS)
        if len(by_x) < need:  # asking for shares now would tie this round number to too few
            raise RoundFailed(f"round {state.round}: {len(by_x)} nodes committed, need {need}")
        roster = state.roster = Roster(
            federation_id=self.fed,
            round=state.round,
            threshold=default_threshold(len(chain)),
            members=tuple(Member(address, x, key) for address, (x, key) in chain),
        )
        # The code and the noise every node derives from the chain: nodes refuse any other.
        settings = state.settings = SumSettings.for_round(
            roster.n,
            self.ledger.noise_scale(),
            through_slice=state.through_slice,
            n_total=state.n_total,
        )
        roster_bytes = roster.to_bytes()
        expected = {m.node_id for m in roster.members}
        masked_with = order(state.committed)  # the first set each sender signs, and masks with

        def masked_input(reply: ShareReply) -> MaskedInput:
            """The reply's masked vector, if it is the sender's own, signed, for this round."""
            signer = recover_leaf_signer(keccak256(reply.masked), reply.masked_signature)
            masked = MaskedInput.from_bytes(reply.masked)
            if signer.lower() != reply.address.lower() or masked.node_id != reply.address:
                raise ProtocolError("the masked vector is not its own, signed by it")
            if (masked.federation_id, masked.round, masked.roster, masked.masked_with) != (
                self.fed,
                state.round,
                roster_digest(roster),
                masked_with,
            ):
                raise ProtocolError("the masked vector is not masked for this round's senders")
            return masked

        def ask(senders: list[str]) -> None:
            """Ask the senders to sign ``senders`` and share; keep well-formed replies."""
            commitments = canonical_json([asdict(self._node_update(state, a)) for a in senders])
            requests: dict[int, StageMessage] = {
                state.committed[a].node: ShareRequest(
                    **state.base(),
                    model_hash=state.committed[a].reply.model_hash,
                    n_total=state.n_total,
                    clip=settings.clip,
                    frac_bits=settings.frac_bits,
                    senders=senders,
                    roster=roster_bytes,
                    commitments=commitments,
                )
                for a in senders
            }
            digest = sender_set_digest(roster, senders, settings)
            state.envelopes, state.agreements, state.masked = {}, {}, {}
            state.masked_signed = {}
            for node, reply in self._exchange(
                requests, ShareReply, self.config.stage_timeout_s, answering_as=state.addresses()
            ).items():
                try:
                    signer = recover_leaf_signer(digest, reply.signature)
                    masked = masked_input(reply)
                except ProtocolError as exc:
                    self._drop(SHARE, node, str(exc))
                    continue
                if signer.lower() != reply.address.lower():
                    self._drop(SHARE, node, "did not sign the sender set with its own key")
                elif set(reply.envelopes) != expected:
                    self._drop(SHARE, node, "envelopes are not exactly one per roster member")
                else:
                    state.envelopes[reply.address] = reply.envelopes
                    state.agreements[reply.address] = reply.signature
                    state.masked[reply.address] = masked
                    state.masked_signed[reply.address] = Signed(
                        reply.masked, reply.masked_signature
                    )

        senders = sorted(state.committed, key=str.lower)
        ask(senders)
        if need <= len(state.senders) < len(senders):
            # A sender was lost before its shares arrived. The others signed a set with it;
            # each may agree once more to the smaller set of those whose shares did arrive
            # (same shares, same N), before summing and for a model new in this round
            # (docs/trust.md). Enough of them: the round goes on without the lost one.
            lost = sorted(set(senders) - set(state.senders), key=str.lower)
            self.report(
                f"round {state.round}: {', '.join(lost)} did not share; asking the "
                f"{len(state.senders)} others to agree on themselves"
            )
            senders = state.senders
            ask(senders)
        if len(state.senders) < len(senders):
            raise RoundFailed(
                f"round {state.round}: {len(state.senders)} nodes shared, need all "
                f"{len(senders)} in the sender set: nodes sum only what every sender agreed to"
                + (f" (and at least {need})" if len(state.senders) < need else "")
            )
        self.report(
            f"round {state.round}: {len(state.senders)}/{roster.n} nodes shared "
            f"(t={roster.threshold})"
        )

    def aggregate_stage(self, state: RoundState) -> None:
        """Stage 3: each sender opens the envelopes addressed to it and signs its shares of the
        seeds that unmask the sum (after checking every sender's signature on the set)."""
        from protocol.recompute import Signed
        from protocol.secure_sum import Reveal

        assert state.roster is not None
        senders = state.senders
        agreements = [
            Agreement(address=a, signature=sig) for a, sig in sorted(state.agreements.items())
        ]
        requests: dict[int, StageMessage] = {
            state.committed[s].node: AggregateRequest(
                **state.base(),
                senders=senders,
                roster=state.roster.to_bytes(),
                envelopes={src: state.envelopes[src][s] for src in senders},
                agreements=agreements,
            )
            for s in senders
        }
        seen: set[str] = set()
        for node, reply in self._exchange(
            requests, AggregateReply, self.config.stage_timeout_s, answering_as=state.addresses()
        ).items():
            address = reply.address
            try:
                signer = recover_leaf_signer(keccak256(reply.reveal), reply.signature)
                revealed = Reveal.from_bytes(reply.reveal)
            except ProtocolError as exc:
                self._drop(AGGREGATE, node, str(exc))
                continue
            if signer.lower() != address.lower() or revealed.node_id != address:
                self._drop(AGGREGATE, node, "reveal is not its own, signed by it")
            elif address not in seen:
                seen.add(address)
                state.reveals.append(revealed)
                state.reveals_signed[address] = Signed(reply.reveal, reply.signature)
        if len(state.reveals) < state.roster.threshold:
            raise RoundFailed(
                f"round {state.round}: {len(state.reveals)} reveals, "
                f"threshold {state.roster.threshold}"
            )

    def publish_stage(self, state: RoundState) -> None:
        """Unmask the (noisy) weighted sum, store model and manifest by CID. The manifest
        carries the round's transcript, so every node and anyone else recomputes the same
        model from it (``protocol.recompute``); the coordinator never holds an exact sum."""
        from protocol.model import model_bytes
        from protocol.recompute import Transcript, global_model

        assert state.roster is not None and state.settings is not None
        roster, senders, settings = state.roster, state.senders, state.settings
        n_senders = sum(state.committed[s].reply.n_samples for s in senders)
        total = global_model(
            roster,
            {s: state.masked[s] for s in senders},
            state.reveals,
            settings.fixed_point,
            settings.n_total,
            n_senders,
        )
        responders = sorted((r.node_id for r in state.reveals), key=str.lower)
        global_bytes = model_bytes(total)
        model_cid = self.store.put(global_bytes)
        manifest = state.manifest = RoundManifest(
            federation_id=self.fed,
            round=state.round,
            threshold=roster.threshold,
            roster=[
                {"address": m.node_id, "x": m.x, "public_key": _hex(m.public_key)}
                for m in roster.members
            ],
            updates=[self._node_update(state, s) for s in senders],
            responders={
                "train": sorted(state.committed, key=str.lower),
                "share": senders,
                "aggregate": responders,
            },
            dropped=sorted({m.node_id for m in roster.members} - set(responders), key=str.lower),
            global_model_cid=model_cid,
            global_model_hash=_hex(keccak256(global_bytes)),
            n_total=n_senders,
            fixed_point={"clip": settings.clip, "frac_bits": settings.frac_bits},
            forget_requests=[r.request_id for r in state.forgets],
            transcript=Transcript(
                masked={s: state.masked_signed[s] for s in senders},
                agreements={s: state.agreements[s] for s in senders},
                reveals=dict(state.reveals_signed),
            ).to_json(),
        )
        state.manifest_cid = self.store.put(manifest.to_bytes())

    @staticmethod
    def _node_update(state: RoundState, address: str) -> NodeUpdate:
        """A committed node's signed update, as the manifest and the share request list it."""
        reply = state.committed[address].reply
        return NodeUpdate(
            address,
            reply.model_hash,
            reply.n_samples,
            reply.signature,
            _roots_hex(reply.slice_roots),
        )

    def approve_stage(self, state: RoundState) -> None:
        """Stage 4: the nodes that aggregated check the round's content and sign its approval;
        one ``proposeRoundSigned`` proposes it with every valid signature (docs/rounds.md).

        A signature that does not recover to its replying node is dropped here (it would
        revert the whole call). If the call still fails, the round is proposed alone and the
        nodes are asked again: seeing it on chain, each approves with its own transaction.
        """
        from protocol.approvals import RoundApproval

        manifest = state.manifest
        assert manifest is not None
        request = ApproveRequest(
            **state.base(),
            model_cid=manifest.global_model_cid,
            model_hash=manifest.global_model_hash,
            updates_root=_hex(manifest.updates_root()),
            manifest_cid=state.manifest_cid,
        )
        content = RoundApproval(
            state.round,
            bytes.fromhex(manifest.global_model_hash[2:]),
            manifest.global_model_cid,
            manifest.updates_root(),
            state.manifest_cid,
        )
        signatures: dict[str, str] = {}
        for reply in self._ask_approval(state, request):
            if reply.signature is None:
                if reply.tx_hash is None:  # neither signed nor approved on chain: not counted
                    del state.approvals[reply.address]
                continue
            try:
                signer = content.signer(Domain.of(self.ledger), reply.signature)
            except ProtocolError:
                signer = ""
            if signer.lower() == reply.address.lower():
                signatures[reply.address] = reply.signature
            else:
                logger.warning(
                    "round %d: %s sent a bad approval signature", state.round, reply.address
                )
                del state.approvals[reply.address]
        fields = content.fields()
        try:
            proposal = self.ledger.propose_round_signed(*fields, signatures)
        except LedgerError as exc:
            self.report(f"round {state.round}: signed proposal refused ({exc}); proposing alone")
            proposal = self.ledger.propose_round(*fields)
            state.proposal = proposal
            state.approvals.clear()
            self._ask_approval(state, request)
        else:
            state.proposal = proposal
            for address in signatures:
                state.approvals[address] = replace(
                    state.approvals[address], tx_hash=proposal.tx_hash
                )
        self.report(
            f"round {state.round}: proposed with {len(signatures)} signed approvals "
            f"(tx {proposal.tx_hash}, gas {proposal.gas_used})"
        )

    def _ask_approval(self, state: RoundState, request: ApproveRequest) -> list[ApproveReply]:
        manifest = state.manifest
        assert manifest is not None
        requests: dict[int, StageMessage] = {
            state.committed[a].node: request for a in manifest.responders["aggregate"]
        }
        replies = list(
            self._exchange(
                requests, ApproveReply, self.config.stage_timeout_s, answering_as=state.addresses()
            ).values()
        )
        for reply in replies:
            state.approvals[reply.address] = reply
        return replies

    def record(self, state: RoundState, stages: dict[str, float] | None = None) -> RoundOutcome:
        """Read the round's fate from the chain and save it in the database."""
        manifest, proposal = state.manifest, state.proposal
        assert manifest is not None and proposal is not None and state.roster is not None
        on_chain = self.ledger.round_state(state.round)
        accuracies = [r.accuracy for r in state.approvals.values() if r.accuracy is not None]
        info = {
            "through_slice": state.through_slice,
            "threshold": state.roster.threshold,
            "roster": [m.node_id for m in state.roster.members],
            "responders": manifest.responders,
            "dropped": manifest.dropped,
            "n_total": manifest.n_total,
            "global_model_cid": manifest.global_model_cid,
            "global_model_hash": manifest.global_model_hash,
            "manifest_cid": state.manifest_cid,
            "updates_root": _hex(manifest.updates_root()),
            "propose_tx": proposal.tx_hash,
            "propose_block": proposal.block_number,
            "propose_gas": proposal.gas_used,
            "approvals": {a: r.tx_hash for a, r in state.approvals.items()},
            "quorum": on_chain.quorum,
            "accuracy": float(np.mean(accuracies)) if accuracies else None,
            "forget_requests": manifest.forget_requests,
            "seconds": round(time.monotonic() - state.started, 3),
            "stage_seconds": {name: round(s, 3) for name, s in (stages or {}).items()},
        }
        self.db.save_round(state.round, "finalized" if on_chain.finalized else "proposed", info)
        acc = "n/a" if info["accuracy"] is None else f"{info['accuracy']:.3f}"
        self.report(
            f"round {state.round}: {'FINALIZED' if on_chain.finalized else 'not finalized'} with "
            f"{on_chain.approvals}/{on_chain.quorum} approvals, accuracy {acc}, "
            f"{info['seconds']:.1f} s"
        )
        return RoundOutcome(state.round, on_chain.finalized, info, manifest)

    def run_round(
        self,
        through_slice: int | None,
        *,
        forgets: Sequence[ForgetRequest] = (),
        require_change: bool = False,
    ) -> RoundOutcome:
        """:meth:`_run_round`, its outcome counted for ``GET /metrics``, its log lines
        naming the round and the forget requests it carries."""
        with (
            count_round(self.db, RoundFailed, RoundFutile),
            log_context(request_ids=[r.request_id for r in forgets]),
        ):
            return self._run_round(through_slice, forgets, require_change)

    def _run_round(
        self,
        through_slice: int | None,
        forgets: Sequence[ForgetRequest],
        require_change: bool,
    ) -> RoundOutcome:
        """Run one secure round end to end and record it; RoundFailed if too few answer.

        With ``require_change`` (forget rounds), the round stops after ``train`` with
        :class:`RoundFutile` unless it can move a request: a round that would only republish
        unchanged models is never shared nor proposed.
        """
        round_no = self.ledger.last_round() + 1  # the contract takes only the next round
        bind_round(round_no)
        state = RoundState(self.fed, round_no, through_slice, forgets)
        label = "all slices" if through_slice is None else f"slices 1..{through_slice + 1}"
        self.report(f"round {state.round}: training ({label})")
        self.train_stage(state)
        self.last_unasked_owner = any(
            r.request_id not in state.asked
            and (r.node_address or "").lower() in self.last_committed
            for r in forgets
        )
        if require_change and not self._can_complete(state):
            raise RoundFutile(
                f"round {state.round}: not shared nor proposed, it cannot move a request "
                "(no owner certified, no certified owner committed its new model)"
            )
        self._check_new_roster(state)
        timings = {"train": time.monotonic() - state.started}
        for name, stage in (
            ("share", self.share_stage),
            ("aggregate", self.aggregate_stage),
            ("publish", self.publish_stage),
            ("approve", self.approve_stage),
        ):
            began = time.monotonic()
            stage(state)
            timings[name] = time.monotonic() - began
        outcome = self.record(state, stages=timings)
        logger.info(
            "round %d: stages %s",
            state.round,
            " ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()),
        )
        return outcome

    def _check_new_roster(self, state: RoundState) -> None:
        """The first round after the roster changed on chain waits for every registered node.

        Every node retrains for the new roster's epoch, and its model, once summed, may
        only be summed with that same set again (docs/trust.md, rule 5): a first sum
        without a registered node (a newcomer that has not connected yet) would keep it out
        of every later round of the epoch. So nothing is shared until all of them committed.
        """
        recorded = self.db.list_rounds()
        if not recorded:
            return
        members = self._chain_members_named()
        if roster_epoch(recorded[-1]["roster"]) == roster_epoch(members):
            return
        committed = {a.lower() for a in state.committed}
        missing = sorted((a for a in members if a.lower() not in committed), key=str.lower)
        if missing:
            raise RoundFailed(
                f"round {state.round}: the first round of a new roster needs every registered "
                f"node; waiting for {', '.join(missing)} (nothing shared)"
            )

    def _can_complete(self, state: RoundState) -> bool:
        """Whether a finalized round would complete a certified request: its owner committed
        the new model it certified (certified in this round's ``train`` or before)."""
        committed = {a.lower(): c.reply.model_hash for a, c in state.committed.items()}
        return any(
            committed.get((r.node_address or "").lower()) == r.new_model_hash
            for r in self.db.list_forgets(("certified",))
        )

    # -- forget requests ----------------------------------------------------------------

    def _request_on_chain(self, req: ForgetRequest) -> None:
        """Open the request on chain, naming the node that announced the record's commitment
        (only that node may then certify it); a record several nodes announced gets one
        request per holder (``CoordinatorDB.split_forget``), none silently dropped."""
        from protocol.ledger import ContractRevert

        if req.parent_id is not None:  # one holder's part: that holder, as split
            owner = req.node_address or ""
        else:
            owners = self.db.record_owners(req.record_commitment)
            if not owners:
                self.db.advance_forget(
                    req.request_id, "received", "failed", reason="no node holds this record"
                )
                return
            if len(owners) > 1:  # every holder forgets: one request on chain for each
                parts = self.db.split_forget(req.request_id, owners)
                self.report(
                    f"forget {req.request_id}: record held by {len(owners)} nodes "
                    f"({', '.join(owners)}); one request for each"
                )
                for part in parts:
                    if part.state == "received":
                        self._request_on_chain(part)
                return
            owner = owners[0]
        commitment = bytes.fromhex(req.record_commitment[2:])
        committed = self._records_proof(owner, commitment)
        if isinstance(committed, str):  # retried at the next pass, after the next round
            self.db.set_reason(req.request_id, "received", committed)
            return
        try:
            tx: str | None = self.ledger.request_forget(
                req.request_id,  # its text goes on chain: the owner can act on the event alone
                commitment,
                owner,
                committed,
            ).tx_hash
        except ContractRevert as exc:
            if exc.error_name == "StaleRecordsRoot":  # the owner certified since: next round
                self.db.set_reason(
                    req.request_id,
                    "received",
                    f"{WAITING_FOR_ROOT} of {owner} (it certified a forget since)",
                )
                return
            if exc.error_name != "RequestExists":  # sent before a crash: already on chain
                raise
            tx = None
        if self.db.advance_forget(
            req.request_id, "received", "dispatched", request_tx=tx, node_address=owner
        ):
            self.report(f"forget {req.request_id}: requested on chain (tx {tx})")

    def _records_proof(self, owner: str, commitment: bytes) -> RecordsProof | str:
        """The proof ``requestForget`` needs that ``owner`` committed to ``commitment``, from
        its newest records root of a finalized round; or why there is none yet."""
        saved = self.db.finalized_records_root(owner)
        if saved is None:
            return f"{WAITING_FOR_ROOT} of {owner} (none yet)"
        round_no, certifications, signature, records = saved
        try:
            return RecordsRoot.unpack(round_no, records, certifications).proof(
                commitment, signature
            )
        except ProtocolError:
            return f"{WAITING_FOR_ROOT} of {owner} holding it (round {round_no}'s does not)"

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
        publishes the new model and completes the request once finalized. A round that
        cannot move any request (its owner is offline) is stopped after ``train``
        (:class:`RoundFutile`) and the next try backs off (5 s, doubling up to
        ``backoff_max_s``), unless a node (re)connects or a request arrives; a request
        whose owner stays missing past ``owner_offline_s`` shows ``waiting: owner … offline
        since …`` until the owner is back.
        """
        batch = self.config.forget_batch
        received = self.db.list_forgets(("received",))[:batch]
        for req in received:
            self._request_on_chain(req)
        dispatched = [r for r in self.db.list_forgets(("dispatched",)) if not r.is_split][:batch]
        certified = self.db.list_forgets(("certified",))
        # Waiting for an owner's records root that holds the record (docs/rounds.md): only a
        # finalized round brings one, so run one even if no model need change.
        refresh = any(
            (r.reason or "").startswith(WAITING_FOR_ROOT)
            for r in self.db.list_forgets(("received",))
        )
        self._settle_split()
        if not (dispatched or certified or refresh):
            self._backoff_s = 0.0
            return False
        connected = frozenset(self.transport.node_ids())
        now = time.monotonic()
        if not received and connected == self._backoff_nodes and now < self._retry_at:
            return False
        self.last_committed, self.last_unasked_owner = set(), False
        try:
            outcome = self.run_round(
                None, forgets=dispatched, require_change=bool(dispatched or certified)
            )
        except RoundFailed as exc:
            self._mark_owners()
            if self.last_unasked_owner:  # an owner came back under a new id: ask it now
                self._retry_at, self._backoff_nodes = 0.0, frozenset()
            else:
                self._back_off(connected, str(exc))
            if isinstance(exc, RoundFutile):
                return True
            raise
        self._mark_owners()
        if outcome.finalized and outcome.manifest is not None:
            self._complete(outcome.round, outcome.manifest)
        self._settle_split()
        if self.db.list_forgets(("dispatched", "certified")) or refresh:
            self._back_off(connected, "requests still open after the round")
        else:
            self._backoff_s, self._retry_at = 0.0, 0.0
        return True

    def _settle_split(self) -> None:
        """Complete (or fail) a record held by several nodes once every holder's part has."""
        for req in self.db.settle_split():
            self.report(f"forget {req.request_id}: {req.state} for every holder ({req.reason})")

    def _back_off(self, connected: frozenset[int], why: str) -> None:
        """Wait longer before the next forget round, and say so (log and ``/health``)."""
        self._backoff_s = min(max(self.retry_s, 2 * self._backoff_s), self.config.backoff_max_s)
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_nodes = connected
        waiting = [
            r
            for r in self.db.list_forgets(("dispatched", "certified"))
            if (r.reason or "").startswith("waiting:")
        ]
        step = f"backing off {self._backoff_s:.0f} s: {why}" + (
            f"; {len(waiting)} request(s) waiting for their owner" if waiting else ""
        )
        self.report(f"forgets: {step} (or until a node connects or a request arrives)")
        self._backoff_step = step
        self.on_step(step)

    def _mark_owners(self) -> None:
        """Show ``waiting: owner … offline since …`` on requests whose owner has been missing
        from rounds for ``owner_offline_s``; clear it when the owner commits again."""
        now = time.time()
        for req in self.db.list_forgets(("dispatched", "certified")):
            if req.is_split:  # its parts say which holder is missing
                continue
            owner = (req.node_address or "").lower()
            if owner in self.last_committed:
                self._absent_since.pop(owner, None)
                if req.reason and req.reason.startswith("waiting:"):
                    self.db.set_reason(req.request_id, req.state, None)
                    self.report(f"forget {req.request_id}: owner {req.node_address} is back")
                continue
            since = self._absent_since.setdefault(owner, now)
            if now - since >= self.config.owner_offline_s:
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
                reason = f"waiting: owner {req.node_address} offline since {when}"
                if self.db.set_reason(req.request_id, req.state, reason):
                    self.report(f"forget {req.request_id}: {reason}")

    def reconcile(self) -> None:
        """Move queued requests back to what the chain holds (``coordinator.reconcile``)."""
        from coordinator.reconcile import reconcile

        reconcile(self.db, self.ledger, self.report)

    # -- the loop -----------------------------------------------------------------------

    def serve(self, stop: Callable[[], bool]) -> None:
        """Initial rounds (one per slice), then forget requests until ``stop()``."""
        self.on_step(f"waiting for {self.config.min_nodes} nodes")
        nodes = self.wait_for_nodes(self.config.min_nodes)
        self.report(f"{len(nodes)} nodes connected")
        self._guarded(self.reconcile)
        done = {r["through_slice"] for r in self.db.list_rounds() if r["state"] == "finalized"}
        for k in range(self.config.slices):
            through = None if k == self.config.slices - 1 else k
            if through in done:
                continue
            self.on_step(f"initial round {k + 1} of {self.config.slices}")
            self._guarded(functools.partial(self.run_round, through))
        while not stop():
            backing_off = time.monotonic() < self._retry_at and self._backoff_step
            self.on_step(self._backoff_step if backing_off else "serving forget requests")
            if not self._guarded(self.process_forgets):
                time.sleep(0.05)

    def _guarded(self, step: Callable[[], Any]) -> Any:
        """Run a step; log a failed round or chain call instead of ending the loop.

        An unexpected exception (a bug, a library error Lethe does not wrap) is logged with
        its traceback and the loop goes on too: one bad step must not take the ServerApp,
        and every open request with it, down.
        """
        try:
            return step()
        except LedgerError as exc:
            self.report(f"error: {exc}")
            # A chain error may mean lost blocks: the queue must not run ahead of the chain.
            if step != self.reconcile:
                self._guarded(self.reconcile)
        except LetheError as exc:
            self.report(f"error: {exc}")
        except Exception as exc:
            logger.exception("unexpected error in the coordinator loop; serving on")
            self.report(f"error: {type(exc).__name__}: {exc}")
        time.sleep(self.error_pause_s)
        return True
