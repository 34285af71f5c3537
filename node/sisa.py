"""SISA on one node: S shards × R slices of linear softmax heads, deterministic training,
per-slice checkpoints and data commitments, and exact forgetting by partial retraining.

Scheme (Bourtoule et al., "Machine Unlearning", IEEE S&P 2021):

- **Sharding and slicing.** A record goes to shard ``s`` and slice ``k`` by
  ``keccak256("lethe.assign.v1" ‖ federation id ‖ record id)``; the assignment of one record
  never depends on the others, so removing a record moves nobody else.
- **Incremental training with the SISA epoch schedule.** Shard ``s``'s head after slice
  ``k`` is trained from its head after slice ``k−1`` on the union of slices ``0..k``
  for ``e' = round(2e / (R+1))`` epochs, where ``e`` is the epoch budget of unsliced
  training: summed over the R steps this sees ``e'·(R+1)/2 ≈ e`` passes over the shard,
  the same cost as training without slices. Forgetting a record of slice ``k`` replays
  steps ``k..R−1``; for a record drawn uniformly that costs on average
  ``(2R+1)/(3R)`` of the shard's training, and one shard is ``1/S`` of the node's.
- **The head.** A multinomial logistic regression ``logits = xW + b`` (``W``: D×C) trained
  by plain mini-batch SGD with L2 decay, mini-batches in an order drawn from a generator
  seeded by (federation, node, shard, slice, roster epoch), single-threaded, deterministic
  algorithms on: the same inputs give the same bytes. Cost is proportional to samples × epochs.
- **Canonical bytes.** A head is the flat float32 little-endian vector ``W`` (row-major,
  D×C) then ``b`` (C); its hash is keccak256 of those bytes. The node's model is the
  sample-weighted average of its shard heads: logits are linear in the parameters, so
  that is exactly SISA's averaged-logit ensemble, and the federation's weighted average of
  node vectors continues the same ensemble across nodes.
- **Commitments.** A slice's commitment is the Merkle root (``protocol.merkle``) of its
  records' leaves ``keccak256(domain ‖ salt ‖ keccak256(content) ‖ record_id)``, sorted;
  each record's salt comes from the node's own salt key (``node.store.salt_of``), so no
  one holding candidate ids and texts can recompute a leaf; a forget hands the record's
  salt to its data subject in the receipt. A checkpoint
  stores its *lineage* ``keccak256(lineage_{k−1} ‖ root_k ‖ n_k)`` rooted in the
  configuration digest, the shard and the roster epoch; a checkpoint whose lineage no
  longer matches the data is stale, and training resumes from the first stale slice of
  each shard. That one rule serves first training, ingest of new records, forgetting,
  crash recovery and a change of the federation's roster.
- **Roster epochs.** A node in a federation trains for the chain's registered roster
  (``protocol.epoch``): when it changes, every lineage changes, so every slice of every
  shard is retrained from zero under the new epoch's seeds and the node's model is new
  (docs/trust.md, rule 5). A checkpoint of an old epoch is never a starting point, and a
  forget under epoch e equals training without the record under e. A node never asked
  into a round has the empty epoch (the seeds and lineages of a standalone node).
- **Forgetting.** ``forget`` deletes the rows and journals the request in one transaction,
  truncates the write-ahead log (the text is gone from the node's files), then retrains:
  each affected shard restarts from the checkpoint before its earliest affected slice,
  so several records coalesce into one retrain. A crash after the deletion leaves the
  journal entry pending; reopening the node completes it with the same result.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from node.store import (
    Checkpoint,
    IngestError,
    NodeConfig,
    NodeError,
    Record,
    RecordLocation,
    RecordStore,
    StoredRecord,
)
from protocol.certificate import Certificate, hex32, record_leaf
from protocol.features import EMBEDDING_DIM, FeatureMap
from protocol.hashing import keccak256
from protocol.merkle import EMPTY_ROOT, merkle_proof, merkle_root
from protocol.model import model_bytes, model_hash, vector_from_bytes

if TYPE_CHECKING:
    import numpy.typing as npt

    from protocol.model import Vector

    Embedder = Callable[[Sequence[str]], npt.NDArray[np.float32]]

INGEST_CHUNK = 512
"""Records checked, embedded and written at a time by a streaming ingest (bounds memory)."""

SliceCallback = Callable[[int, int], None]
"""Called as ``(shard, slice)`` after each slice step is trained (progress, tests)."""

_ASSIGN_DOMAIN = b"lethe.assign.v1\x00"
_SEED_DOMAIN = b"lethe.seed.v1\x00"
_LINEAGE_DOMAIN = b"lethe.lineage.v1\x00"
_TAG_DOMAIN = b"lethe.record-tag.v1\x00"


# -- pure functions: layout, heads, evaluation --------------------------------------------


def assign(record_id: str, federation_id: str, shards: int, slices: int) -> tuple[int, int]:
    """(shard, slice) of a record: a keccak256 of the federation salt and the id alone."""
    digest = keccak256(_ASSIGN_DOMAIN + federation_id.encode() + b"\x00" + record_id.encode())
    value = int.from_bytes(digest[:8], "big")
    return value % shards, (value // shards) % slices


def epochs_per_slice(epochs: int, slices: int) -> int:
    """The SISA schedule: ``round(2e/(R+1))`` epochs per slice step (at least 1)."""
    return max(1, round(2 * epochs / (slices + 1)))


def seed_for(federation_id: str, node_id: str, shard: int, slice_: int, epoch: bytes = b"") -> int:
    """The mini-batch order seed of one slice step under a roster ``epoch`` (empty: none)."""
    digest = keccak256(
        _SEED_DOMAIN
        + federation_id.encode()
        + b"\x00"
        + node_id.encode()
        + b"\x00"
        + shard.to_bytes(4, "big")
        + slice_.to_bytes(4, "big")
        + epoch
    )
    return int.from_bytes(digest[:8], "big") >> 1


def zero_vector(dim: int, classes: int) -> Vector:
    """The head every shard starts from: all zeros."""
    return np.zeros(dim * classes + classes, dtype=np.float32)


def head_to_vector(weights: npt.NDArray[Any], bias: npt.NDArray[Any]) -> Vector:
    """Flatten ``W`` (D×C) and ``b`` (C) into the canonical vector."""
    w = np.asarray(weights, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    if w.ndim != 2 or b.shape != (w.shape[1],):
        raise NodeError(f"head shapes {w.shape} and {b.shape} do not fit W: D×C, b: C")
    return np.concatenate([w.reshape(-1), b])


def vector_to_head(vector: Vector, dim: int) -> tuple[Vector, Vector]:
    """Split a canonical vector for inputs of ``dim`` features into ``(W, b)``."""
    v = np.asarray(vector, dtype=np.float32)
    classes, rest = divmod(v.shape[0], dim + 1)
    if v.ndim != 1 or rest or classes < 1:
        raise NodeError(f"a vector of {v.shape} is not a head over {dim} features")
    return v[: dim * classes].reshape(dim, classes), v[dim * classes :]


def predict(vector: Vector, features: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Most likely class index of each row of ``features``."""
    w, b = vector_to_head(vector, features.shape[1])
    return np.asarray(np.argmax(features @ w + b, axis=1), dtype=np.int64)


