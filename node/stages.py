"""What a node does at each message stage (docs/rounds.md), independent of the transport.

Each handler takes the node's runtime and the coordinator's typed request (already
checked field by field by ``protocol.messages``) and returns the typed reply. The node
trusts the coordinator for nothing it can check itself (docs/trust.md):

- the roster must be exactly the chain's admitted nodes with their registered keys and
  x-coordinates, t comes from that count, and the round must be the chain's next one;
- it signs one sender set and masks and shares once per round, and reveals once
  (``node.round_state``), never over fewer than ``max(t, 3)`` senders, and only when shown
  every sender's signature on the set it signed itself; before revealing, it may move to
  a strict subset of that set (a sender lost mid-share), reusing its masked vector and
  shares, for a model new in the round; a reveal carries self-mask shares only for the
  set's senders and pair-seed shares only for nodes outside it (docs/trust.md, rule 7);
- an unchanged model is never summed into another sender set than last time; it trains
  for the roster epoch it derives from the chain (refusing a request naming another), so
  an admission or a removal makes every node retrain and its model new, and it shares only
  a model trained for the epoch of the round's (chain-checked) roster;
- it re-checks its own commitment before sharing and before approving, fetches the
  global model by CID to compare hashes, and approves only the proposal the chain holds
  (or, for the chain's next round, signs an EIP-712 approval of exactly the content shown,
  which the contract counts only with a proposal of that content);
- it deletes nothing unless the chain holds the forget request, open, naming it as the
  owner of exactly that record.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from node.metrics import retraining
from node.store import NodeError
from protocol.commitments import Update, sign_leaf
from protocol.errors import LedgerError, LetheError, ProtocolError
from protocol.federation import FederationLayout
from protocol.hashing import keccak256
from protocol.messages import (
    AGGREGATE,
    APPROVE,
    SHARE,
    STAGES,
    TRAIN,
    AggregateReply,
    AggregateRequest,
    ApproveReply,
    ApproveRequest,
    ForgetEntry,
    ForgetResult,
    RoundRequest,
    ShareReply,
    ShareRequest,
    StageMessage,
    TrainReply,
    TrainRequest,
    WireRecord,
)
from protocol.records_root import RecordsRoot
from protocol.typed_data import Domain

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from node.round_state import Sharing
    from node.runtime import NodeRuntime
    from node.sisa import SisaNode
    from protocol.ledger import RoundProposal
    from protocol.manifest import RoundManifest
    from protocol.secure_sum import Roster

logger = logging.getLogger("lethe.node")


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _check_federation(rt: NodeRuntime, request: RoundRequest) -> None:
    if request.federation_id != rt.config.federation_id:
        raise ProtocolError(
            f"message for federation {request.federation_id!r}, "
            f"this node is in {rt.config.federation_id!r}"
        )


def _checked_roster(rt: NodeRuntime, request: ShareRequest | AggregateRequest) -> Roster:
    """The round's roster, if it is exactly the chain's and the round is the chain's next.

    Every admitted node with a registered key is a member, at its x-coordinate, with its
    key; the threshold is ``⌊n/2⌋+1`` of that count. A roster of fewer members, a lowered
    threshold or an invented round would let the coordinator isolate this node's model.
    """
    from protocol.secure_sum import Roster, default_threshold

    roster = Roster.from_bytes(request.roster)
    if (roster.federation_id, roster.round) != (request.federation_id, request.round):
        raise ProtocolError("roster is for another federation or round")
    next_round = rt.ledger.last_round() + 1
    if request.round != next_round:
        raise ProtocolError(f"round {request.round} is not the chain's next round ({next_round})")
    on_chain = sorted(
        (entry.address.lower(), index + 1, entry.key)
        for index, entry in enumerate(rt.ledger.roster())
        if entry.key is not None
    )
    announced = sorted((m.node_id.lower(), m.x, m.public_key) for m in roster.members)
    if announced != on_chain:
        raise ProtocolError(
            "the roster is not exactly the chain's admitted nodes with their registered keys"
        )
    if roster.threshold != default_threshold(len(on_chain)):
        raise ProtocolError(
            f"threshold {roster.threshold} is not ⌊n/2⌋+1 = {default_threshold(len(on_chain))} "
            f"of the {len(on_chain)} nodes on chain"
        )
    roster.member(rt.address)
    return roster


def _roster_shared_under(
    rt: NodeRuntime, request: AggregateRequest, sharing: Sharing | None
) -> Roster:
    """At ``aggregate``, the roster this node checked against the chain and masked under at
    ``share``: a member rotating its key in between cannot fail the round (the shares were
    sealed to the keys of that roster). Without that sharing, the chain's roster as now."""
    from protocol.secure_sum import MaskedInput, Roster, roster_digest

    if sharing is not None:
        roster = Roster.from_bytes(request.roster)
        masked = MaskedInput.from_bytes(sharing.masked)
        if (roster.federation_id, roster.round) == (request.federation_id, request.round) and (
            masked.roster == roster_digest(roster) and request.round == rt.ledger.last_round() + 1
        ):
            roster.member(rt.address)
            return roster
    return _checked_roster(rt, request)


