"""A SISA node's training replayed in memory, bit for bit, for attacks needing thousands of models.

``bench.privacy`` needs ≥ 200 independent forgets per data size and ≥ 128 shadow
federations trained exactly like the target (slicing, epochs, data size). Real
:class:`node.sisa.SisaNode` stores can do that only sequentially (each forget changes the
next pair's "before" model) and through SQLite. This module runs the same pure functions
(``assign``, ``epochs_per_slice``, ``seed_for``, ``train_head``, ``average``) on the same
row order as ``SisaNode`` (each shard's rows ordered by slice, then id), so a replayed
model has the same bytes as the real node's: :func:`check_against_node` asserts it on
every run, and a forget restarts from the cached checkpoint before the record's slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from node.sisa import (
    SisaNode,
    assign,
    average,
    balanced_weights,
    epochs_per_slice,
    seed_for,
    train_head,
    zero_vector,
)
from node.store import NodeConfig, Record

Vector = npt.NDArray[np.float32]


@dataclass
class ReplayNode:
    """One node's records and its per-shard, per-slice checkpoints."""

    config: NodeConfig
    epoch: bytes
    ids: list[str]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    location: dict[str, tuple[int, int]] = field(default_factory=dict)
    checkpoints: dict[tuple[int, int], Vector] = field(default_factory=dict)

    @classmethod
    def train(
        cls,
        config: NodeConfig,
        ids: Sequence[str],
        x: npt.NDArray[Any],
        y: npt.NDArray[np.int64],
        epoch: bytes = b"",
    ) -> ReplayNode:
        node = cls(config, epoch, list(ids), np.asarray(x, dtype=np.float32), np.asarray(y))
        node.location = {
            rid: assign(rid, config.federation_id, config.shards, config.slices) for rid in ids
        }
        for shard in range(config.shards):
            node.checkpoints.update(node._train_shard(shard, 0, frozenset()))
        return node

    def _order(self, shard: int, without: frozenset[str]) -> tuple[list[int], list[int]]:
        """Row indices of a shard ordered by (slice, id), and each row's slice."""
        rows = [
            (self.location[rid][1], rid, i)
            for i, rid in enumerate(self.ids)
            if self.location[rid][0] == shard and rid not in without
        ]
        rows.sort()
        return [i for _, _, i in rows], [k for k, _, _ in rows]

    def _train_shard(
        self, shard: int, from_slice: int, without: frozenset[str]
    ) -> dict[tuple[int, int], Vector]:
        cfg = self.config
        order, slices = self._order(shard, without)
        x, y = self.x[order], self.y[order]
        ends = np.searchsorted(np.asarray(slices, dtype=np.int64), np.arange(cfg.slices), "right")
        epochs = epochs_per_slice(cfg.epochs, cfg.slices)
        vector = (
            zero_vector(x.shape[1] if len(x) else self.x.shape[1], len(cfg.labels))
            if from_slice == 0
            else self.checkpoints[(shard, from_slice - 1)]
        )
        out = {}
        for k in range(from_slice, cfg.slices):
            n = int(ends[k])
            vector = train_head(
                vector,
                x[:n],
                y[:n],
                epochs=epochs,
                batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate,
                l2=cfg.l2,
                seed=seed_for(cfg.federation_id, cfg.node_id, shard, k, self.epoch),
                class_weights=(
                    balanced_weights(y[:n], len(cfg.labels))
                    if cfg.class_weight == "balanced"
                    else None
                ),
            )
            out[(shard, k)] = vector
        return out

    def model(self) -> tuple[Vector, int]:
        """The node's model (sample-weighted average of its shards' last heads) and samples."""
        last = self.config.slices - 1
        shards = range(self.config.shards)
        weights = [self._shard_size(s) for s in shards]
        return average([self.checkpoints[(s, last)] for s in shards], weights), sum(weights)

    def _shard_size(self, shard: int, without: frozenset[str] = frozenset()) -> int:
        return sum(1 for rid in self.ids if self.location[rid][0] == shard and rid not in without)

    def without(self, gone: Sequence[str]) -> tuple[Vector, int]:
        """The node's model after forgetting ``gone`` (this node is left unchanged): each
        affected shard replays from the checkpoint before its earliest affected slice."""
        drop = frozenset(gone)
        last = self.config.slices - 1
        vectors, weights = [], []
        for shard in range(self.config.shards):
            hit = [self.location[r][1] for r in drop if self.location[r][0] == shard]
            if hit:
                vectors.append(self._train_shard(shard, min(hit), drop)[(shard, last)])
            else:
                vectors.append(self.checkpoints[(shard, last)])
            weights.append(self._shard_size(shard, drop))
        return average(vectors, weights), sum(weights)


def check_against_node(
    work: Path,
    config: NodeConfig,
    records: Sequence[Record],
    embed: Any,
    replay: ReplayNode,
    forget: str,
) -> None:
    """Raise if the replay differs from a real ``SisaNode`` by one bit, before or after a forget."""
    with SisaNode.create(work / f"check-{config.node_id}.db", config) as node:
        node.ingest(records, embed=embed, progress=False)
        if replay.epoch:
            node.enter_epoch(replay.epoch)
        node.train()
        before = node.model()
        node.forget([forget])
        after = node.model()
    replay_before, n_before = replay.model()
    replay_after, n_after = replay.without([forget])
    if (
        before.vector.tobytes() != replay_before.tobytes()
        or after.vector.tobytes() != replay_after.tobytes()
        or (before.n_samples, after.n_samples) != (n_before, n_after)
    ):
        raise AssertionError("the SISA replay does not reproduce the node's model bytes")
