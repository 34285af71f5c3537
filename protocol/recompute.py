"""Recompute a round's global model from its public transcript: one function, three users.

The round manifest carries every sender's signed masked vector, every sender's signature
on the sender set and its settings, and every signed reveal (the Shamir shares that
unmask the sum). From those alone :func:`recompute_model` redoes the coordinator's
unmasking bit for bit: it checks each signature against the roster, that every sender
used the settings any party derives from the chain (``SumSettings.for_round``), each
reconstructed seed against its commitment, and returns the global model. The node (before
it approves), ``lethe audit`` and the explorer call it; a model that is not this sum gets
no approval and fails the audit, naming the round.

What publishing the transcript gives away: nothing beyond the noisy sum. A masked vector
stays masked by the pair masks between senders (never revealed), the self-mask seeds
revealed are those of the sum, and the pair seeds revealed are those with nodes lost
mid-share, whose masked vectors never enter the transcript. Anyone can recompute the
*noisy* sum; the exact sum never exists (``protocol.noise``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.errors import ProtocolError
from protocol.hashing import keccak256

if TYPE_CHECKING:
    from protocol.field import FixedPoint
    from protocol.manifest import RoundManifest
    from protocol.secure_sum import MaskedInput, Reveal, Roster


@dataclass(frozen=True)
class Signed:
    """Bytes a node signed (EIP-191 over their keccak256), as the transcript keeps them."""

    data: bytes
    signature: str

    def to_json(self) -> dict[str, str]:
        return {"data": base64.b64encode(self.data).decode(), "signature": self.signature}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Signed:
        if not isinstance(obj, dict) or set(obj) != {"data", "signature"}:
            raise ProtocolError(f"malformed {what}: expected data and signature")
        try:
            data = base64.b64decode(str(obj["data"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"malformed {what}: {exc}") from exc
        return cls(data, str(obj["signature"]))

    def signer(self) -> str:
        """The address that signed these bytes."""
        from protocol.commitments import recover_leaf_signer

        return recover_leaf_signer(keccak256(self.data), self.signature)


@dataclass(frozen=True)
class Transcript:
    """What the round's sum was made of: by sender address, as each node signed it."""

    masked: dict[str, Signed]
    agreements: dict[str, str]
    reveals: dict[str, Signed]

    def to_json(self) -> dict[str, Any]:
        return {
            "masked": {a: s.to_json() for a, s in sorted(self.masked.items())},
            "agreements": dict(sorted(self.agreements.items())),
            "reveals": {a: s.to_json() for a, s in sorted(self.reveals.items())},
        }

    @classmethod
    def from_json(cls, obj: object) -> Transcript:
        if not isinstance(obj, dict) or set(obj) != {"masked", "agreements", "reveals"}:
            raise ProtocolError("the manifest carries no transcript of masked updates")
        try:
            return cls(
                masked={
                    str(a): Signed.from_json(v, f"masked vector of {a}")
                    for a, v in obj["masked"].items()
                },
                agreements={str(a): str(v) for a, v in obj["agreements"].items()},
                reveals={
                    str(a): Signed.from_json(v, f"reveal of {a}") for a, v in obj["reveals"].items()
                },
            )
        except AttributeError as exc:
            raise ProtocolError(f"malformed transcript: {exc}") from exc