def _checked_senders(roster: Roster, senders: list[str]) -> None:
    """Senders are roster members, at least ``max(t, MIN_SENDERS)`` of them."""
    from protocol.secure_sum import MIN_SENDERS

    for sender in senders:
        roster.member(sender)
    need = max(roster.threshold, MIN_SENDERS)
    if len(senders) < need:
        raise ProtocolError(
            f"refusing a sum over {len(senders)} senders: at least {need} "
            f"(t={roster.threshold}, and never fewer than {MIN_SENDERS})"
        )


def _checked_epoch(rt: NodeRuntime, request: TrainRequest) -> bytes:
    """The roster epoch of the chain's registered nodes, which the request must name.

    The node reads it itself: a coordinator naming an old roster (to keep models summed
    before an admission unchanged) or a made-up one (to have nodes retrain at will) is
    refused before anything is trained.
    """
    from protocol.epoch import chain_epoch

    epoch = chain_epoch(rt.ledger.roster())
    if request.epoch.lower() != _hex(epoch):
        raise ProtocolError(
            f"the request names roster epoch {request.epoch}, but the chain's registered "
            f"nodes give {_hex(epoch)}: this node trains only for the chain's roster"
        )
    return epoch


def handle_train(rt: NodeRuntime, request: TrainRequest) -> TrainReply:
    """Move to the chain's roster epoch, forget what the round asks, train, commit.

    Forget requests ride on the round's first message, so a request costs one round, not
    a dispatch stage plus a round; only the owner retrains, the others just commit. After
    the roster changed on chain every node retrains its shards under the new epoch first
    (a forget then starts from the new epoch's checkpoints).
    """
    _check_federation(rt, request)
    epoch = _checked_epoch(rt, request)
    _approve_missed_rounds(rt)
    with SISA_WRITES, rt.sisa() as node:
        own = node.config
        layout = FederationLayout(request.federation_id, request.shards, request.slices)
        layout.check_member(own.federation_id, own.shards, own.slices)
        if node.enter_epoch(epoch):
            logger.info("roster epoch %s: retraining every slice for it", _hex(epoch))
        forgotten = forget_and_certify(rt, node, request.forget_requests)
        # Read before the ids, under the lock the chain watcher certifies under too: any
        # record certified after this read makes the count, so this root, stale on chain.
        certifications = rt.ledger.certifications_of(rt.address)
        node.train(on_slice=None)
        model = node.model(request.through_slice)
        ids = node.store.record_ids()
        roots = node.slice_roots()
        accuracy = (
            node.test_accuracy(model.vector) if node.store.counts().get("test_records") else None
        )
    update = Update(
        request.federation_id, request.round, rt.address, model.hash, model.n_samples, tuple(roots)
    )
    records = RecordsRoot.of(
        request.round, (rt.record_key.commitment(rid) for rid in ids), certifications
    )
    return TrainReply(
        address=rt.address,
        public_key=_hex(rt.public_key),
        model_hash=model.hash_hex,
        n_samples=model.n_samples,
        signature=update.sign(Domain.of(rt.ledger), rt.eth_key),
        local_accuracy=accuracy,
        forget_results=forgotten,
        records=records.packed(),
        records_certifications=certifications,
        records_signature=records.sign(Domain.of(rt.ledger), rt.eth_key),
        slice_roots=b"".join(roots),
    )


