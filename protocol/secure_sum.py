"""The secure-sum round as transport-free functions: bytes in, bytes out (docs/rounds.md).

Masked aggregation (SecAgg, Bonawitz et al., CCS 2017) over the roster's Shamir
threshold. Stage 2, every sender: :func:`mask_and_share` adds to its quantised
``α_i · w_i`` a self mask and one pair mask per other sender (ChaCha20 expansions of
256-bit seeds, ``protocol.masking``), and Shamir-shares the seeds, sealed, to every
roster member. The coordinator receives one masked vector (``4·d`` bytes) and ``n``
small envelopes per sender, instead of ``n`` shares of the whole vector.
Stage 3, every sender: :func:`reveal` opens the envelopes routed to it and returns its
shares of the self-mask seeds of the agreed senders and of the pair seeds between them
and nodes lost mid-share. Stage 4, coordinator: :func:`reconstruct_sum` interpolates
those seeds from any ``t`` reveals, checks them against the senders' commitments,
and unmasks the sum.

The coordinator only ever holds masked vectors, envelopes and the seeds of the sum's
masks. A masked vector is uniform without its self-mask seed, and a node reveals a
self-mask share only for a sender of the set it agreed to sum, pair-seed shares only
for nodes outside it: never both for one node. ``t − 1`` nodes' shares are uniformly
random, and pair seeds come from the registered X25519 keys, so the coordinator cannot
substitute a key of its own.
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

from protocol import masking, shamir
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
from protocol.masking import SEED_DIGITS
from protocol.messages import SHARE

WIRE_DTYPE = np.dtype("<u4")
"""Shares travel as little-endian uint32: every residue of GF(2^31 − 1) fits."""


MIN_SENDERS = 3
"""No sum over fewer models: with two, each sender learns the other's model from the sum."""


CLIP = 8.0
"""Bound on one sender's weighted parameters ``|α_i·w_i|``: a protocol constant, so no
coordinator can hand one node a code that keeps its model and rounds the others' to 0."""


def round_fixed_point(n_members: int, sigma: float) -> FixedPoint:
    """The fixed-point code of a round over ``n_members`` (the chain's roster) at noise ``σ``.

    Every party derives it from the chain (roster size, the federation's σ) and the
    protocol constant :data:`CLIP`: the finest code in which ``n`` clipped inputs plus the
    noise's headroom (``protocol.noise.noise_headroom``) cannot wrap around the field.
    """
    from protocol.field import HALF
    from protocol.noise import noise_headroom

    if not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"a round needs at least one member, got {n_members!r}")
    headroom = noise_headroom(sigma)
    for frac_bits in range(30, -1, -1):
        level = round(CLIP * (1 << frac_bits))
        if n_members * level + math.ceil(headroom * (1 << frac_bits)) <= HALF:
            return FixedPoint(CLIP, frac_bits)
    raise ValueError(f"no fixed-point code fits {n_members} members at clip {CLIP}")


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


