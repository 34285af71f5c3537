"""Binary Merkle trees over 32-byte leaves with keccak256: root, inclusion proof, verification.

The tree is positional: leaves keep the order they are given in (the node sorts a slice's
leaves before building its tree). Each level pairs neighbours left to right; an interior
node is ``keccak256(0x01 ‖ left ‖ right)``; an odd node out at the end of a level is
promoted unchanged to the next level. The root of one leaf is that leaf; the root of no
leaves is 32 zero bytes.

A proof is the list of sibling hashes from the leaf upwards, levels where the node was
promoted contributing none. Its verification needs the leaf's index and the number of
leaves, and rejects a proof of the wrong length, so an interior node cannot pass for a
leaf (the 0x01 prefix separates the two domains as well).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.errors import ProtocolError
from protocol.hashing import keccak256

EMPTY_ROOT = bytes(32)
_NODE_PREFIX = b"\x01"


def _check_leaf(leaf: bytes) -> None:
    if not isinstance(leaf, bytes | bytearray) or len(leaf) != 32:
        raise ProtocolError("Merkle leaves must be 32 bytes")


def _parent(left: bytes, right: bytes) -> bytes:
    return keccak256(_NODE_PREFIX + left + right)


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    paired = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree over ``leaves`` in the given order."""
    for leaf in leaves:
        _check_leaf(leaf)
    if not leaves:
        return EMPTY_ROOT
    level = [bytes(leaf) for leaf in leaves]
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes proving ``leaves[index]`` is in :func:`merkle_root` ``(leaves)``."""
    if not 0 <= index < len(leaves):
        raise ProtocolError(f"leaf index {index} out of range for {len(leaves)} leaves")
    for leaf in leaves:
        _check_leaf(leaf)
    proof: list[bytes] = []
    level = [bytes(leaf) for leaf in leaves]
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return proof


def proof_length(index: int, count: int) -> int:
    """How many siblings a valid proof for leaf ``index`` of ``count`` leaves has."""
    if not 0 <= index < count:
        raise ProtocolError(f"leaf index {index} out of range for {count} leaves")
    length = 0
    while count > 1:
        if index ^ 1 < count:
            length += 1
        index //= 2
        count = (count + 1) // 2
    return length


def compute_root(leaf: bytes, index: int, count: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` among ``count`` leaves.

    Raises ProtocolError if the proof does not have the length that position requires.
    """
    _check_leaf(leaf)
    for sibling in proof:
        _check_leaf(sibling)
    if len(proof) != proof_length(index, count):
        raise ProtocolError(
            f"a proof for leaf {index} of {count} needs {proof_length(index, count)} "
            f"sibling(s), got {len(proof)}"
        )
    node = bytes(leaf)
    siblings = iter(proof)
    while count > 1:
        if index ^ 1 < count:
            sibling = next(siblings)
            node = _parent(node, sibling) if index % 2 == 0 else _parent(sibling, node)
        index //= 2
        count = (count + 1) // 2
    return node


def verify_proof(root: bytes, leaf: bytes, index: int, count: int, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows ``leaf`` at ``index`` of ``count`` leaves under ``root``."""
    try:
        return compute_root(leaf, index, count, proof) == bytes(root)
    except ProtocolError:
        return False