SISA_WRITES = threading.Lock()
"""Held while a node's process forgets or trains: a ``train`` message and the chain watcher
(``node.forget_watch``) may carry the same forget request."""


def _approve_missed_rounds(rt: NodeRuntime) -> None:
    """Approve finalized rounds this node was left out of (``node.missed_approvals``); a
    chain error here must not cost the node the round it is asked to train for."""
    from node.missed_approvals import approve_missed

    try:
        approve_missed(rt)
    except LetheError as exc:
        logger.warning("could not check for rounds left unapproved: %s", exc)


def handle_share(rt: NodeRuntime, request: ShareRequest) -> ShareReply:
    """Sign the round's sender set and settings, then add this node's noise to n_i/N · w_i,
    mask it with a self mask and one pair mask per sender, sign the masked vector, and
    Shamir-share the mask seeds to the roster, one sealed envelope per recipient: once per
    round, and never, for a model unchanged since it was last summed, into another set.

    The fixed-point code and the noise scale come from the chain (roster size, the
    federation's σ), not from the coordinator: a request naming another code is refused.
    """
    from node.round_state import Sharing
    from protocol.canonical import canonical_json
    from protocol.noise import node_noise_key, noise_context, sender_noise
    from protocol.secure_sum import (
        MaskedInput,
        SumSettings,
        mask_and_share,
        roster_digest,
        sender_set_digest,
    )

    _check_federation(rt, request)
    roster = _checked_roster(rt, request)
    _checked_senders(roster, request.senders)
    if rt.address.lower() not in {s.lower() for s in request.senders}:
        raise ProtocolError("asked to share into a sender set without this node")
    _check_model_epoch(rt, roster)
    sigma = rt.ledger.noise_scale()
    settings = SumSettings.for_round(
        roster.n, sigma, through_slice=request.through_slice, n_total=request.n_total
    )
    if (request.clip, request.frac_bits) != (settings.clip, settings.frac_bits):
        raise ProtocolError(
            f"asked to share under clip {request.clip}, frac_bits {request.frac_bits}; every "
            f"node derives clip {settings.clip}, frac_bits {settings.frac_bits} for a roster "
            f"of {roster.n} at the chain's σ = {sigma}"
        )
    fingerprint = _hex(
        keccak256(
            canonical_json(
                {
                    "model_hash": request.model_hash,
                    "settings": settings.to_json(),
                    "roster": roster_digest(roster),
                }
            )
        )
    )
    earlier = rt.rounds.check_share(request.round, fingerprint)
    signed = rt.rounds.check_agree(request.round, request.senders, request.model_hash)
    if earlier is not None and signed is not None:  # a retried stage: the very same answer
        return _share_reply(rt, signed, earlier)
    if earlier is not None:  # a sender was lost mid-share: agree to the smaller set only
        used = MaskedInput.from_bytes(earlier.masked).settings
        signature = sign_leaf(sender_set_digest(roster, request.senders, used), rt.eth_key)
        rt.rounds.record_agree(request.round, request.senders, request.model_hash, signature)
        return _share_reply(rt, signature, earlier)
    commitments = _checked_commitments(rt, request)
    with rt.sisa() as node:
        model = node.model(request.through_slice)
    if model.hash_hex != request.model_hash:
        raise ProtocolError("asked to share a model other than the one this node committed to")
    if not 0 < model.n_samples <= request.n_total:
        raise ProtocolError(
            f"n_total {request.n_total} cannot include this node's {model.n_samples}"
        )
    noise = sender_noise(
        node_noise_key(bytes.fromhex(rt.eth_key.removeprefix("0x"))),
        noise_context(
            request.federation_id,
            commitments,
            n_total=request.n_total,
            through_slice=request.through_slice,
            sigma=settings.sigma,
        ),
        model.vector.shape[0],
        sigma=settings.sigma,
        scale=settings.fixed_point.scale,
        senders=len(request.senders),
    )
    contribution = mask_and_share(
        roster,
        rt.address,
        rt.x25519_key,
        model.vector,
        weight=model.n_samples / request.n_total,
        fixed_point=settings.fixed_point,
        senders=request.senders,
        settings=settings,
        noise=noise,
    )
    masked = contribution.masked.to_bytes()
    sharing = Sharing(
        fingerprint,
        request.model_hash,
        request.n_total,
        contribution.envelopes,
        contribution.masked.masked_with,
        masked,
        sign_leaf(keccak256(masked), rt.eth_key),
    )
    digest = sender_set_digest(roster, request.senders, settings)
    signature = sign_leaf(digest, rt.eth_key)
    rt.rounds.record_agree(request.round, request.senders, request.model_hash, signature)
    rt.rounds.record_share(request.round, sharing)
    return _share_reply(rt, signature, sharing)


