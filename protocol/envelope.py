"""Envelopes: one sender's secret share sealed for one recipient, bound to its round.

X25519 between the sender's and the recipient's keys, HKDF-SHA256 to a
ChaCha20-Poly1305 key, a random 96-bit nonce. The context (federation, round,
stage, roster digest, sender, recipient) goes into both the HKDF ``info`` and the
AEAD associated data, so an envelope opens only for its recipient, only unmodified,
and only in the context it was sealed for: a replay into another round, federation,
stage or roster, or a swapped sender, fails authentication. The sender set a share
is revealed for does not exist yet when it is sealed; it is bound by the senders'
signed agreement on it (``protocol.secure_sum.sender_set_digest``) and by the
reveal, which names it.

Wire format::

    version (1 byte) | header length (2 bytes, big-endian) | header | nonce (12) | ciphertext+tag

The header is the canonical JSON of the context, in the clear; it only lets the
recipient say *which* binding is wrong. The cryptographic binding does not rely
on it: editing it breaks the tag.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.canonical import canonical_json
from protocol.errors import ProtocolError

VERSION = 2
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
_HKDF_LABEL = b"lethe/secagg/envelope/v2"


@dataclass(frozen=True)
class EnvelopeContext:
    """What an envelope is bound to: one share, from one node, to one node, in one round,
    at one stage, under one roster (``roster`` is the hex keccak-256 of its canonical bytes)."""

    federation_id: str
    round: int
    sender: str
    recipient: str
    stage: str
    roster: str

    def to_bytes(self) -> bytes:
        """Canonical encoding, used as the clear header, in HKDF info and as associated data."""
        return canonical_json(
            {
                "federation_id": self.federation_id,
                "round": self.round,
                "sender": self.sender,
                "recipient": self.recipient,
                "stage": self.stage,
                "roster": self.roster,
            }
        )

    def describe(self) -> str:
        """Human-readable form for error messages."""
        return (
            f"{self.sender} -> {self.recipient}, {self.stage} of round {self.round} "
            f"of federation {self.federation_id!r} (roster {self.roster[:10]}…)"
        )


def generate_private_key() -> X25519PrivateKey:
    """A fresh X25519 key pair (the private half; derive the public one from it)."""
    return X25519PrivateKey.generate()


def public_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key that goes into the roster and on chain."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte private key, for the node's own key file."""
    return private_key.private_bytes_raw()


def load_private_key(raw: bytes) -> X25519PrivateKey:
    """Inverse of :func:`private_key_bytes`; ``ValueError`` unless exactly 32 bytes."""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def key_to_hex(raw: bytes) -> str:
    """Hex of a raw 32-byte key (no ``0x``), as stored in rosters and JSON."""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 key is {KEY_BYTES} bytes, got {len(raw)}")
    return raw.hex()


_P = 2**255 - 19
SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)
"""The canonical u-coordinates of the points of order dividing 8 on Curve25519 and its
twist (libsodium's X25519 blocklist): any scalar maps them to an all-zero secret."""


def usable_public_key(key: bytes) -> bool:
    """Whether an X25519 public key can seal an envelope: 32 bytes, a canonical u < 2^255-19
    (RFC 7748, little-endian), not of small order. The contract's ``registerKey`` refuses
    the same keys; a member whose key (on an older deployment) fails this counts as not
    registered, the same way for every node."""
    if len(key) != KEY_BYTES:
        return False
    u = int.from_bytes(key, "little")
    return u < _P and u not in SMALL_ORDER_U


def key_from_hex(text: str) -> bytes:
    """Raw 32 bytes from hex (an optional ``0x`` prefix is accepted)."""
    body = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        raw = bytes.fromhex(body)
    except ValueError as exc:
        raise ValueError(f"not a hex X25519 key: {text!r}") from exc
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 key is {2 * KEY_BYTES} hex digits, got {len(body)}")
    return raw


