"""The real encoder: an embedding is a pure function of the text, whatever it is batched with."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.sisa import SisaNode
from node.store import NodeError, load_default
from protocol.features import MAX_TOKENS, TextEncoder, encoder_path
from tests.node_fixtures import small_config

ODD_TEXTS = [
    "",
    "   ",
    "héllo ☃ 日本語 \u200b emoji 🙂",
    "a\x00b",
    "word " * 400,  # far past the 256-token limit
    "@united thanks!!! #great http://t.co/xyz",
]


@functools.cache
def pool() -> list[str]:
    """Real tweets of many lengths plus odd inputs."""
    return [r.text for r in load_default(limit=34).train] + ODD_TEXTS


@functools.cache
def reference() -> dict[str, bytes]:
    """Each pool text embedded alone, one worker: the bytes every batching must reproduce."""
    encoder = TextEncoder(workers=1)
    return {t: encoder.encode([t], progress=False).tobytes() for t in pool()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), workers=st.integers(1, 4))
def test_embedding_is_the_same_in_any_batch_and_order(data: st.DataObject, workers: int) -> None:
    texts = data.draw(st.permutations(pool()))
    texts = texts[: data.draw(st.integers(1, len(texts)))]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(texts)), max_size=6)) | {len(texts)})
    encoder = TextEncoder(workers=workers)
    start = 0
    for end in cuts:
        rows = encoder.encode(texts[start:end], progress=False)
        for text, row in zip(texts[start:end], rows, strict=True):
            assert row.tobytes() == reference()[text], f"{text[:40]!r} changed with its batch"
        start = end


def test_repeated_texts_in_one_call_get_identical_rows() -> None:
    text = pool()[3]
    rows = TextEncoder().encode([text] * 9 + pool()[:20] + [text] * 3, progress=False)
    assert {rows[i].tobytes() for i in (*range(9), 29, 30, 31)} == {reference()[text]}


def test_embeddings_are_unit_rows_that_carry_meaning() -> None:
    a, b, c = TextEncoder().encode(
        [
            "I love my new self-driving car",
            "My new autonomous car is great, I love it",
            "The bakery sells fresh bread every morning",
        ],
        progress=False,
    )
    assert np.allclose([np.linalg.norm(v) for v in (a, b, c)], 1.0, atol=1e-5)
    assert float(a @ b) > float(a @ c) + 0.2


def test_long_texts_are_truncated_to_the_first_256_tokens() -> None:
    encoder = TextEncoder()
    long = " ".join(f"w{i}" for i in range(600))
    assert encoder.tokens(long) == MAX_TOKENS
    longer = long + " and a completely different ending about bread and cheese"
    same, other = encoder.encode([long, longer], progress=False)
    assert same.tobytes() == other.tobytes()
    short_a, short_b = encoder.encode(["w1 w2 w3", "w1 w2 w3 bread"], progress=False)
    assert short_a.tobytes() != short_b.tobytes()


def test_a_store_refuses_embeddings_of_another_encoder(tmp_path: Path) -> None:
    records = load_default(limit=3).train
    with SisaNode.create(tmp_path / "node.db", small_config()) as node:
        node.ingest(records[:2], progress=False)
        assert node.info()["encoder"] == TextEncoder().load()
        with node.store.transaction():
            node.store._con.execute("UPDATE meta SET value='other-encoder' WHERE key='encoder'")
        with pytest.raises(NodeError, match="embeddings of encoder other-encoder"):
            node.ingest(records[2:], progress=False)
        assert node.info()["records"] == 2


def test_a_fresh_machine_builds_the_same_encoder_on_first_use(tmp_path: Path) -> None:
    """An empty cache: the first embedding builds the encoder, offline, says so, and gets the
    very file (and so the very embeddings) every other machine of this kind gets."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    script = (
        "from protocol.features import TextEncoder;"
        "print(TextEncoder().encode(['hello world'], progress=False).tobytes().hex())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "building the int8 ONNX encoder once" in done.stderr
    built = sorted(p.name for p in (tmp_path / "lethe").iterdir())
    assert built == sorted([encoder_path().name, encoder_path().with_suffix(".lock").name])
    assert (tmp_path / "lethe" / encoder_path().name).read_bytes() == encoder_path().read_bytes()
    expected = TextEncoder().encode(["hello world"], progress=False).tobytes().hex()
    assert done.stdout.strip() == expected