def _checked_commitments(rt: NodeRuntime, request: ShareRequest) -> list[tuple[str, str, int]]:
    """Every sender's update of this round, signed by it: what this node's noise is drawn
    for. A coordinator making up commitments (to have an unchanged model drawn fresh noise
    round after round, and average it away) is refused here."""
    import json

    from protocol.manifest import NodeUpdate

    try:
        updates = [NodeUpdate(**u) for u in json.loads(request.commitments)]
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"malformed sender commitments: {exc}") from exc
    if sorted(u.address.lower() for u in updates) != sorted(s.lower() for s in request.senders):
        raise ProtocolError("the commitments are not exactly one per sender")
    domain = Domain.of(rt.ledger)
    for u in updates:
        if u.signer(domain, request.federation_id, request.round).lower() != u.address.lower():
            raise ProtocolError(f"the commitment of {u.address} is not signed by it")
        if u.address.lower() == rt.address.lower() and u.model_hash != request.model_hash:
            raise ProtocolError("this node's commitment names another model")
    if sum(u.n_samples for u in updates) != request.n_total:
        raise ProtocolError(f"n_total {request.n_total} is not the senders' samples")
    return [(u.address, u.model_hash, u.n_samples) for u in updates]


def _check_model_epoch(rt: NodeRuntime, roster: Roster) -> None:
    """Share only a model trained for this roster's epoch: after an admission or a removal
    a model of the old roster is never summed with the new one (a coordinator skipping
    the ``train`` that retrains it is refused here)."""
    from protocol.epoch import roster_epoch

    epoch = roster_epoch(m.node_id for m in roster.members)
    with rt.sisa() as node:
        trained_for = node.epoch
    if trained_for != epoch:
        raise ProtocolError(
            f"this node's model is trained for roster epoch {_hex(trained_for)}, not for this "
            f"round's roster ({_hex(epoch)}): it shares only after training for it"
        )


def _share_reply(rt: NodeRuntime, signature: str, sharing: Sharing) -> ShareReply:
    """The share stage's answer: always the round's one masked vector and envelopes."""
    return ShareReply(
        address=rt.address,
        signature=signature,
        masked_signature=sharing.masked_signature,
        masked=sharing.masked,
        envelopes=sharing.envelopes,
    )


