"""keccak256, the one hash both the chain and the off-chain protocol use for commitments."""

from Crypto.Hash import keccak


def keccak256(data: bytes) -> bytes:
    """Return the 32-byte Ethereum keccak256 digest of ``data``."""
    h = keccak.new(digest_bits=256)
    h.update(data)
    return h.digest()
