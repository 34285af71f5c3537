"""Small, fast stand-ins for a node's data: labelled records and a deterministic fake encoder.

The fake encoder maps a text to a unit vector seeded by the text's hash, nudged along one
axis per sentiment word, so a linear head can learn it in a few epochs and every text's
embedding is independent of its batch (like the real encoder's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from node.sisa import SisaNode
from node.store import NodeConfig, Record
from protocol.hashing import keccak256

WORDS = {"negative": "awful", "neutral": "okay", "positive": "great"}


def fake_embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    rows = np.empty((len(texts), 384), dtype=np.float32)
    for i, text in enumerate(texts):
        rng = np.random.default_rng(int.from_bytes(keccak256(text.encode())[:8], "big"))
        v = rng.standard_normal(384)
        for axis, word in enumerate(WORDS.values()):
            if word in text:
                v[axis] += 6.0
        rows[i] = v / np.linalg.norm(v)
    return rows


def make_records(n: int, prefix: str = "rec") -> list[Record]:
    labels = list(WORDS)
    return [
        Record(f"{prefix}-{i:04d}", f"{WORDS[labels[i % 3]]} thing number {i:04d}", labels[i % 3])
        for i in range(n)
    ]


def small_config(**changes: object) -> NodeConfig:
    fields: dict[str, object] = {
        "federation_id": "fed-test",
        "node_id": "node-1",
        "shards": 2,
        "slices": 4,
        "epochs": 8,
        "batch_size": 16,
        "learning_rate": 2.0,
    }
    fields.update(changes)
    return NodeConfig(**fields)  # type: ignore[arg-type]


def build_node(path: Path, records: Sequence[Record], config: NodeConfig | None = None) -> SisaNode:
    """A node at ``path`` holding ``records``, trained."""
    node = SisaNode.create(path, config or small_config())
    node.ingest(records, embed=fake_embed)
    node.train()
    return node


def store_files(db: Path) -> bytes:
    """Every byte of the node's SQLite file and its companions (-wal, -shm, -journal)."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))