def handle_aggregate(rt: NodeRuntime, request: AggregateRequest) -> AggregateReply:
    """Shown every sender's signature on the set (and weights) this node signed, reveal its
    shares of the seeds that unmask the sum over that set, once per round."""
    from node.round_state import set_key
    from protocol.commitments import recover_leaf_signer
    from protocol.secure_sum import MaskedInput, reveal, sender_set_digest

    _check_federation(rt, request)
    sharing = rt.rounds.sharing(request.round)
    roster = _roster_shared_under(rt, request, sharing)
    _checked_senders(roster, request.senders)
    agreed = rt.rounds.agreement(request.round)
    if agreed is None or sharing is None or agreed[0] != set_key(request.senders):
        raise ProtocolError("this node did not agree on this sender set for this round")
    used = MaskedInput.from_bytes(sharing.masked).settings
    digest = sender_set_digest(roster, request.senders, used)
    signers = set()
    for agreement in request.agreements:
        signer = recover_leaf_signer(digest, agreement.signature).lower()
        if signer == agreement.address.lower():
            signers.add(signer)
    if missing := {s.lower() for s in request.senders} - signers:
        raise ProtocolError(
            f"no valid signature on this sender set and weights from {sorted(missing)}: every "
            "sender must agree before its share is summed"
        )
    earlier = rt.rounds.check_sum(request.round, request.senders)
    if earlier is not None:  # a retried stage: the very same answer
        return AggregateReply(address=rt.address, signature=earlier[0], reveal=earlier[1])
    answer = reveal(
        roster,
        rt.address,
        rt.x25519_key,
        request.envelopes,
        senders=request.senders,
        masked_with=sharing.masked_with,
    )
    data = answer.to_bytes()
    signature = sign_leaf(keccak256(data), rt.eth_key)
    rt.rounds.record_sum(request.round, request.senders, signature, data)
    return AggregateReply(address=rt.address, signature=signature, reveal=data)


def _checked_proposal(rt: NodeRuntime, request: ApproveRequest) -> RoundProposal | None:
    """The round's proposal as recorded on chain, which the request must repeat exactly;
    ``None`` if the round is the chain's next, not yet proposed (the node then signs).

    The node approves what the chain holds, never what the coordinator says it proposed: a
    coordinator showing nodes one model and proposing another is caught here, and the
    approval names the checked content, so the contract would refuse it anyway.
    """
    proposal = rt.ledger.round_proposal(request.round)
    if proposal is None:
        if request.round != rt.ledger.last_round() + 1:
            raise ProtocolError(f"round {request.round} is not the chain's next round")
        return None
    shown = (request.model_hash, request.model_cid, request.updates_root, request.manifest_cid)
    on_chain = (
        _hex(proposal.global_model_hash),
        proposal.global_model_cid,
        _hex(proposal.updates_root),
        proposal.manifest_cid,
    )
    if shown != on_chain:
        raise ProtocolError(
            f"round {request.round}: the request is not the proposal on chain "
            f"(model hash, model CID, updates root, manifest CID: {on_chain})"
        )
    return proposal


