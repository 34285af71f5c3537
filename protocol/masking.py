"""Masks for secure aggregation: 256-bit seeds, expanded by ChaCha20 into uniform GF(p) vectors.

A node hides its quantised vector under one *self mask* (a fresh random seed) and one
*pair mask* per other sender; the pair seed of two nodes is what both derive from their
registered X25519 keys for this round, so the pair masks cancel in the sum (one adds,
the other subtracts). Seeds travel as Shamir shares, so each is written as a short
vector of field elements (:func:`seed_to_field`). Expansion is a cryptographic PRG
(ChaCha20 keystream, the seed as key) mapped to GF(2^31 − 1) by rejection, so a mask is
exactly uniform: a seeded Mersenne Twister or a seed folded to 32 bits would let anyone
who sees a masked vector search the seed space.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from protocol.errors import ProtocolError
from protocol.field import IntVector, P
from protocol.hashing import keccak256

SEED_BYTES = 32
"""Every mask seed has 256 bits of entropy."""

DIGIT_BITS = 30
SEED_DIGITS = -(-SEED_BYTES * 8 // DIGIT_BITS)
"""A seed as field elements: nine base-2^30 digits (each < 2^30 < p)."""

_PAIR_LABEL = b"lethe/secagg/pair-mask/v1\x00"
_COMMIT_LABEL = b"lethe/secagg/seed-commitment/v1\x00"
_NONCE = bytes(16)
"""ChaCha20's counter and nonce: zero, as every key (seed) expands exactly one mask."""


def new_seed() -> bytes:
    """A fresh self-mask seed from the OS CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)


def expand(seed: bytes, length: int) -> IntVector:
    """``length`` uniform elements of GF(p) from the ChaCha20 keystream under ``seed``.

    Each 32-bit word is masked to 31 bits; the one value equal to p is skipped and the
    keystream read further, so the result is exactly uniform (no modular bias) and a
    deterministic function of the seed.
    """
    out: IntVector = expand_words(seed, length).astype(np.int64)
    return out


def expand_words(seed: bytes, length: int) -> NDArray[np.uint32]:
    """:func:`expand` as uint32, for adding straight into an int64 accumulator."""
    if len(seed) != SEED_BYTES:
        raise ProtocolError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    words = np.frombuffer(bytearray(stream.update(bytes(4 * length))), dtype="<u4")
    words &= np.uint32(P)
    if (words == P).any():  # about one vector in two thousand at d = 10^6
        kept = words[words != P]
        while kept.size < length:
            more = np.frombuffer(stream.update(bytes(4 * 16)), dtype="<u4") & np.uint32(P)
            kept = np.concatenate([kept, more[more != P]])
        words = kept[:length]
    return words


def pair_seed(private_key: X25519PrivateKey, peer_public_key: bytes, context: bytes) -> bytes:
    """The seed two nodes share for one round: HKDF-SHA256 of their X25519 secret.

    ``context`` names the round and the pair (both ends pass the same bytes); the two
    public keys, in sorted order, are bound too. The Diffie–Hellman secret never leaves
    the node; only this per-round output is ever Shamir-shared.
    """
    mine = private_key.public_key().public_bytes_raw()
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
    except ValueError as exc:
        raise ProtocolError(f"unusable X25519 public key for a pair mask: {exc}") from exc
    keys = b"".join(sorted((mine, peer_public_key)))
    return HKDF(
        algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=_PAIR_LABEL + context + keys
    ).derive(shared)


def commitment(seed: bytes, context: bytes) -> str:
    """Hex keccak-256 binding a seed to its use: a revealed seed must match it.

    Hiding, since the seed has 256 bits of entropy; binding, so a corrupt share or a
    swapped seed is caught at reconstruction even from exactly t shares.
    """
    return "0x" + keccak256(_COMMIT_LABEL + context + b"\x00" + seed).hex()


def seed_to_field(seed: bytes) -> IntVector:
    """The seed as ``SEED_DIGITS`` field elements, little-endian base 2^30 digits."""
    value = int.from_bytes(seed, "big")
    mask = (1 << DIGIT_BITS) - 1
    return np.array(
        [(value >> (DIGIT_BITS * i)) & mask for i in range(SEED_DIGITS)], dtype=np.int64
    )


def field_to_seed(digits: IntVector) -> bytes:
    """Inverse of :func:`seed_to_field`; ``ProtocolError`` if the digits encode no seed."""
    if digits.shape != (SEED_DIGITS,):
        raise ProtocolError(f"a seed is {SEED_DIGITS} field elements, got shape {digits.shape}")
    value = 0
    for i, digit in enumerate(int(d) for d in digits):
        if not 0 <= digit < 1 << DIGIT_BITS:
            raise ProtocolError("reconstructed seed digits are out of range: a corrupt share")
        value |= digit << (DIGIT_BITS * i)
    if value >> (8 * SEED_BYTES):
        raise ProtocolError("reconstructed seed is longer than 256 bits: a corrupt share")
    return value.to_bytes(SEED_BYTES, "big")
