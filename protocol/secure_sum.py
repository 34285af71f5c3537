"""The secure-sum round as transport-free functions: bytes in, bytes out (docs/rounds.md).

Stage 2, every node: :func:`make_shares` quantises ``α_i · w_i``, Shamir-shares
it over the roster and seals one envelope per member (itself included).
Stage 3, every node: :func:`open_and_sum` opens the envelopes the coordinator
routed to it and adds them up; the :class:`SummedShare` names the senders it
includes. Stage 4, coordinator: :func:`reconstruct_sum` interpolates the sum
from any ``t`` summed shares, checks the rest, and decodes it.

The coordinator only ever holds envelopes and summed shares. A summed share is a
point on the polynomial of the *sum*, so ``t`` of them reveal the sum and
nothing else; ``t − 1`` of them, or any ``t − 1`` nodes' decrypted shares, are
uniformly random. Dropouts are handled by exclusion: the senders of stage 2 are
the sum's terms, and every summed share must be over the same senders.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from protocol import shamir
from protocol.canonical import canonical_json
from protocol.envelope import (
    KEY_BYTES,
    EnvelopeContext,
    key_from_hex,
    key_to_hex,
    open_envelope,
    public_key_bytes,
    seal,
)
from protocol.errors import ProtocolError
from protocol.field import FixedPoint, FloatVector, IntVector, P, reduce
from protocol.hashing import keccak256
from protocol.messages import SHARE

WIRE_DTYPE = np.dtype("<u4")
"""Shares travel as little-endian uint32: every residue of GF(2^31 − 1) fits."""


MIN_SENDERS = 3
"""No sum over fewer models: with two, each sender learns the other's model from the sum."""


def default_threshold(n: int) -> int:
    """``⌊n/2⌋ + 1``: a strict majority must cooperate to reconstruct."""
    return n // 2 + 1


@dataclass(frozen=True)
class Member:
    """One node of a round: its id, its Shamir x-coordinate, its X25519 public key."""

    node_id: str
    x: int
    public_key: bytes