def handle_approve(rt: NodeRuntime, request: ApproveRequest) -> ApproveReply:
    """Check the proposal against this node's own commitment and the stored bytes; approve
    exactly that content: by an EIP-712 signature the coordinator carries in the proposal's
    transaction (round not yet on chain), or by itself (round already proposed)."""
    from protocol.approvals import RoundApproval
    from protocol.manifest import RoundManifest
    from protocol.model import vector_from_bytes

    _check_federation(rt, request)
    proposal = _checked_proposal(rt, request)
    manifest = RoundManifest.from_bytes(rt.store.get(request.manifest_cid))
    if (manifest.federation_id, manifest.round) != (request.federation_id, request.round):
        raise ProtocolError("manifest is for another federation or round")
    if _hex(manifest.updates_root()) != request.updates_root:
        raise ProtocolError("updates root does not match the manifest's updates")
    if manifest.global_model_cid != request.model_cid:
        raise ProtocolError("the manifest names another global model CID")
    mine = manifest.update_of(rt.address)
    with rt.sisa() as node:
        model = node.model(request.through_slice)
        roots = ["0x" + r.hex() for r in node.slice_roots()]
        if mine is None or (mine.model_hash, mine.slice_roots) != (model.hash_hex, roots):
            raise ProtocolError("this node's commitment is missing from the round or altered")
        signer = mine.signer(Domain.of(rt.ledger), request.federation_id, request.round)
        if signer.lower() != rt.address.lower():
            raise ProtocolError("this node's update in the manifest is not signed by it")
        global_bytes = rt.store.get(request.model_cid)
        if _hex(keccak256(global_bytes)) != request.model_hash or (
            manifest.global_model_hash != request.model_hash
        ):
            raise ProtocolError("the global model's bytes do not hash to the proposed hash")
        check_is_the_sum(rt, manifest, global_bytes)
        accuracy = (
            node.test_accuracy(vector_from_bytes(global_bytes))
            if node.store.counts().get("test_records")
            else None
        )
    if proposal is None:
        approval = RoundApproval(
            request.round,
            bytes.fromhex(request.model_hash[2:]),
            request.model_cid,
            bytes.fromhex(request.updates_root[2:]),
            request.manifest_cid,
        )
        signature = approval.sign(Domain.of(rt.ledger), rt.eth_key)
        return ApproveReply(
            address=rt.address, approved=True, tx_hash=None, accuracy=accuracy, signature=signature
        )
    return ApproveReply(
        address=rt.address,
        approved=True,
        tx_hash=approve_on_chain(rt, proposal),
        accuracy=accuracy,
        signature=None,
    )


def check_is_the_sum(rt: NodeRuntime, manifest: RoundManifest, global_bytes: bytes) -> None:
    """Approve only the noisy sum of the round's masked updates, recomputed here bit for bit
    from the manifest's transcript, over the very sender set this node agreed to (if it
    shared in the round): a constant, an old or a pre-forget model gets no approval."""
    from node.round_state import set_key
    from protocol.recompute import check_published

    agreed = rt.rounds.agreement(manifest.round)
    if agreed is not None and agreed[0] != set_key([u.address for u in manifest.updates]):
        raise ProtocolError(
            f"round {manifest.round}: the manifest sums another sender set than this node agreed to"
        )
    check_published(manifest, global_bytes)


def approve_on_chain(rt: NodeRuntime, proposal: RoundProposal) -> str | None:
    """Approve a proposed round with the node's own key; ``None`` if it already approved
    (its signature was carried, or a retried request)."""
    if rt.ledger.has_approved(proposal.round, rt.address):
        return None
    try:
        if any(rt.ledger.round_proposal_hash(proposal.round)):
            return rt.ledger.approve_round(
                proposal.round, proposal.global_model_hash, proposal.updates_root
            ).tx_hash
        return rt.ledger.approve_round_witnessed(proposal).tx_hash
    except LedgerError as exc:
        if getattr(exc, "error_name", None) != "AlreadyApproved":
            raise
        return None


def forget_and_certify(
    rt: NodeRuntime, node: SisaNode, entries: list[ForgetEntry]
) -> list[ForgetResult]:
    """Forget the named records this node holds; store signed certificates, certify on chain.

    Requests for records held elsewhere get no entry: the node's models are untouched.
    Repeating a request (a lost reply, a crash) returns what was done, never forgets twice.
    Callers hold :data:`SISA_WRITES`.
    """
    requests: list[tuple[str, str]] = []
    for entry in entries:
        pair = (entry.request_id, entry.record_id)
        if pair[1] not in {rid for _, rid in requests}:  # one retrain per record
            requests.append(pair)
    held = node.store.locate([rid for _, rid in requests])
    done = {req for req, _ in requests if node.forget_result(req) is not None}
    mine = [
        (req, rid)
        for req, rid in requests
        if req in done or (rid in held and _authorised(rt, node, req, rid))
    ]
    fresh = [(req, rid) for req, rid in mine if req not in done]
    if fresh:
        with retraining(len(fresh)):
            node.forget([rid for _, rid in fresh], request_ids=[req for req, _ in fresh])
    return [_certify(rt, node, request_id, record_id) for request_id, record_id in mine]