def evaluate(vector: Vector, features: npt.NDArray[np.float32], labels: npt.NDArray[Any]) -> float:
    """Accuracy of a head (a shard's, a node's or the federation's) on labelled features."""
    if len(labels) == 0:
        raise NodeError("cannot evaluate on an empty set")
    return float(np.mean(predict(vector, features) == np.asarray(labels)))


def average(vectors: Sequence[Vector], weights: Sequence[int]) -> Vector:
    """Sample-weighted average of heads (float64 accumulation, fixed order): SISA's
    averaged-logit ensemble. All-zero weights give the zero vector."""
    if len(vectors) != len(weights) or not vectors:
        raise NodeError("average needs one weight per vector and at least one vector")
    total = sum(weights)
    acc = np.zeros(vectors[0].shape, dtype=np.float64)
    if total == 0:
        return acc.astype(np.float32)
    for vector, weight in zip(vectors, weights, strict=True):
        acc += np.asarray(vector, dtype=np.float64) * weight
    return (acc / total).astype(np.float32)


@contextmanager
def _deterministic_torch() -> Iterator[Any]:
    """torch with one thread and deterministic algorithms, restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield torch
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def balanced_weights(labels: npt.NDArray[np.int64], classes: int) -> npt.NDArray[np.float32]:
    """Per-class loss weights ``n / (C · n_c)`` of the rows a step trains on (0 for a class
    without rows): a pure function of those rows, so a retrain without a record recomputes
    exactly the weights a training from scratch without it uses."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes, dtype=np.float64)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights.astype(np.float32)


