"""Merkle trees of slice commitments: roots, inclusion proofs, and what must not verify."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.hashing import keccak256
from protocol.merkle import (
    EMPTY_ROOT,
    compute_root,
    merkle_proof,
    merkle_root,
    proof_length,
    verify_proof,
)


def leaves(n: int) -> list[bytes]:
    return [keccak256(i.to_bytes(4, "big")) for i in range(n)]


def node(left: bytes, right: bytes) -> bytes:
    return keccak256(b"\x01" + left + right)


def test_root_matches_the_documented_construction() -> None:
    a, b, c = leaves(3)
    assert merkle_root([]) == EMPTY_ROOT
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == node(a, b)
    # Odd node out is promoted unchanged.
    assert merkle_root([a, b, c]) == node(node(a, b), c)
    d, e = leaves(5)[3:]
    assert merkle_root([a, b, c, d, e]) == node(node(node(a, b), node(c, d)), e)


def test_root_is_positional() -> None:
    a, b, c = leaves(3)
    assert merkle_root([a, b, c]) != merkle_root([b, a, c])


@pytest.mark.parametrize("n", [*range(1, 18), 31, 32, 33, 100])
def test_every_leaf_has_a_verifying_proof(n: int) -> None:
    tree = leaves(n)
    root = merkle_root(tree)
    for i, leaf in enumerate(tree):
        proof = merkle_proof(tree, i)
        assert len(proof) == proof_length(i, n)
        assert verify_proof(root, leaf, i, n, proof)
        assert compute_root(leaf, i, n, proof) == root


@given(st.integers(2, 70), st.data())
def test_tampering_breaks_the_proof(n: int, data: st.DataObject) -> None:
    tree = leaves(n)
    root = merkle_root(tree)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle_proof(tree, i)
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
    assert not verify_proof(root, tree[other], i, n, proof)
    assert not verify_proof(root, tree[i], other, n, proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        forged = list(proof)
        forged[k] = keccak256(forged[k])
        assert not verify_proof(root, tree[i], i, n, forged)
    assert not verify_proof(keccak256(root), tree[i], i, n, proof)


def test_an_interior_node_cannot_pass_for_a_leaf() -> None:
    tree = leaves(4)
    root = merkle_root(tree)
    inner = node(tree[0], tree[1])
    # Real sibling, real root: only the claimed position gives it away.
    assert not verify_proof(root, inner, 0, 4, [node(tree[2], tree[3])])
    with pytest.raises(ProtocolError, match="needs 2 sibling"):
        compute_root(inner, 0, 4, [node(tree[2], tree[3])])


def test_malformed_inputs_are_rejected() -> None:
    with pytest.raises(ProtocolError, match="32 bytes"):
        merkle_root([b"short"])
    with pytest.raises(ProtocolError, match="out of range"):
        merkle_proof(leaves(3), 3)
    with pytest.raises(ProtocolError, match="out of range"):
        proof_length(0, 0)
    assert not verify_proof(EMPTY_ROOT, leaves(1)[0], 1, 1, [])