@dataclass(frozen=True)
class SumSettings:
    """What every sender of a round's sum must have used alike, and signs.

    ``clip`` and ``frac_bits`` are the fixed-point code (:func:`round_fixed_point` of the
    chain's roster size and σ, never the coordinator's choice), ``noise_micros`` the σ of
    the noise inside the sum (the chain's, in millionths), ``through_slice`` the models'
    slice bound and ``n_total`` the weights' denominator. A sender's masked vector carries
    them and its agreement signs them: per-node codes that keep one node's model and round
    the others' to zero fail both checks.
    """

    clip: float
    frac_bits: int
    noise_micros: int
    through_slice: int | None
    n_total: int

    @property
    def fixed_point(self) -> FixedPoint:
        """The fixed-point code these settings name."""
        return FixedPoint(self.clip, self.frac_bits)

    @property
    def sigma(self) -> float:
        """σ of the noise inside the sum, in model units."""
        from protocol.noise import NOISE_MICROS

        return self.noise_micros / NOISE_MICROS

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values, as in a masked input's header and a sender-set digest."""
        return {
            "clip": self.clip,
            "frac_bits": self.frac_bits,
            "noise_micros": self.noise_micros,
            "through_slice": self.through_slice,
            "n_total": self.n_total,
        }

    @classmethod
    def from_json(cls, obj: object) -> SumSettings:
        """Inverse of :meth:`to_json`; ``ProtocolError`` on anything ill-typed."""
        if not isinstance(obj, dict) or set(obj) != set(cls.__dataclass_fields__):
            raise ProtocolError(f"malformed sum settings: {obj!r}")
        ints = (obj["frac_bits"], obj["noise_micros"], obj["n_total"])
        through = obj["through_slice"]
        if (
            not isinstance(obj["clip"], (int, float))
            or isinstance(obj["clip"], bool)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
            or not (through is None or (isinstance(through, int) and not isinstance(through, bool)))
        ):
            raise ProtocolError(f"malformed sum settings: {obj!r}")
        return cls(float(obj["clip"]), *ints[:2], through, ints[2])

    @classmethod
    def for_round(
        cls, n_members: int, sigma: float, *, through_slice: int | None, n_total: int
    ) -> SumSettings:
        """The settings every honest party derives for a roster of ``n_members`` at ``σ``."""
        from protocol.noise import NOISE_MICROS

        fixed_point = round_fixed_point(n_members, sigma)
        return cls(
            fixed_point.clip,
            fixed_point.frac_bits,
            round(sigma * NOISE_MICROS),
            through_slice,
            n_total,
        )


def sender_set_digest(roster: Roster, senders: Collection[str], settings: SumSettings) -> bytes:
    """What a sender signs to agree on the set of senders its round sums over.

    A node signs one set per round and sums only when every sender of the set signed it
    with the same settings: the weights' denominator ``n_total`` it shared with, and the
    fixed-point code, noise scale and slice bound. Any two sets of at least ``t > n/2``
    senders share a node, so a coordinator cannot show different sets to different nodes;
    no sender's share is summed with a weight or a code it did not agree to.
    """
    return keccak256(
        b"lethe/sender-set/v2\x00"
        + canonical_json(
            {
                "federation_id": roster.federation_id,
                "round": roster.round,
                "roster": roster_digest(roster),
                "senders": sorted(senders, key=str.lower),
                "settings": settings.to_json(),
            }
        )
    )


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


def order(ids: Collection[str]) -> tuple[str, ...]:
    """Node ids in the round's canonical order (case-insensitive, as sender sets are signed)."""
    return tuple(sorted(ids, key=str.lower))


def _pair_sign(me: str, peer: str) -> bool:
    """Whether ``me`` adds (True) or subtracts its mask shared with ``peer``: one of each."""
    return me.lower() < peer.lower()


def _pair_context(roster: Roster, a: str, b: str) -> bytes:
    """What a pair seed is derived for: this round, this roster, these two nodes."""
    return canonical_json(
        {
            "federation_id": roster.federation_id,
            "round": roster.round,
            "roster": roster_digest(roster),
            "pair": list(order((a, b))),
        }
    )


def _commit_context(roster: Roster, owner: str, peer: str | None) -> bytes:
    """What a seed commitment names: the round, the node that masked, and the peer (or self)."""
    return canonical_json(
        {
            "federation_id": roster.federation_id,
            "round": roster.round,
            "roster": roster_digest(roster),
            "owner": owner,
            "peer": peer,
        }
    )


def _secrets_of(sender: str, masked_with: Sequence[str]) -> list[str | None]:
    """The seeds a sender shares, in envelope order: its self mask (None), then each pair."""
    return [None, *(peer for peer in masked_with if peer != sender)]


def _pack(header: dict[str, Any], values: IntVector) -> bytes:
    """Header length (4 bytes, big-endian), canonical JSON header, then ``<u4`` values."""
    head = canonical_json({**header, "length": int(values.shape[0])})
    return struct.pack(">I", len(head)) + head + values.astype(WIRE_DTYPE).tobytes()


def _unpack(data: bytes, what: str) -> tuple[dict[str, Any], IntVector]:
    """Inverse of :func:`_pack`; ``ProtocolError`` on anything malformed or out of field."""
    try:
        (length,) = struct.unpack_from(">I", data, 0)
        head = json.loads(data[4 : 4 + length])
        values = _decode_residues(memoryview(data)[4 + length :], what)
        if not isinstance(head, dict) or values.shape[0] != head["length"]:
            raise ProtocolError(f"{what}: header and values disagree")
    except (struct.error, ValueError, TypeError, KeyError) as exc:
        raise ProtocolError(f"malformed {what}: {exc}") from exc
    return head, values