def train_head(
    vector: Vector,
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    l2: float,
    seed: int,
    class_weights: npt.NDArray[np.float32] | None = None,
) -> Vector:
    """Continue training a head by mini-batch SGD on softmax cross-entropy + L2.

    Each epoch visits the rows in a permutation drawn from ``seed``; the step size decays
    as ``lr/√(1+epoch)``. Gradients are written out (no autograd) so each mini-batch costs
    a fixed handful of single-threaded kernels: time is proportional to samples × epochs.
    ``class_weights`` (one per class) scale each row's loss by its label's weight.
    """
    n, dim = features.shape
    if n == 0:
        return np.array(vector, dtype=np.float32)
    with _deterministic_torch() as torch:
        w_np, b_np = vector_to_head(vector, dim)
        classes = b_np.shape[0]
        weights = torch.tensor(w_np)
        bias = torch.tensor(b_np)
        x_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        labels_t = torch.from_numpy(labels)
        y_all = torch.nn.functional.one_hot(labels_t, classes).to(torch.float32)
        row_weight = None
        if class_weights is not None:
            row_weight = torch.from_numpy(np.asarray(class_weights, dtype=np.float32))[labels_t]
        generator = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator)
            x_epoch, y_epoch = x_all[order], y_all[order]
            w_epoch = None if row_weight is None else row_weight[order].unsqueeze(1)
            step = learning_rate / (1.0 + epoch) ** 0.5
            for start in range(0, n, batch_size):
                xb = x_epoch[start : start + batch_size]
                residual = torch.softmax(torch.addmm(bias, xb, weights), dim=1)
                residual -= y_epoch[start : start + batch_size]
                if w_epoch is not None:
                    residual *= w_epoch[start : start + batch_size]
                scale = step / xb.shape[0]
                weights.mul_(1.0 - step * l2).sub_(xb.t().mm(residual), alpha=scale)
                bias.sub_(residual.sum(0), alpha=scale)
        return head_to_vector(weights.numpy(), bias.numpy())


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """``records`` in lists of at most ``size``, read lazily."""
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestReport:
    """What an ingest stored: records added, and how many texts were cut at the token limit."""

    added: int
    truncated: int


@dataclass(frozen=True)
class NodeModel:
    """A node's model: the canonical vector, the samples behind it, and its hash."""

    vector: Vector
    n_samples: int
    hash: bytes
    through_slice: int

    @property
    def hash_hex(self) -> str:
        """``0x``-prefixed hex of :attr:`hash`."""
        return hex32(self.hash)


@dataclass(frozen=True)
class TrainReport:
    """What a call to :meth:`SisaNode.train` retrained."""

    retrained_from: dict[int, int]
    slices_trained: int
    sample_epochs: int
    seconds: float


@dataclass(frozen=True)
class ForgottenRecord:
    """One request of a forget: where the record was and the proof it was there."""

    request_id: str
    record_commitment: str
    shard: int
    slice: int
    leaf: str
    leaf_index: int
    leaf_count: int
    proof: tuple[str, ...]
    old_slice_root: str
    new_slice_root: str
    record_salt: str = ""
    """The record's leaf salt (hex), for the data subject's receipt."""


@dataclass(frozen=True)
class ShardRetrain:
    """One shard's retrain in a forget: from which checkpoint, which slices, how many samples.

    ``samples_retrained`` counts each retrained step's training set once
    (Σ over steps k of |slices 0..k|); multiply by the epochs per step for sample visits.
    """

    shard: int
    from_checkpoint_hash: str
    slices_retrained: tuple[int, ...]
    samples_retrained: int


@dataclass(frozen=True)
class ForgetResult:
    """Everything the certificates of one (possibly coalesced) forget need (docs/certificate.md)."""

    batch: int
    federation_id: str
    slices_total: int
    records: tuple[ForgottenRecord, ...]
    retrains: tuple[ShardRetrain, ...]
    model_hash_before: str
    model_hash_after: str
    n_samples_after: int
    wall_time_ms: int

    def record(self, request_id: str) -> ForgottenRecord:
        """The entry of one request."""
        for entry in self.records:
            if entry.request_id == request_id:
                return entry
        raise NodeError(f"request {request_id!r} is not part of forget batch {self.batch}")

    def certificate(self, request_id: str, *, timestamp: int | None = None) -> Certificate:
        """The unsigned certificate of one request; sign it with ``.signed(private_key)``."""
        entry = self.record(request_id)
        retrain = next(r for r in self.retrains if r.shard == entry.shard)
        return Certificate(
            request_id=entry.request_id,
            federation_id=self.federation_id,
            shard=entry.shard,
            slice=entry.slice,
            slices_total=self.slices_total,
            record_leaf=entry.leaf,
            leaf_index=entry.leaf_index,
            leaf_count=entry.leaf_count,
            merkle_proof=entry.proof,
            old_slice_root=entry.old_slice_root,
            new_slice_root=entry.new_slice_root,
            from_checkpoint_hash=retrain.from_checkpoint_hash,
            model_hash_before=self.model_hash_before,
            model_hash_after=self.model_hash_after,
            slices_retrained=retrain.slices_retrained,
            samples_retrained=retrain.samples_retrained,
            wall_time_ms=self.wall_time_ms,
            timestamp=int(time.time()) if timestamp is None else timestamp,
        )

    @classmethod
    def from_journal(cls, batch: int, result: dict[str, Any]) -> ForgetResult:
        """Rebuild a result from its journal entry."""
        return cls(
            batch=batch,
            federation_id=result["federation_id"],
            slices_total=result["slices_total"],
            records=tuple(
                ForgottenRecord(**{**r, "proof": tuple(r["proof"])}) for r in result["records"]
            ),
            retrains=tuple(
                ShardRetrain(**{**r, "slices_retrained": tuple(r["slices_retrained"])})
                for r in result["retrains"]
            ),
            model_hash_before=result["model_hash_before"],
            model_hash_after=result["model_hash_after"],
            n_samples_after=result["n_samples_after"],
            wall_time_ms=result["wall_time_ms"],
        )


