"""Our CIDs are Kubo's: reference-importer vectors, an independent implementation, properties."""

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import aleph_cid
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cid import (
    CHUNK_SIZE,
    MAX_LINKS,
    build_dag,
    cid_of,
    cid_of_stream,
    decode_file_node,
    normalize_cid,
)

VECTORS_PATH = Path(__file__).parent / "fixtures" / "cid_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
CASES = VECTORS["vectors"]


@pytest.fixture(scope="session")
def shake_stream() -> bytes:
    """The longest input of the vectors; every "shake256" input is a prefix of it."""
    longest = max(case["size"] for case in CASES)
    return hashlib.shake_256(VECTORS["seed"].encode()).digest(longest)


def vector_input(case: dict[str, Any], stream: bytes) -> bytes:
    """Rebuild a vector's input by the rule scripts/cid_vectors.mjs uses."""
    if case["pattern"] == "zeros":
        return bytes(case["size"])
    return stream[: case["size"]]


def aleph(data: bytes) -> str:
    hasher = aleph_cid.CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def test_vectors_cover_every_dag_shape() -> None:
    sizes = {case["size"] for case in CASES}
    assert {0, 1, CHUNK_SIZE, CHUNK_SIZE + 1} <= sizes
    assert max(sizes) > MAX_LINKS * CHUNK_SIZE, "no vector needs two tree levels"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_cid_equals_reference_importer(case: dict[str, Any], shake_stream: bytes) -> None:
    data = vector_input(case, shake_stream)
    root, blocks = build_dag(data)
    assert root == case["cid"]
    assert len(blocks) == case["blocks"]
    assert cid_of(data) == case["cid"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_aleph_cid_agrees_on_the_vectors(case: dict[str, Any], shake_stream: bytes) -> None:
    assert aleph(vector_input(case, shake_stream)) == case["cid"]


def test_single_chunk_is_a_raw_leaf_and_larger_files_a_dag_pb_root() -> None:
    assert cid_of(b"x" * CHUNK_SIZE).startswith("bafk")
    assert cid_of(b"x" * (CHUNK_SIZE + 1)).startswith("bafy")


def test_root_node_lists_the_leaves_in_file_order() -> None:
    data = random.Random(7).randbytes(3 * CHUNK_SIZE + 10)
    root, blocks = build_dag(data)
    node = decode_file_node(blocks[root])
    assert node.filesize == len(data)
    assert b"".join(blocks[link] for link in node.links) == data


class _ShortReads(io.BytesIO):
    """A pipe-like stream that never returns more than 1000 bytes per read."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(min(1000, size) if size is not None and size >= 0 else 1000)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 3])
def test_streamed_cid_equals_in_memory_cid(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert cid_of_stream(io.BytesIO(data)) == cid_of(data)
    assert cid_of_stream(_ShortReads(data)) == cid_of(data)


def test_normalize_cid_spells_v1_in_base32_and_rejects_garbage() -> None:
    base32 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert normalize_cid("zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW") == base32
    with pytest.raises(ValueError, match="not a CID: 'hello'"):
        normalize_cid("hello")


_near_boundaries = st.builds(
    lambda k, d: max(0, k * CHUNK_SIZE + d),
    st.integers(0, 6),
    st.integers(-2, 2),
)


@settings(max_examples=60, deadline=None)
@given(size=st.one_of(st.integers(0, 6 * CHUNK_SIZE), _near_boundaries), seed=st.integers(0, 2**32))
def test_cid_equals_aleph_cid_for_any_size(size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    assert cid_of(data) == aleph(data)