def _authorised(rt: NodeRuntime, node: SisaNode, request_id: str, record_id: str) -> bool:
    """Whether the chain holds this request, still open, naming this node as the owner of
    exactly this record: checked before anything is deleted.

    A request the coordinator made up, one for another record or another node, or one
    already closed is refused (logged; the record and the models stay as they are).
    """
    from protocol.ledger import ForgetState

    chain_id = keccak256(request_id.encode())
    opened = rt.ledger.forget_request(chain_id)
    expected = rt.record_key.commitment(record_id)
    if opened is None:
        why = "is not on chain"
    elif opened.node.lower() != rt.address.lower():
        why = f"names node {opened.node}, not this node"
    elif opened.record_commitment != expected:
        why = "commits to another record"
    elif rt.ledger.forget_state(chain_id).state is not ForgetState.REQUESTED:
        why = "is no longer open"
    else:
        return True
    logger.warning("forget request %s refused: it %s", request_id, why)
    return False


def _certify(rt: NodeRuntime, node: SisaNode, request_id: str, record_id: str) -> ForgetResult:
    """Sign, store and certify on chain one request's certificate (idempotent on retry);
    report it with the record's salts for the data subject's receipt."""
    result = node.forget_result(request_id)
    if result is None:
        raise NodeError(f"no forget result for request {request_id}")
    entry = result.record(request_id)
    if not entry.record_salt:
        raise NodeError(f"request {request_id} was forgotten before salted leaves: no receipt")
    chain_id = keccak256(request_id.encode())
    from protocol.ledger import ForgetState

    status = rt.ledger.forget_state(chain_id)
    if status.node is None or status.node.lower() != rt.address.lower():
        raise ProtocolError(
            f"forget request {request_id} names node {status.node}, not this node: "
            "a node never certifies, nor adopts a certification, for another's record"
        )
    if status.state >= ForgetState.CERTIFIED:
        # Certified by this node before a crash or a lost reply: report what the chain holds.
        event = next(
            e
            for e in rt.ledger.events(["ForgetCertified"], first_indexed=chain_id)
            if str(e.args["node"]).lower() == rt.address.lower()
        )
        cid, tx = str(event.args["certificateCid"]), event.tx_hash
    else:
        certificate = result.certificate(request_id).signed(rt.eth_key, Domain.of(rt.ledger))
        cid = rt.store.put(certificate.to_bytes())
        tx = rt.ledger.certify_forget(
            chain_id, cid, bytes.fromhex(result.model_hash_after.removeprefix("0x"))
        ).tx_hash
    return ForgetResult(
        request_id=request_id,
        certificate_cid=cid,
        certify_tx=tx,
        new_model_hash=result.model_hash_after,
        n_samples_after=result.n_samples_after,
        record_salt=entry.record_salt,
        commitment_salt=_hex(rt.record_key.salt(record_id)),
    )


_HANDLERS: dict[str, Callable[[NodeRuntime, Any], StageMessage]] = {
    TRAIN: handle_train,
    SHARE: handle_share,
    AGGREGATE: handle_aggregate,
    APPROVE: handle_approve,
}


def answer(rt: NodeRuntime, stage: str, record: Mapping[str, object]) -> WireRecord:
    """Check a request of ``stage``, handle it and return the reply's wire record.

    A request that is not exactly the stage's message (missing, extra or ill-typed
    fields) raises ProtocolError before anything is touched; the ClientApp turns it into
    an error reply, which the coordinator counts as a dropout.
    """
    if stage not in _HANDLERS:
        raise ProtocolError(f"unknown stage {stage!r}")
    request_type, reply_type = STAGES[stage]
    reply = _HANDLERS[stage](rt, request_type.from_record(record))
    assert isinstance(reply, reply_type)
    return reply.to_record()