def _aead(
    private_key: X25519PrivateKey,
    peer_public_key: bytes,
    *,
    sender_public_key: bytes,
    recipient_public_key: bytes,
    context: EnvelopeContext,
) -> ChaCha20Poly1305:
    """The AEAD both ends derive for this key pair and context.

    Both public keys go into ``info`` next to the context, so the key also commits
    to which keys the roster named for the two ids.
    """
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
    except ValueError as exc:
        raise ProtocolError(f"unusable X25519 public key for {context.describe()}: {exc}") from exc
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=_HKDF_LABEL + context.to_bytes() + sender_public_key + recipient_public_key,
    ).derive(shared)
    return ChaCha20Poly1305(key)


def seal(
    sender_private_key: X25519PrivateKey,
    recipient_public_key: bytes,
    plaintext: bytes,
    *,
    context: EnvelopeContext,
) -> bytes:
    """Encrypt ``plaintext`` so that only ``context.recipient`` can open it, in ``context``."""
    header = context.to_bytes()
    if len(header) > 0xFFFF:
        raise ProtocolError(f"envelope context too long ({len(header)} bytes)")
    aead = _aead(
        sender_private_key,
        recipient_public_key,
        sender_public_key=public_key_bytes(sender_private_key),
        recipient_public_key=recipient_public_key,
        context=context,
    )
    prefix = struct.pack(">BH", VERSION, len(header)) + header
    nonce = os.urandom(NONCE_BYTES)
    return b"".join((prefix, nonce, aead.encrypt(nonce, plaintext, prefix)))


def _parse_header(envelope: bytes) -> tuple[EnvelopeContext, int]:
    """The claimed context and where the header ends (= where the nonce starts)."""
    if len(envelope) < 3 or envelope[0] != VERSION:
        raise ProtocolError(f"not a version-{VERSION} envelope")
    (length,) = struct.unpack_from(">H", envelope, 1)
    end = 3 + length
    if len(envelope) < end + NONCE_BYTES + TAG_BYTES:
        raise ProtocolError(f"envelope truncated: {len(envelope)} bytes")
    try:
        fields = json.loads(envelope[3:end])
        context = EnvelopeContext(
            federation_id=str(fields["federation_id"]),
            round=int(fields["round"]),
            sender=str(fields["sender"]),
            recipient=str(fields["recipient"]),
            stage=str(fields["stage"]),
            roster=str(fields["roster"]),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ProtocolError(f"unreadable envelope header: {exc}") from exc
    return context, end


def read_context(envelope: bytes) -> EnvelopeContext:
    """The context an envelope claims in its clear header (unauthenticated until opened)."""
    return _parse_header(envelope)[0]


def open_envelope(
    recipient_private_key: X25519PrivateKey,
    sender_public_key: bytes,
    envelope: bytes,
    *,
    context: EnvelopeContext,
) -> bytes:
    """Decrypt an envelope expected in ``context``; ``ProtocolError`` if it is not exactly that.

    A header naming another context is reported as such; a header that matches but
    ciphertext, tag, header or keys that do not (tampering, a rewritten header, the
    wrong recipient key) fails authentication, with the ``InvalidTag`` chained.
    """
    claimed, header_end = _parse_header(envelope)
    if claimed != context:
        raise ProtocolError(
            f"envelope sealed for {claimed.describe()} was presented as {context.describe()}: "
            "misrouted, replayed or misattributed"
        )
    nonce_end = header_end + NONCE_BYTES
    view = memoryview(envelope)  # slices of a multi-megabyte share without copying it
    aead = _aead(
        recipient_private_key,
        sender_public_key,
        sender_public_key=sender_public_key,
        recipient_public_key=public_key_bytes(recipient_private_key),
        context=context,
    )
    try:
        return aead.decrypt(view[header_end:nonce_end], view[nonce_end:], view[:header_end])
    except InvalidTag as exc:
        raise ProtocolError(
            f"envelope for {context.describe()} failed authentication: tampered, or not "
            "sealed with these keys in this context (federation, round, stage, roster, sender, "
            "recipient)"
        ) from exc