def global_model(
    roster: Roster,
    masked: Mapping[str, MaskedInput],
    reveals: list[Reveal],
    fixed_point: FixedPoint,
    n_total: int,
    n_senders: int,
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Σ (n_i/N)·w_i (plus the senders' noise) over the senders, renormalised to their samples
    if some committed nodes never shared: the one computation coordinator and verifiers run."""
    from protocol.secure_sum import reconstruct_sum

    total = reconstruct_sum(roster, masked, reveals, fixed_point)
    if n_senders != n_total:
        total = total * (n_total / n_senders)
    return np.asarray(total, dtype=np.float32)


def manifest_roster(manifest: RoundManifest) -> Roster:
    """The round's roster as the manifest names it."""
    from protocol.envelope import key_from_hex
    from protocol.secure_sum import Member, Roster

    try:
        members = tuple(
            Member(str(m["address"]), int(m["x"]), key_from_hex(str(m["public_key"])))
            for m in manifest.roster
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed roster in the manifest: {exc}") from exc
    return Roster(manifest.federation_id, manifest.round, manifest.threshold, members)


def _signed_by(entries: Mapping[str, Signed], what: str) -> None:
    for address, entry in entries.items():
        if entry.signer().lower() != address.lower():
            raise ProtocolError(f"the {what} listed under {address} is not signed by it")


def recompute_model(manifest: RoundManifest) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The round's global model, recomputed from the manifest's transcript alone.

    Raises ``ProtocolError`` naming what does not hold: a signature, a sender set, settings
    other than the chain-derivable ones, a seed that misses its commitment.
    """
    from protocol.secure_sum import MaskedInput, Reveal, SumSettings, sender_set_digest

    where = f"round {manifest.round}"
    transcript = Transcript.from_json(manifest.transcript)
    roster = manifest_roster(manifest)
    senders = [u.address for u in manifest.updates]
    if sorted(a.lower() for a in transcript.masked) != sorted(s.lower() for s in senders):
        raise ProtocolError(f"{where}: the masked vectors are not exactly the round's senders")
    if [s.lower() for s in manifest.responders.get("share", [])] != [s.lower() for s in senders]:
        raise ProtocolError(f"{where}: the senders are not the nodes whose updates it lists")
    _signed_by(transcript.masked, "masked vector")
    _signed_by(transcript.reveals, "reveal")
    masked = {}
    for address, entry in transcript.masked.items():
        vector = MaskedInput.from_bytes(entry.data)
        if vector.node_id.lower() != address.lower():
            raise ProtocolError(f"{where}: the masked vector under {address} is {vector.node_id}'s")
        masked[vector.node_id] = vector
    settings = {m.settings for m in masked.values()}
    if len(settings) != 1:
        raise ProtocolError(f"{where}: the senders used different sum settings")
    used = settings.pop()
    derived = SumSettings.for_round(
        roster.n, used.sigma, through_slice=used.through_slice, n_total=used.n_total
    )
    if used != derived:
        raise ProtocolError(
            f"{where}: the senders' settings {used.to_json()} are not the ones every party "
            f"derives from the roster of {roster.n} and σ = {used.sigma} ({derived.to_json()})"
        )
    digest = sender_set_digest(roster, list(masked), used)
    from protocol.commitments import recover_leaf_signer

    for sender in masked:
        signature = transcript.agreements.get(sender)
        if signature is None or recover_leaf_signer(digest, signature).lower() != sender.lower():
            raise ProtocolError(f"{where}: {sender} did not sign the sender set and settings")
    reveals = []
    for address, entry in transcript.reveals.items():
        revealed = Reveal.from_bytes(entry.data)
        if revealed.node_id.lower() != address.lower():
            raise ProtocolError(f"{where}: the reveal under {address} is {revealed.node_id}'s")
        reveals.append(revealed)
    n_senders = sum(u.n_samples for u in manifest.updates)
    if n_senders != manifest.n_total or not 0 < n_senders <= used.n_total:
        raise ProtocolError(f"{where}: the senders' samples do not add up to the manifest's")
    return global_model(roster, masked, reveals, used.fixed_point, used.n_total, n_senders)


def check_published(manifest: RoundManifest, published: bytes) -> None:
    """``ProtocolError`` unless ``published`` is, bit for bit, the recomputed model."""
    from protocol.model import model_bytes

    if model_bytes(recompute_model(manifest)) != published:
        raise ProtocolError(
            f"round {manifest.round}: the published global model is not the sum of the "
            "round's masked updates"
        )