@dataclass(frozen=True)
class Roster:
    """Who takes part in one round, as the coordinator announces it (keys from the chain)."""

    federation_id: str
    round: int
    threshold: int
    members: tuple[Member, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        if not isinstance(self.federation_id, str) or not self.federation_id:
            raise ProtocolError("roster: federation_id must be a non-empty string")
        if not isinstance(self.round, int) or self.round < 0:
            raise ProtocolError(f"roster: round must be a non-negative int, got {self.round!r}")
        if not self.members:
            raise ProtocolError("roster: no members")
        ids = [m.node_id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ProtocolError(f"roster: node ids must be unique, got {ids}")
        xs = [m.x for m in self.members]
        try:
            shamir.check_points(xs)
        except ValueError as exc:
            raise ProtocolError(f"roster: {exc}") from exc
        for m in self.members:
            if not isinstance(m.node_id, str) or not m.node_id:
                raise ProtocolError(f"roster: node ids must be non-empty strings: {m.node_id!r}")
            if len(m.public_key) != KEY_BYTES:
                raise ProtocolError(
                    f"roster: {m.node_id} has a {len(m.public_key)}-byte public key, "
                    f"X25519 needs {KEY_BYTES}"
                )
        if not isinstance(self.threshold, int) or not 1 <= self.threshold <= len(self.members):
            raise ProtocolError(
                f"roster: threshold must be in [1, {len(self.members)}], got {self.threshold!r}"
            )

    @property
    def n(self) -> int:
        """Number of members."""
        return len(self.members)

    @property
    def xs(self) -> list[int]:
        """The members' x-coordinates, in roster order."""
        return [m.x for m in self.members]

    def member(self, node_id: str) -> Member:
        """The member with this id; ``ProtocolError`` if it is not in the roster."""
        for m in self.members:
            if m.node_id == node_id:
                return m
        raise ProtocolError(
            f"{node_id!r} is not in the roster of round {self.round} "
            f"of federation {self.federation_id!r}"
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON (keys in hex), for a message or a manifest."""
        return canonical_json(
            {
                "federation_id": self.federation_id,
                "round": self.round,
                "threshold": self.threshold,
                "members": [
                    {"node_id": m.node_id, "x": m.x, "public_key": key_to_hex(m.public_key)}
                    for m in self.members
                ],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Roster:
        """Inverse of :meth:`to_bytes`; ``ProtocolError`` on anything malformed."""
        try:
            obj = json.loads(data)
            members = tuple(
                Member(str(m["node_id"]), m["x"], key_from_hex(m["public_key"]))
                for m in obj["members"]
            )
            return cls(obj["federation_id"], obj["round"], obj["threshold"], members)
        except (ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(f"malformed roster: {exc}") from exc


def roster_digest(roster: Roster) -> str:
    """Hex keccak-256 of the roster's canonical bytes: what envelopes and agreements bind."""
    return "0x" + keccak256(roster.to_bytes()).hex()


def envelope_context(roster: Roster, sender: str, recipient: str) -> EnvelopeContext:
    """The context of ``sender``'s share for ``recipient`` in this roster's share stage."""
    return EnvelopeContext(
        roster.federation_id, roster.round, sender, recipient, SHARE, roster_digest(roster)
    )


def sender_set_digest(roster: Roster, senders: Collection[str], n_total: int) -> bytes:
    """What a sender signs to agree on the set of senders its round sums over.

    A node signs one set per round and sums only when every sender of the set signed it
    with the same ``n_total`` (the weights' denominator it shared with). Any two sets of
    at least ``t > n/2`` senders share a node, so a coordinator cannot show different sets
    to different nodes; and no sender's share is summed with a weight it did not agree to.
    """
    return keccak256(
        b"lethe/sender-set/v1\x00"
        + canonical_json(
            {
                "federation_id": roster.federation_id,
                "round": roster.round,
                "roster": roster_digest(roster),
                "senders": sorted(senders, key=str.lower),
                "n_total": n_total,
            }
        )
    )


@dataclass(frozen=True, eq=False)
class SummedShare:
    """One node's stage-3 answer: its share of the sum over ``senders``, mod p.

    ``senders`` (sorted) is part of the value: shares of sums over different
    sender sets are points on different polynomials and must never be mixed.
    """

    federation_id: str
    round: int
    node_id: str
    x: int
    senders: tuple[str, ...]
    values: IntVector = field(repr=False)

    def to_bytes(self) -> bytes:
        """Header length (4 bytes, big-endian), canonical JSON header, then ``<u4`` values."""
        header = canonical_json(
            {
                "federation_id": self.federation_id,
                "round": self.round,
                "node_id": self.node_id,
                "x": self.x,
                "senders": list(self.senders),
                "length": int(self.values.shape[0]),
            }
        )
        return struct.pack(">I", len(header)) + header + self.values.astype(WIRE_DTYPE).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SummedShare:
        """Inverse of :meth:`to_bytes`; ``ProtocolError`` on a malformed or out-of-field share."""
        try:
            (length,) = struct.unpack_from(">I", data, 0)
            head = json.loads(data[4 : 4 + length])
            values = _decode_residues(memoryview(data)[4 + length :], "summed share")
            if values.shape[0] != head["length"]:
                raise ProtocolError(
                    f"summed share declares {head['length']} values but carries {values.shape[0]}"
                )
            return cls(
                federation_id=str(head["federation_id"]),
                round=int(head["round"]),
                node_id=str(head["node_id"]),
                x=int(head["x"]),
                senders=tuple(str(s) for s in head["senders"]),
                values=values,
            )
        except (struct.error, ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(f"malformed summed share: {exc}") from exc


def _decode_residues(data: bytes | memoryview, what: str) -> IntVector:
    """Little-endian uint32 bytes to int64 residues, refusing anything outside GF(p)."""
    if len(data) % WIRE_DTYPE.itemsize:
        raise ProtocolError(f"{what}: {len(data)} bytes is not a whole number of uint32 values")
    raw = np.frombuffer(data, dtype=WIRE_DTYPE)
    if raw.size and raw.max() >= P:
        raise ProtocolError(f"{what}: holds values outside GF(2^31 − 1)")
    return raw.astype(np.int64)


def _check_own_key(roster: Roster, me: str, private_key: X25519PrivateKey) -> None:
    """A node sealing or opening with a key the roster does not list would fail later, obscurely."""
    if public_key_bytes(private_key) != roster.member(me).public_key:
        raise ProtocolError(
            f"the private key of {me} does not match its public key in the roster of "
            f"round {roster.round}; was the X25519 key rotated without re-registering?"
        )


def make_shares(
    roster: Roster,
    me: str,
    private_key: X25519PrivateKey,
    vector: NDArray[Any],
    *,
    weight: float,
    fixed_point: FixedPoint,
) -> dict[str, bytes]:
    """Stage 2: Shamir-share ``weight · vector`` and seal one envelope per roster member.

    Parameters
    ----------
    roster
        The round's roster; ``me`` must be in it with the public key of ``private_key``.
    vector
        The node's model parameters, 1-D float.
    weight
        ``α_i = n_i / Σ n``, from the coordinator. The product is clipped to
        ``±fixed_point.clip``, then quantised.
    fixed_point
        The code every party of the round uses; it must fit ``roster.n`` values.

    Returns
    -------
    ``{recipient node id: envelope}``, the node's own envelope included.
    """
    _check_own_key(roster, me, private_key)
    fixed_point.check_parties(roster.n)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite non-negative number, got {weight!r}")
    arr = np.asarray(vector, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"vector must be a non-empty 1-D array, got shape {arr.shape}")
    shares = shamir.split(fixed_point.quantize(weight * arr), roster.xs, roster.threshold)
    envelopes = {}
    for member, share in zip(roster.members, shares, strict=True):
        context = envelope_context(roster, me, member.node_id)
        envelopes[member.node_id] = seal(
            private_key, member.public_key, share.astype(WIRE_DTYPE).tobytes(), context=context
        )
    return envelopes


def open_and_sum(
    roster: Roster,
    me: str,
    private_key: X25519PrivateKey,
    envelopes: Mapping[str, bytes],
    *,
    senders: Collection[str] | None = None,
) -> SummedShare:
    """Stage 3: open the envelopes addressed to ``me`` (keyed by sender) and add them mod p.

    ``senders`` is the sender set the coordinator declared for this round (the
    stage-2 responders); if given, the envelopes must come from exactly those
    nodes, so a coordinator that routes different sets to different nodes is
    caught here, and in any case at reconstruction. At least ``t`` senders are
    required: a "sum" of fewer models could be a single node's model.
    """
    _check_own_key(roster, me, private_key)
    included = sorted(envelopes)
    if senders is not None and set(senders) != set(included):
        missing = sorted(set(senders) - set(included))
        extra = sorted(set(included) - set(senders))
        raise ProtocolError(
            f"{me} received envelopes from a different sender set than declared for round "
            f"{roster.round}: missing {missing}, unexpected {extra}"
        )
    if len(included) < roster.threshold:
        raise ProtocolError(
            f"{me} refuses to sum {len(included)} contributions: fewer than the threshold "
            f"t={roster.threshold}, the result could expose an individual model"
        )

    def open_share(sender: str) -> IntVector:
        context = envelope_context(roster, sender, me)
        plaintext = open_envelope(
            private_key, roster.member(sender).public_key, envelopes[sender], context=context
        )
        return _decode_residues(plaintext, f"share from {sender}")

    first, *rest = included
    total = open_share(first)
    for sender in rest:
        share = open_share(sender)
        if share.shape != total.shape:
            raise ProtocolError(
                f"share from {sender} has {share.shape[0]} values, {first} sent {total.shape[0]}"
            )
        total += share  # at most n values below 2^31 each: far from int64 overflow
    return SummedShare(
        federation_id=roster.federation_id,
        round=roster.round,
        node_id=me,
        x=roster.member(me).x,
        senders=tuple(included),
        values=reduce(total),
    )


def _check_summed_shares(roster: Roster, summed_shares: Sequence[SummedShare]) -> None:
    """Every summed share must belong to this round, to a roster member, over one sender set."""
    if len(summed_shares) < roster.threshold:
        raise ProtocolError(
            f"round {roster.round} has {len(summed_shares)} summed shares, "
            f"reconstruction needs t={roster.threshold}"
        )
    seen: set[str] = set()
    for s in summed_shares:
        if (s.federation_id, s.round) != (roster.federation_id, roster.round):
            raise ProtocolError(
                f"summed share from {s.node_id} is for round {s.round} of {s.federation_id!r}, "
                f"not round {roster.round} of {roster.federation_id!r}"
            )
        if s.node_id in seen:
            raise ProtocolError(f"two summed shares from {s.node_id}")
        seen.add(s.node_id)
        if roster.member(s.node_id).x != s.x:
            raise ProtocolError(
                f"summed share from {s.node_id} claims x={s.x}, "
                f"the roster says x={roster.member(s.node_id).x}"
            )
    sets: dict[tuple[str, ...], list[str]] = {}
    for s in summed_shares:
        sets.setdefault(s.senders, []).append(s.node_id)
    if len(sets) > 1:
        detail = "; ".join(f"{nodes} summed {list(senders)}" for senders, nodes in sets.items())
        raise ProtocolError(f"summed shares are over different sender sets: {detail}")
    for sender in summed_shares[0].senders:
        roster.member(sender)
    if len({s.values.shape for s in summed_shares}) != 1:
        raise ProtocolError("summed shares have different lengths")


def reconstruct_sum(
    roster: Roster, summed_shares: Sequence[SummedShare], fixed_point: FixedPoint
) -> FloatVector:
    """Stage 4: ``Σ α_i w_i`` over the shares' senders, from any ``t`` summed shares.

    With more than ``t`` shares all of them are checked to lie on one polynomial of
    degree ``t − 1`` (:func:`protocol.shamir.check_consistency`), so a corrupt summed
    share is detected and, when possible, its node named. If some stage-2 senders
    dropped out, the result is the sum over the rest; divide by their ``Σ α_i`` to
    get their weighted mean.
    """
    _check_summed_shares(roster, summed_shares)
    fixed_point.check_parties(len(summed_shares[0].senders))
    ordered = sorted(summed_shares, key=lambda s: s.x)
    xs = [s.x for s in ordered]
    rows = [s.values for s in ordered]
    try:
        shamir.check_consistency(xs, rows, roster.threshold)
    except shamir.InconsistentSharesError as exc:
        by_x = {s.x: s.node_id for s in ordered}
        who = (
            f"the summed share of {by_x[exc.suspect_x]} (x={exc.suspect_x}) is corrupt"
            if exc.suspect_x is not None
            else "the corrupt one cannot be singled out"
        )
        raise shamir.InconsistentSharesError(
            f"round {roster.round}: {who}; {exc}",
            suspect_x=exc.suspect_x,
            bad_coordinates=exc.bad_coordinates,
        ) from exc
    t = roster.threshold
    return fixed_point.dequantize(shamir.reconstruct(xs[:t], rows[:t]))