# -- the node -----------------------------------------------------------------------------


class SisaNode:
    """One node's SISA state over its :class:`RecordStore`."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.config: NodeConfig = store.config
        self.feature_map = FeatureMap(self.config.feature_map, self.config.federation_id)

    @classmethod
    def create(cls, path: Path | str, config: NodeConfig) -> SisaNode:
        """Open the node at ``path``, creating its store with ``config`` if needed."""
        return cls(RecordStore.create(path, config))

    @classmethod
    def open(cls, path: Path | str, *, recover: bool = True) -> SisaNode:
        """Open an existing node; by default first complete any forget a crash interrupted."""
        node = cls(RecordStore.open(path))
        if recover:
            node.recover()
        return node

    def close(self) -> None:
        """Close the store (truncating its write-ahead log)."""
        self.store.close()

    def __enter__(self) -> SisaNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dim(self) -> int:
        """Number of input features of the heads."""
        return self.feature_map.dim

    @property
    def classes(self) -> int:
        """Number of classes of the heads."""
        return len(self.config.labels)

    def features(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The heads' input features for stored embeddings."""
        return self.feature_map.apply(embeddings)

    # -- ingest ---------------------------------------------------------------------------

    def _check_new(self, records: Sequence[Record], first: int = 1) -> tuple[list[int], list[str]]:
        """Class indices of the records, and a problem for each bad label or id already used."""
        problems = []
        labels = []
        seen: set[str] = set()
        for number, rec in enumerate(records, start=first):
            if rec.label not in self.config.labels:
                problems.append(
                    f"record {number} ({rec.id!r}): label {rec.label!r} is not one of "
                    f"{', '.join(self.config.labels)}"
                )
            else:
                labels.append(self.config.labels.index(rec.label))
            if rec.id in seen:
                problems.append(f"record {number}: duplicate id {rec.id!r}")
            seen.add(rec.id)
        stored = self.store.existing_ids(seen)
        problems += [f"id {rid!r} is already stored on this node" for rid in sorted(stored)]
        return labels, problems

    @staticmethod
    def _embed(records: Sequence[Record], embed: Embedder | None) -> tuple[Vector, int]:
        """Embeddings of the records' texts, and how many texts were cut at the token limit."""
        texts = [r.text for r in records]
        truncated = 0
        if embed is None:
            from protocol.features import default_encoder

            rows, truncated = default_encoder().encode_chunk(texts)
        else:
            rows = embed(texts)
        rows = np.asarray(rows, dtype=np.float32)
        if rows.shape != (len(records), EMBEDDING_DIM) or not np.isfinite(rows).all():
            raise NodeError(
                f"embedder returned {rows.shape}, expected ({len(records)}, {EMBEDDING_DIM}) finite"
            )
        return rows, truncated

    def ingest(
        self, records: Iterable[Record], *, embed: Embedder | None = None, progress: bool = True
    ) -> int:
        """Embed and store training records, all or nothing; return how many were added."""
        total = len(records) if isinstance(records, Sized) else None
        return self.ingest_stream(records, embed=embed, progress=progress, total=total).added

    def ingest_stream(
        self,
        records: Iterable[Record],
        *,
        embed: Embedder | None = None,
        progress: bool = True,
        total: int | None = None,
    ) -> IngestReport:
        """Embed and store training records chunk by chunk in one transaction, all or nothing.

        Memory is bounded by :data:`INGEST_CHUNK` records whatever the input's size: each
        chunk is checked, embedded and written inside one open SQLite transaction (SQLite
        spills it to its write-ahead log), which commits only after the last chunk and
        rolls back on any problem or error. After a problem the remaining chunks are still
        checked (so every problem is reported) but no longer embedded. ``total`` (the
        number of records, if known) gives the progress bar its estimate.

        New records land in the slices their ids hash to; the next :meth:`train`
        retrains each shard from the earliest slice that changed.
        """
        chunks = _chunks(records, INGEST_CHUNK)
        first = next(chunks, None)
        if first is None:
            return IngestReport(0, 0)
        fingerprint = None
        if embed is None:
            from protocol.features import default_encoder

            fingerprint = default_encoder().load()
        from tqdm import tqdm

        cfg = self.config
        added = truncated = 0
        problems: list[str] = []
        touched: set[tuple[int, int]] = set()
        with (
            tqdm(
                total=total, unit="text", desc="embedding", disable=not progress, mininterval=1.0
            ) as bar,
            self.store.transaction(),
        ):
            if fingerprint:
                self.store.pin_encoder(fingerprint)
            for chunk in itertools.chain([first], chunks):
                labels, errors = self._check_new(chunk, first=added + 1)
                problems += errors
                if problems:
                    added += len(chunk)
                    continue
                rows, cut = self._embed(chunk, embed)
                truncated += cut
                stored = []
                for rec, label, row in zip(chunk, labels, rows, strict=True):
                    shard, slice_ = assign(rec.id, cfg.federation_id, cfg.shards, cfg.slices)
                    stored.append(
                        StoredRecord(
                            id=rec.id,
                            text=rec.text,
                            label=label,
                            embedding=row.astype("<f4").tobytes(),
                            shard=shard,
                            slice=slice_,
                            leaf=record_leaf(
                                rec.id, rec.text, rec.label, self.store.record_salt(rec.id)
                            ),
                        )
                    )
                    touched.add((shard, slice_))
                self.store.insert_records(stored)
                added += len(chunk)
                bar.update(len(chunk))
            if problems:
                raise IngestError(str(self.store.path), problems)
            self._refresh_slices(touched)
        return IngestReport(added, truncated)

    def ingest_test(
        self, records: Sequence[Record], *, embed: Embedder | None = None, progress: bool = True
    ) -> int:
        """Store held-out evaluation records (never trained on); return how many."""
        if not records:
            return 0
        labels, problems = self._check_new(records)
        if problems:
            raise IngestError(str(self.store.path), problems)
        fingerprint = None
        if embed is None:
            from protocol.features import default_encoder

            fingerprint = default_encoder().load()
        rows = np.concatenate(
            [
                self._embed(records[start : start + INGEST_CHUNK], embed)[0]
                for start in range(0, len(records), INGEST_CHUNK)
            ]
        )
        with self.store.transaction():
            if fingerprint:
                self.store.pin_encoder(fingerprint)
            self.store.insert_test_records([r.id for r in records], labels, rows)
        return len(records)

    def _refresh_slices(
        self, keys: set[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[int, bytes]]:
        """Recompute count and root of the given slices (inside a transaction)."""
        updated = {}
        for shard, slice_ in sorted(keys):
            leaves = self.store.slice_leaves(shard, slice_)
            updated[(shard, slice_)] = (len(leaves), merkle_root(leaves))
        self.store.set_slices(updated)
        return updated

    # -- training -------------------------------------------------------------------------

    def _lineages(
        self, slices: dict[tuple[int, int], tuple[int, bytes]], epoch: bytes
    ) -> dict[tuple[int, int], bytes]:
        cfg = self.config
        root = cfg.digest()
        lineages = {}
        for shard in range(cfg.shards):
            lineage = keccak256(_LINEAGE_DOMAIN + root + shard.to_bytes(4, "big") + epoch)
            for k in range(cfg.slices):
                n, slice_root = slices.get((shard, k), (0, EMPTY_ROOT))
                lineage = keccak256(lineage + slice_root + n.to_bytes(8, "big"))
                lineages[(shard, k)] = lineage
        return lineages

    def _stale(
        self, slices: dict[tuple[int, int], tuple[int, bytes]], epoch: bytes
    ) -> tuple[dict[int, int], dict[tuple[int, int], bytes]]:
        """First stale slice of each shard whose checkpoints do not match its data and epoch."""
        lineages = self._lineages(slices, epoch)
        stored = self.store.checkpoint_lineages()
        stale: dict[int, int] = {}
        for shard in range(self.config.shards):
            for k in range(self.config.slices):
                if stored.get((shard, k)) != lineages[(shard, k)]:
                    stale[shard] = k
                    break
        return stale, lineages

    def is_trained(self) -> bool:
        """Whether every checkpoint matches the data and no forget is pending."""
        stale, _ = self._stale(self.store.slices(), self.store.roster_epoch())
        return not stale and not self.store.pending_forget_batches()

    @property
    def epoch(self) -> bytes:
        """The roster epoch this node trains for (empty: never asked into a round)."""
        return self.store.roster_epoch()

    def enter_epoch(self, epoch: bytes) -> bool:
        """Train for ``epoch`` from now on; whether it changed. Nothing is retrained here:
        every checkpoint is stale from now on, and the next :meth:`train` retrains each
        shard from its first slice (a forget trains first, so it never starts from a
        checkpoint of the old epoch)."""
        if epoch == self.store.roster_epoch():
            return False
        with self.store.transaction():
            self.store.set_roster_epoch(epoch)
        return True

    def _start_vector(self, shard: int, slice_: int) -> Vector:
        if slice_ == 0:
            return zero_vector(self.dim, self.classes)
        previous = self.store.checkpoint(shard, slice_ - 1)
        if previous is None:
            raise NodeError(f"checkpoint of shard {shard} slice {slice_ - 1} is missing")
        return vector_from_bytes(previous.params)

    def _train_shard(
        self,
        shard: int,
        from_slice: int,
        lineages: dict[tuple[int, int], bytes],
        epoch: bytes,
        on_slice: SliceCallback | None,
    ) -> tuple[list[Checkpoint], int]:
        cfg = self.config
        data = self.store.load_shard(shard)
        x = self.features(data.embeddings) if len(data.labels) else np.zeros((0, self.dim), "f4")
        ends = np.searchsorted(data.slices, np.arange(cfg.slices), side="right")
        epochs = epochs_per_slice(cfg.epochs, cfg.slices)
        vector = self._start_vector(shard, from_slice)
        checkpoints = []
        sample_epochs = 0
        for k in range(from_slice, cfg.slices):
            n = int(ends[k])
            labels = data.labels[:n]
            vector = train_head(
                vector,
                x[:n],
                labels,
                epochs=epochs,
                batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate,
                l2=cfg.l2,
                seed=seed_for(cfg.federation_id, cfg.node_id, shard, k, epoch),
                class_weights=(
                    balanced_weights(labels, self.classes)
                    if cfg.class_weight == "balanced"
                    else None
                ),
            )
            sample_epochs += n * epochs
            checkpoints.append(
                Checkpoint(
                    shard, k, lineages[(shard, k)], model_hash(vector), n, model_bytes(vector)
                )
            )
            if on_slice is not None:
                on_slice(shard, k)
        return checkpoints, sample_epochs

    def train(
        self, *, from_scratch: bool = False, on_slice: SliceCallback | None = None
    ) -> TrainReport:
        """Bring every shard's checkpoints up to date with its data, and complete pending forgets.

        Only stale slices are trained: from the first slice of each shard whose data changed
        since its checkpoint (``from_scratch``: every slice of every shard, which gives the
        same bytes). New checkpoints and the completion of pending forgets commit in one
        transaction, so a crash leaves either the old state (retried on reopen) or the new one.
        """
        started = time.perf_counter()
        while True:
            slices = self.store.slices()
            epoch = self.store.roster_epoch()
            stale, lineages = self._stale(slices, epoch)
            if from_scratch:
                stale = dict.fromkeys(range(self.config.shards), 0)
            checkpoints: list[Checkpoint] = []
            sample_epochs = 0
            for shard, from_slice in sorted(stale.items()):
                new, visits = self._train_shard(shard, from_slice, lineages, epoch, on_slice)
                checkpoints += new
                sample_epochs += visits
            with self.store.transaction():
                if (self.store.slices(), self.store.roster_epoch()) != (slices, epoch):
                    continue  # the data or epoch changed while we trained: train again
                self.store.put_checkpoints(checkpoints)
                pending = self.store.pending_forget_batches()
                if pending:
                    after = self._model_unchecked(self.config.slices - 1)
                    elapsed_ms = round((time.perf_counter() - started) * 1000)
                    for batch, plan in pending:
                        result = {
                            **plan,
                            "batch": batch,
                            "model_hash_after": after.hash_hex,
                            "n_samples_after": after.n_samples,
                            "wall_time_ms": plan["delete_ms"] + elapsed_ms,
                        }
                        del result["delete_ms"]
                        self.store.complete_forget_batch(batch, result)
            return TrainReport(
                retrained_from=stale,
                slices_trained=len(checkpoints),
                sample_epochs=sample_epochs,
                seconds=time.perf_counter() - started,
            )

    def _model_unchecked(self, through_slice: int) -> NodeModel:
        vectors, weights = [], []
        for shard in range(self.config.shards):
            checkpoint = self.store.checkpoint(shard, through_slice)
            if checkpoint is None:
                raise NodeError(f"shard {shard} has no checkpoint for slice {through_slice}")
            vectors.append(vector_from_bytes(checkpoint.params))
            weights.append(checkpoint.n_samples)
        vector = average(vectors, weights)
        return NodeModel(vector, sum(weights), model_hash(vector), through_slice)

    def model(self, through_slice: int | None = None) -> NodeModel:
        """The node's model after ``through_slice`` (default: the last slice).

        Raises NodeError if the checkpoints are behind the data or a forget is pending:
        call :meth:`train` first, so no stale model is ever committed to.
        """
        k = self.config.slices - 1 if through_slice is None else through_slice
        if not 0 <= k < self.config.slices:
            raise NodeError(f"slice {k} is not within 0..{self.config.slices - 1}")
        if not self.is_trained():
            raise NodeError("the node's checkpoints are behind its data; run train first")
        return self._model_unchecked(k)

    def slice_roots(self) -> list[bytes]:
        """The Merkle root of every slice's record leaves, shard-major (``s·slices + k``);
        what the node commits to in public with each round's update."""
        stored = self.store.slices()
        cfg = self.config
        return [
            stored.get((shard, k), (0, EMPTY_ROOT))[1]
            for shard in range(cfg.shards)
            for k in range(cfg.slices)
        ]

    def test_accuracy(self, vector: Vector | None = None) -> float:
        """Accuracy of ``vector`` (default: this node's model) on the stored test split."""
        embeddings, labels = self.store.test_set()
        if len(labels) == 0:
            raise NodeError("this node holds no test records (ingest --default stores them)")
        chosen = self.model().vector if vector is None else vector
        return evaluate(chosen, self.features(embeddings), labels)

    # -- forgetting -----------------------------------------------------------------------

    def forget(
        self,
        record_ids: Sequence[str],
        *,
        request_ids: Sequence[str] | None = None,
        on_slice: SliceCallback | None = None,
    ) -> ForgetResult:
        """Delete records for real and retrain what they influenced; one coalesced retrain.

        ``request_ids`` (default: each record's :meth:`record_tag`) name the requests in
        the journal and the certificates. Repeating a completed request returns its stored
        result. An unknown record id raises NodeError and changes nothing.
        """
        ids = list(record_ids)
        if not ids:
            raise NodeError("no record ids given")
        if len(set(ids)) != len(ids):
            raise NodeError("record ids must be distinct")
        requests = (
            list(request_ids) if request_ids is not None else [self.record_tag(rid) for rid in ids]
        )
        if len(requests) != len(ids) or len(set(requests)) != len(requests):
            raise NodeError("give one distinct request id per record id")
        if any(not r or len(r) > 200 for r in requests):
            raise NodeError("request ids must have 1..200 characters")
        repeated = self._repeated(ids, requests)
        if repeated is not None:
            return repeated
        self._locate_all(ids)
        self.train()
        before = self.model()
        with _deterministic_torch():
            pass  # torch's import and first deterministic switch (~1-5 s, once per process)
            # are paid before the clock starts: the certificate's wall time is the forget's
        started = time.perf_counter()
        with self.store.transaction():
            located = self._locate_all(ids)
            plan, new_slices = self._plan_forget(ids, requests, located, before)
            self.store.delete_records(ids)
            self.store.set_slices(new_slices)
            plan["delete_ms"] = round((time.perf_counter() - started) * 1000)
            self.store.add_forget_batch(
                plan, [(r["request_id"], r["record_commitment"]) for r in plan["records"]]
            )
        if not self.store.erase_wal():
            raise NodeError(
                "records deleted, but another open connection keeps the write-ahead log from "
                "being truncated; the forget completes when the node is reopened"
            )
        self.train(on_slice=on_slice)
        result = self.forget_result(requests[0])
        if result is None:
            raise NodeError("forget journal entry vanished")
        return result

    def _locate_all(self, ids: Sequence[str]) -> dict[str, RecordLocation]:
        located = self.store.locate(ids)
        unknown = [rid for rid in ids if rid not in located]
        if unknown:
            raise NodeError(
                f"unknown record id(s) on this node: {', '.join(map(repr, unknown[:10]))}"
                "; nothing was changed"
            )
        return located

    def _repeated(self, ids: Sequence[str], requests: Sequence[str]) -> ForgetResult | None:
        """The stored result if every request was already journaled for these records."""
        known = [self.store.forget_request(r) for r in requests]
        if all(k is None for k in known):
            return None
        self.recover()
        for rid, req, k in zip(ids, requests, known, strict=True):
            if k is None or k[0] != self.record_tag(rid):
                raise NodeError(
                    f"request {req!r} was already used for another record, or was sent "
                    "together with new requests; send new requests separately"
                )
        results = {self.forget_result(r) for r in requests}
        if len(results) != 1:
            raise NodeError("these requests were completed in different forget batches")
        return results.pop()

    def _plan_forget(
        self,
        ids: Sequence[str],
        requests: Sequence[str],
        located: dict[str, RecordLocation],
        before: NodeModel,
    ) -> tuple[dict[str, Any], dict[tuple[int, int], tuple[int, bytes]]]:
        """Proofs against the old roots, the new roots and the retrain plan (in the txn)."""
        cfg = self.config
        doomed = {located[rid].leaf for rid in ids}
        slices = self.store.slices()
        leaves_of: dict[tuple[int, int], list[bytes]] = {}
        changed: dict[tuple[int, int], tuple[int, bytes]] = {}
        first_slice: dict[int, int] = {}
        records = []
        for rid, req in zip(ids, requests, strict=True):
            loc = located[rid]
            key = (loc.shard, loc.slice)
            first_slice[loc.shard] = min(loc.slice, first_slice.get(loc.shard, loc.slice))
            if key not in leaves_of:
                leaves_of[key] = self.store.slice_leaves(*key)
                remaining = [leaf for leaf in leaves_of[key] if leaf not in doomed]
                changed[key] = (len(remaining), merkle_root(remaining))
            leaves = leaves_of[key]
            index = bisect.bisect_left(leaves, loc.leaf)
            records.append(
                {
                    "request_id": req,
                    "record_commitment": self.record_tag(rid),
                    "record_salt": hex32(self.store.record_salt(rid)),
                    "shard": loc.shard,
                    "slice": loc.slice,
                    "leaf": hex32(loc.leaf),
                    "leaf_index": index,
                    "leaf_count": len(leaves),
                    "proof": [hex32(h) for h in merkle_proof(leaves, index)],
                    "old_slice_root": hex32(slices[key][1]),
                    "new_slice_root": hex32(changed[key][1]),
                }
            )
        slices.update(changed)
        retrains = []
        for shard, first in sorted(first_slice.items()):
            counts = [slices.get((shard, k), (0, EMPTY_ROOT))[0] for k in range(cfg.slices)]
            cumulative = np.cumsum(counts)
            retrains.append(
                {
                    "shard": shard,
                    "from_checkpoint_hash": hex32(model_hash(self._start_vector(shard, first))),
                    "slices_retrained": list(range(first, cfg.slices)),
                    "samples_retrained": int(cumulative[first:].sum()),
                }
            )
        plan = {
            "federation_id": cfg.federation_id,
            "slices_total": cfg.slices,
            "records": records,
            "retrains": retrains,
            "model_hash_before": before.hash_hex,
        }
        return plan, changed

    def record_tag(self, record_id: str) -> str:
        """``0x`` + keccak256(domain ‖ leaf salt ‖ record id): how the node's forget journal
        names a record (and the default request id), keyed like its leaf."""
        salt = self.store.record_salt(record_id)
        return hex32(keccak256(_TAG_DOMAIN + salt + record_id.encode()))

    def pending_forgets(self) -> int:
        """How many journaled forgets still wait for their retrain."""
        return len(self.store.pending_forget_batches())

    def recover(self, *, on_slice: SliceCallback | None = None) -> list[ForgetResult]:
        """Complete every forget a crash interrupted (its deletion is already committed)."""
        pending = [batch for batch, _ in self.store.pending_forget_batches()]
        if not pending:
            return []
        self.train(on_slice=on_slice)
        results = []
        for entry in self.store.forget_history():
            if entry["batch"] in pending:
                results.append(ForgetResult.from_journal(entry["batch"], entry))
        return results

    def forget_result(self, request_id: str) -> ForgetResult | None:
        """The completed result of a request, if it was completed."""
        found = self.store.forget_request(request_id)
        if found is None or found[2] is None:
            return None
        result = found[2]
        return ForgetResult.from_journal(result["batch"], result)

    def info(self) -> dict[str, Any]:
        """Configuration, counts, training state and the node model's hash."""
        counts = self.store.counts()
        trained = self.is_trained()
        info: dict[str, Any] = {
            "db": str(self.store.path),
            "config": self.config.to_json(),
            "records": counts["records"],
            "test_records": counts["test_records"],
            "encoder": self.store.encoder(),
            "trained": trained,
            "pending_forgets": self.pending_forgets(),
            "forgets_done": len(self.store.forget_history()),
        }
        if trained and counts["records"]:
            model = self._model_unchecked(self.config.slices - 1)
            info["model_hash"] = model.hash_hex
            info["n_samples"] = model.n_samples
        return info