def _ids(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProtocolError(f"{what} must be a list of node ids")
    if list(value) != list(order(value)) or len({v.lower() for v in value}) != len(value):
        raise ProtocolError(f"{what} must be distinct and in canonical order")
    return tuple(value)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """One node's stage-2 upload to the coordinator: its weighted vector under masks.

    ``values = q(α_i·w_i) + PRG(b_i) + Σ_j ±PRG(s_ij)`` mod p over the other nodes ``j``
    of ``masked_with`` (the sender set it first signed this round). It is uniformly
    random to anyone missing ``b_i``. The commitments let the coordinator check every
    seed it reconstructs, so a corrupt share never silently yields a wrong model.
    """

    federation_id: str
    round: int
    roster: str
    node_id: str
    masked_with: tuple[str, ...]
    self_commitment: str
    pair_commitments: dict[str, str]
    settings: SumSettings
    values: IntVector = field(repr=False)

    def to_bytes(self) -> bytes:
        """Header length, canonical JSON header, then ``<u4`` values (4 bytes each)."""
        return _pack(
            {
                "federation_id": self.federation_id,
                "round": self.round,
                "roster": self.roster,
                "node_id": self.node_id,
                "masked_with": list(self.masked_with),
                "self_commitment": self.self_commitment,
                "pair_commitments": self.pair_commitments,
                "settings": self.settings.to_json(),
            },
            self.values,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedInput:
        """Inverse of :meth:`to_bytes`; ``ProtocolError`` on a malformed masked input."""
        head, values = _unpack(data, "masked input")
        try:
            masked = cls(
                federation_id=str(head["federation_id"]),
                round=int(head["round"]),
                roster=str(head["roster"]),
                node_id=str(head["node_id"]),
                masked_with=_ids(head["masked_with"], "masked_with"),
                self_commitment=str(head["self_commitment"]),
                pair_commitments={str(k): str(v) for k, v in head["pair_commitments"].items()},
                settings=SumSettings.from_json(head["settings"]),
                values=values,
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ProtocolError(f"malformed masked input: {exc}") from exc
        peers = set(masked.masked_with) - {masked.node_id}
        if masked.node_id not in masked.masked_with or set(masked.pair_commitments) != peers:
            raise ProtocolError(
                f"masked input of {masked.node_id}: must be masked with itself and commit to "
                "exactly one seed per other node it masked with"
            )
        return masked


@dataclass(frozen=True, eq=False)
class Reveal:
    """One node's stage-3 answer: its Shamir shares of the seeds that unmask the sum.

    For every sender in ``senders`` (the set it agreed to sum), its share of that sender's
    self-mask seed; for every pair of a sender and a node of ``masked_with`` *outside*
    ``senders`` (lost mid-share), its share of their pair seed. Never both for one node:
    the self mask of a node outside the sum stays hidden, so its masked vector does too.
    ``values`` holds the shares in :func:`reveal_layout` order, ``SEED_DIGITS`` each.
    """

    federation_id: str
    round: int
    node_id: str
    x: int
    senders: tuple[str, ...]
    masked_with: tuple[str, ...]
    values: IntVector = field(repr=False)

    def to_bytes(self) -> bytes:
        """Header length, canonical JSON header, then ``<u4`` values."""
        return _pack(
            {
                "federation_id": self.federation_id,
                "round": self.round,
                "node_id": self.node_id,
                "x": self.x,
                "senders": list(self.senders),
                "masked_with": list(self.masked_with),
            },
            self.values,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Reveal:
        """Inverse of :meth:`to_bytes`; ``ProtocolError`` on a malformed reveal."""
        head, values = _unpack(data, "reveal")
        try:
            reveal = cls(
                federation_id=str(head["federation_id"]),
                round=int(head["round"]),
                node_id=str(head["node_id"]),
                x=int(head["x"]),
                senders=_ids(head["senders"], "senders"),
                masked_with=_ids(head["masked_with"], "masked_with"),
                values=values,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(f"malformed reveal: {exc}") from exc
        expected = len(reveal_layout(reveal.senders, reveal.masked_with)) * SEED_DIGITS
        if values.shape[0] != expected:
            raise ProtocolError(
                f"reveal of {reveal.node_id} carries {values.shape[0]} values, "
                f"its sender sets need {expected}"
            )
        return reveal


def reveal_layout(
    senders: Sequence[str], masked_with: Sequence[str]
) -> list[tuple[str, str | None]]:
    """The seeds a reveal carries shares of, as (owner, peer or None for the self mask).

    Self masks of the senders, then the pair seeds between each sender and each node it
    masked with that is not a sender. ``ProtocolError`` unless senders ⊆ masked_with.
    """
    if not set(senders) <= set(masked_with):
        raise ProtocolError(
            f"senders {sorted(set(senders) - set(masked_with))} are not in the set they masked with"
        )
    lost = [j for j in masked_with if j not in set(senders)]
    return [(i, None) for i in senders] + [(i, j) for i in senders for j in lost]


@dataclass(frozen=True)
class Contribution:
    """What ``mask_and_share`` produces: the masked input, and one envelope per roster member."""

    masked: MaskedInput
    envelopes: dict[str, bytes]


def mask_and_share(
    roster: Roster,
    me: str,
    private_key: X25519PrivateKey,
    vector: NDArray[Any],
    *,
    weight: float,
    fixed_point: FixedPoint,
    senders: Collection[str],
    settings: SumSettings | None = None,
    noise: IntVector | None = None,
) -> Contribution:
    """Stage 2: mask ``weight · vector`` and Shamir-share the mask seeds to the roster.

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
    senders
        The sender set this node signed: it masks with each of them, so the pair masks
        cancel in their sum.
    settings
        What the masked vector declares it used (the round's :class:`SumSettings`); its
        code must be ``fixed_point``. Without it: ``fixed_point``, no noise, ``n_total`` 0.
    noise
        This sender's integer noise in field units (``protocol.noise.sender_noise``),
        added to its quantised input before any mask, so no exact sum ever exists.

    Returns
    -------
    The masked vector (``4·d`` bytes on the wire, for the coordinator) and ``{recipient:
    envelope}`` holding the recipient's shares of the seeds (``36`` bytes per seed).
    """
    _check_own_key(roster, me, private_key)
    fixed_point.check_parties(roster.n)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite non-negative number, got {weight!r}")
    arr = np.asarray(vector, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"vector must be a non-empty 1-D array, got shape {arr.shape}")
    masked_with = order(senders)
    if len({s.lower() for s in masked_with}) != len(masked_with) or me not in masked_with:
        raise ProtocolError(f"{me} masks only with a set of distinct senders that includes it")
    for sender in masked_with:
        roster.member(sender)
    if settings is None:
        settings = SumSettings(fixed_point.clip, fixed_point.frac_bits, 0, None, 0)
    elif settings.fixed_point != fixed_point:
        raise ProtocolError(
            f"settings name code {settings.fixed_point}, masking with {fixed_point}"
        )
    d = arr.shape[0]
    self_seed = masking.new_seed()
    acc = fixed_point.quantize(weight * arr)
    if noise is not None:
        if noise.shape != (d,):
            raise ValueError(f"noise must have shape ({d},), got {noise.shape}")
        # |noise| stays within the headroom round_fixed_point reserves (twelve σ).
        acc = reduce(acc + np.asarray(noise, dtype=np.int64) + P)
    acc += masking.expand_words(self_seed, d)
    seeds = [self_seed]
    commitments = {}
    subtracted = 0
    for peer in masked_with:
        if peer == me:
            continue
        seed = masking.pair_seed(
            private_key, roster.member(peer).public_key, _pair_context(roster, me, peer)
        )
        mask = masking.expand_words(seed, d)
        if _pair_sign(me, peer):
            acc += mask
        else:  # add p − mask: subtract now, add the p's once at the end
            acc -= mask
            subtracted += 1
        seeds.append(seed)
        commitments[peer] = masking.commitment(seed, _commit_context(roster, me, peer))
    masked = MaskedInput(
        federation_id=roster.federation_id,
        round=roster.round,
        roster=roster_digest(roster),
        node_id=me,
        masked_with=masked_with,
        self_commitment=masking.commitment(self_seed, _commit_context(roster, me, None)),
        pair_commitments=commitments,
        settings=settings,
        values=reduce(acc + subtracted * P),  # n + 1 terms of |·| < 2^31: no overflow
    )
    secret = np.concatenate([masking.seed_to_field(s) for s in seeds])
    shares = shamir.split(secret, roster.xs, roster.threshold)
    envelopes = {}
    for member, share in zip(roster.members, shares, strict=True):
        context = envelope_context(roster, me, member.node_id)
        envelopes[member.node_id] = seal(
            private_key, member.public_key, share.astype(WIRE_DTYPE).tobytes(), context=context
        )
    return Contribution(masked, envelopes)


def reveal(
    roster: Roster,
    me: str,
    private_key: X25519PrivateKey,
    envelopes: Mapping[str, bytes],
    *,
    senders: Collection[str],
    masked_with: Collection[str],
) -> Reveal:
    """Stage 3: open the envelopes addressed to ``me`` (keyed by sender), reveal the shares
    that unmask the sum over ``senders``.

    ``senders`` is the set this node agreed to sum; ``masked_with`` the set it masked with
    (its first agreement of the round: the same or larger). The envelopes must come from
    exactly ``senders``, at least ``t`` of them: a "sum" of fewer models could be a single
    node's model. For a node of ``masked_with`` outside ``senders`` only pair seeds are
    revealed, never its self mask.
    """
    _check_own_key(roster, me, private_key)
    included = order(envelopes)
    if set(senders) != set(included):
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
    masked = order(masked_with)
    layout = reveal_layout(included, masked)
    opened: dict[str, IntVector] = {}
    for sender in included:
        context = envelope_context(roster, sender, me)
        plaintext = open_envelope(
            private_key, roster.member(sender).public_key, envelopes[sender], context=context
        )
        share = _decode_residues(plaintext, f"share from {sender}")
        peers = _secrets_of(sender, masked)
        if share.shape[0] != len(peers) * SEED_DIGITS:
            raise ProtocolError(
                f"share from {sender} holds {share.shape[0]} values, {len(peers)} seeds "
                f"of {SEED_DIGITS} expected: it masked with another sender set"
            )
        opened[sender] = share.reshape(len(peers), SEED_DIGITS)
    rows = [opened[owner][_secrets_of(owner, masked).index(peer)] for owner, peer in layout]
    return Reveal(
        federation_id=roster.federation_id,
        round=roster.round,
        node_id=me,
        x=roster.member(me).x,
        senders=included,
        masked_with=masked,
        values=np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
    )


def _check_reveals(roster: Roster, reveals: Sequence[Reveal]) -> None:
    """Every reveal must belong to this round, to a roster member, over one pair of sets."""
    if len(reveals) < roster.threshold:
        raise ProtocolError(
            f"round {roster.round} has {len(reveals)} reveals, "
            f"reconstruction needs t={roster.threshold}"
        )
    seen: set[str] = set()
    for r in reveals:
        if (r.federation_id, r.round) != (roster.federation_id, roster.round):
            raise ProtocolError(
                f"reveal from {r.node_id} is for round {r.round} of {r.federation_id!r}, "
                f"not round {roster.round} of {roster.federation_id!r}"
            )
        if r.node_id in seen:
            raise ProtocolError(f"two reveals from {r.node_id}")
        seen.add(r.node_id)
        if roster.member(r.node_id).x != r.x:
            raise ProtocolError(
                f"reveal from {r.node_id} claims x={r.x}, "
                f"the roster says x={roster.member(r.node_id).x}"
            )
    sets: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for r in reveals:
        sets.setdefault((r.senders, r.masked_with), []).append(r.node_id)
    if len(sets) > 1:
        detail = "; ".join(f"{nodes} summed {list(s)}" for (s, _), nodes in sets.items())
        raise ProtocolError(f"reveals are over different sender sets: {detail}")
    for sender in reveals[0].masked_with:
        roster.member(sender)


def _check_masked(
    roster: Roster,
    masked: Mapping[str, MaskedInput],
    senders: Sequence[str],
    masked_with: Sequence[str],
) -> int:
    """One masked input per sender, of this round and roster, masked with the same set;
    returns their common length."""
    if set(masked) != set(senders):
        raise ProtocolError(
            f"masked inputs from {sorted(masked)} but the reveals sum {list(senders)}"
        )
    lengths: set[int] = set()
    settings = {m.settings for m in masked.values()}
    if len(settings) > 1:
        detail = "; ".join(f"{node}: {m.settings.to_json()}" for node, m in sorted(masked.items()))
        raise ProtocolError(f"senders used different sum settings: {detail}")
    for node, m in masked.items():
        if (m.federation_id, m.round, m.roster, m.node_id) != (
            roster.federation_id,
            roster.round,
            roster_digest(roster),
            node,
        ):
            raise ProtocolError(f"the masked input of {node} is not its own for this round")
        if m.masked_with != tuple(masked_with):
            raise ProtocolError(
                f"{node} masked with {list(m.masked_with)}, the others with {list(masked_with)}"
            )
        lengths.add(int(m.values.shape[0]))
    if len(lengths) != 1:
        raise ProtocolError("masked inputs have different lengths")
    return lengths.pop()


def reconstruct_sum(
    roster: Roster,
    masked: Mapping[str, MaskedInput],
    reveals: Sequence[Reveal],
    fixed_point: FixedPoint,
) -> FloatVector:
    """Stage 4: ``Σ α_i w_i`` over the reveals' senders, from any ``t`` reveals.

    Interpolates every seed the reveals share (with more than ``t`` reveals, all are
    checked to lie on one polynomial of degree ``t − 1`` and a corrupt one is named),
    checks each seed against the commitment in its owner's masked input, then removes
    the self masks and the pair masks shared with nodes lost mid-share from the sum of
    the masked inputs; the pair masks between senders cancel. If some committed nodes
    never shared, the result is the sum over the rest: divide by their ``Σ α_i``.
    """
    _check_reveals(roster, reveals)
    senders, masked_with = reveals[0].senders, reveals[0].masked_with
    d = _check_masked(roster, masked, senders, masked_with)
    declared = next(iter(masked.values())).settings.fixed_point
    if declared != fixed_point:
        raise ProtocolError(f"the senders masked under {declared}, not {fixed_point}")
    fixed_point.check_parties(len(senders))
    ordered = sorted(reveals, key=lambda r: r.x)
    xs = [r.x for r in ordered]
    rows = [r.values for r in ordered]
    try:
        shamir.check_consistency(xs, rows, roster.threshold)
    except shamir.InconsistentSharesError as exc:
        by_x = {r.x: r.node_id for r in ordered}
        who = (
            f"the reveal of {by_x[exc.suspect_x]} (x={exc.suspect_x}) is corrupt"
            if exc.suspect_x is not None
            else "the corrupt one cannot be singled out"
        )
        raise shamir.InconsistentSharesError(
            f"round {roster.round}: {who}; {exc}",
            suspect_x=exc.suspect_x,
            bad_coordinates=exc.bad_coordinates,
        ) from exc
    t = roster.threshold
    secrets = shamir.reconstruct(xs[:t], rows[:t]).reshape(-1, SEED_DIGITS)
    total = np.zeros(d, dtype=np.int64)
    for sender in senders:
        total += masked[sender].values
    removed = 0
    for (owner, peer), digits in zip(reveal_layout(senders, masked_with), secrets, strict=True):
        seed = masking.field_to_seed(digits)
        committed = (
            masked[owner].self_commitment if peer is None else masked[owner].pair_commitments[peer]
        )
        if masking.commitment(seed, _commit_context(roster, owner, peer)) != committed:
            raise ProtocolError(
                f"round {roster.round}: the {'self' if peer is None else 'pair'} mask seed of "
                f"{owner}{'' if peer is None else ' with ' + peer} reconstructed from the "
                "reveals does not match its commitment: a corrupt share or masked input"
            )
        mask = masking.expand_words(seed, d)
        if peer is None or _pair_sign(owner, peer):  # remove exactly what the owner added
            total -= mask
            removed += 1
        else:
            total += mask
    # Fewer than 2^31 terms of |·| < 2^31 each, plus p per subtraction: within int64.
    return fixed_point.dequantize(reduce(total + removed * P))
