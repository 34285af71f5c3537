"""Forgetting driven by what people write: feedback scored by the federation's own model.

A text's sentiment is decided by the **current published global model**: the model of
the latest finalized round, fetched from the content store by its CID (the store checks
the bytes against the CID, and this module checks them against the round's model hash),
applied to the text's all-MiniLM-L6-v2 embedding (``protocol.features``, the same
encoder every node embeds its records with). No other sentiment model is involved. The
published model carries the noise the senders add inside the sum (``protocol.noise``):
that is the model anyone can recompute and check, so it is the one that decides.

The head's logits are divided by the federation's temperature ``T``
(``coordinator.calibration``, fitted on the test split by ``make bench-sentiment``), so a
probability means what it says. A :class:`FeedbackPolicy` then decides only when the
model is confident: with ``p`` the probability of the labels that call for forgetting
(default: negative or neutral), it forgets when ``p ≥ τ``, keeps when ``1 − p ≥ τ``, and
otherwise marks the row **review**: a person decides with one click (``POST
/feedback/<seq>/decision``), which appends a second entry naming the decider and, for a
forget, opens the request exactly as the model's own decision would. A forget decision
opens an ordinary forget request for the record, which then follows the usual path
(dispatched → certified → completed). Every decision is kept, append-only, in the
``feedback`` table of the coordinator's database, which :class:`FeedbackLog` turns into
the dashboard's live log (server-sent events), with each request's state and whether its
certificate verifies.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from coordinator.calibration import softmax
from coordinator.queue import CoordinatorDB, ForgetRequest
from protocol.errors import LetheError
from protocol.federation import DEFAULT_LABELS
from protocol.hashing import keccak256
from protocol.model import vector_from_bytes

if TYPE_CHECKING:
    import numpy.typing as npt

    from protocol.store import ContentStore

DEFAULT_FORGET_ON = ("negative", "neutral")
DEFAULT_TAU = 0.8
"""The confidence the model needs to decide alone (``feedback_tau``): the largest τ of
``make bench-sentiment``'s sweep at which the full federation sends at most 35 % of the
*test split* to review (chosen there, never on the out-of-domain set)."""
DEFAULT_TEMPERATURE = 1.0
"""Logit temperature of the scorer (``feedback_temperature``); 1: the head as trained."""
MODEL = "model"
"""``decided_by`` of a decision the global model made alone."""
MAX_DECIDER_LENGTH = 100

_COLUMNS = (
    "seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL, label TEXT NOT NULL, "
    "probabilities TEXT NOT NULL, "
    "decision TEXT NOT NULL CHECK (decision IN ('forget', 'keep', 'review')), "
    "request_id TEXT, model_round INTEGER NOT NULL, model_cid TEXT NOT NULL, "
    "created_at REAL NOT NULL, decided_by TEXT NOT NULL DEFAULT 'model', "
    "resolves INTEGER UNIQUE REFERENCES feedback(seq)"
)
_OLD_COLUMNS = (
    "seq, record_id, label, probabilities, decision, request_id, model_round, model_cid, created_at"
)


class FeedbackError(LetheError):
    """A text cannot be scored: no finalized global model yet, or one that does not fit."""


@dataclass(frozen=True)
class Sentiment:
    """A text's label and class probabilities under one published global model."""

    label: str
    probabilities: dict[str, float]
    model_round: int
    model_cid: str


@dataclass(frozen=True)
class FeedbackPolicy:
    """Which labels call for forgetting the record, and how sure the model must be.

    ``tau`` (τ, within 0.5 … 1): the model forgets when P(forget_on) ≥ τ, keeps when
    P(the other labels) ≥ τ, and leaves the rest to a person (``"review"``). τ = 0.5
    never asks; τ = 1 always does.
    """

    forget_on: tuple[str, ...] = DEFAULT_FORGET_ON
    tau: float = DEFAULT_TAU

    def __post_init__(self) -> None:
        if not 0.5 <= self.tau <= 1.0:
            raise ValueError(f"feedback tau must be within 0.5 … 1, got {self.tau}")

    def forget_probability(self, probabilities: dict[str, float]) -> float:
        """P(the true label is one that calls for forgetting)."""
        return sum(p for label, p in probabilities.items() if label in self.forget_on)

    def decide(self, sentiment: Sentiment) -> str:
        """``"forget"``, ``"keep"`` or ``"review"``."""
        p = self.forget_probability(sentiment.probabilities)
        if p >= self.tau:
            return "forget"
        if 1.0 - p >= self.tau:
            return "keep"
        return "review"


Embed = Callable[[str], "npt.NDArray[np.float32]"]


def minilm_embed(text: str) -> npt.NDArray[np.float32]:
    """The text's embedding by the federation's encoder (loaded once per process)."""
    from protocol.features import default_encoder

    rows, _ = default_encoder().encode_chunk([text])
    return np.asarray(rows[0], dtype=np.float32)


class GlobalModelScorer:
    """Scores texts with the latest finalized round's published global model.

    The model is a linear softmax head over the 384-dimensional embedding (feature map
    ``none``, the default): ``(384 + 1) × len(labels)`` float32 values. A federation
    with another shape is refused with a message, never scored with a misread head.
    Its logits are divided by ``temperature`` before the softmax.
    """

    def __init__(
        self,
        db: CoordinatorDB,
        store: ContentStore,
        *,
        labels: Sequence[str] = DEFAULT_LABELS,
        embed: Embed = minilm_embed,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"feedback temperature must be > 0, got {temperature}")
        self.db = db
        self.store = store
        self.labels = tuple(labels)
        self.embed = embed
        self.temperature = temperature
        self._lock = threading.Lock()
        self._cached: tuple[str, npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None

    def _head(self) -> tuple[int, str, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        finalized = [r for r in self.db.list_rounds() if r.get("state") == "finalized"]
        if not finalized:
            raise FeedbackError("no global model yet: no round has been finalized")
        latest = finalized[-1]
        cid = str(latest["global_model_cid"])
        with self._lock:
            if self._cached is None or self._cached[0] != cid:
                data = self.store.get(cid)
                if "0x" + keccak256(data).hex() != latest["global_model_hash"]:
                    raise FeedbackError(
                        f"round {latest['round']}'s model {cid} does not hash to its model hash"
                    )
                vector = vector_from_bytes(data)
                classes = len(self.labels)
                dim, rest = divmod(vector.size - classes, classes)
                if rest or dim < 1:
                    raise FeedbackError(
                        f"a model of {vector.size} values is not a head over {classes} classes"
                    )
                from protocol.features import EMBEDDING_DIM

                if dim != EMBEDDING_DIM:
                    raise FeedbackError(
                        f"the global model reads {dim} features, not the {EMBEDDING_DIM} of the "
                        "plain embedding: feedback scoring needs the feature map 'none'"
                    )
                weights = vector[: dim * classes].reshape(dim, classes)
                self._cached = (cid, weights, vector[dim * classes :])
            _, weights, bias = self._cached
        return int(latest["round"]), cid, weights, bias

    def score(self, text: str) -> Sentiment:
        """The label the current global model gives ``text``, with every class's probability."""
        model_round, cid, weights, bias = self._head()
        logits = self.embed(text).astype(np.float64) @ weights + bias
        probs = softmax(logits, self.temperature)
        return Sentiment(
            label=self.labels[int(np.argmax(probs))],
            probabilities={
                label: round(float(p), 6) for label, p in zip(self.labels, probs, strict=True)
            },
            model_round=model_round,
            model_cid=cid,
        )


@dataclass(frozen=True)
class FeedbackEntry:
    """One scored feedback as kept in the log."""

    seq: int
    record_id: str
    label: str
    probabilities: dict[str, float]
    decision: str
    request_id: str | None
    model_round: int
    model_cid: str
    created_at: float
    decided_by: str = MODEL
    resolves: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as the API and the live log show it."""
        return {
            "seq": self.seq,
            "record_id": self.record_id,
            "sentiment": {"label": self.label, "probabilities": self.probabilities},
            "decision": self.decision,
            "decided_by": self.decided_by,
            "resolves": self.resolves,
            "request_id": self.request_id,
            "model": {"round": self.model_round, "cid": self.model_cid},
            "created_at": self.created_at,
        }

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> FeedbackEntry:
        """An entry read back from the ``feedback`` table."""
        return cls(
            r["seq"],
            r["record_id"],
            r["label"],
            json.loads(r["probabilities"]),
            r["decision"],
            r["request_id"],
            r["model_round"],
            r["model_cid"],
            r["created_at"],
            r["decided_by"],
            r["resolves"],
        )


class FeedbackLog:
    """The ``feedback`` table beside the forget queue, and the live log built from both."""

    def __init__(
        self,
        db: CoordinatorDB,
        store: ContentStore,
        *,
        poll_s: float = 0.25,
        stream_seconds: float = 25.0,
    ) -> None:
        self.db = db
        self.store = store
        self.poll_s = poll_s
        self.stream_seconds = stream_seconds
        self._verified: dict[str, tuple[bool, str]] = {}
        self._migrate()

    def _migrate(self) -> None:
        """Create the table, or rebuild one from before review rows existed (its CHECK
        refuses ``review``; SQLite cannot alter a CHECK), keeping every entry."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'feedback'"
            ).fetchone()
            if row is None:
                con.execute(f"CREATE TABLE feedback ({_COLUMNS})")
            elif "'review'" not in row["sql"]:
                con.execute("ALTER TABLE feedback RENAME TO feedback_before_review")
                con.execute(f"CREATE TABLE feedback ({_COLUMNS})")
                con.execute(
                    f"INSERT INTO feedback ({_OLD_COLUMNS}) "
                    f"SELECT {_OLD_COLUMNS} FROM feedback_before_review"
                )
                con.execute("DROP TABLE feedback_before_review")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(Path(self.db.path), timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        return con

    def add(
        self,
        record_id: str,
        sentiment: Sentiment,
        decision: str,
        request_id: str | None,
        *,
        decided_by: str = MODEL,
        resolves: int | None = None,
    ) -> FeedbackEntry:
        """Keep one decision; return it with its sequence number. A person's decision on a
        review row names it in ``resolves`` (unique: a row is settled once)."""
        now = time.time()
        con = self._connect()
        try:
            cur = con.execute(
                "INSERT INTO feedback (record_id, label, probabilities, decision, request_id,"
                " model_round, model_cid, created_at, decided_by, resolves)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record_id,
                    sentiment.label,
                    json.dumps(sentiment.probabilities),
                    decision,
                    request_id,
                    sentiment.model_round,
                    sentiment.model_cid,
                    now,
                    decided_by,
                    resolves,
                ),
            )
            seq = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            raise FeedbackError(f"feedback {resolves} has already been decided") from exc
        finally:
            con.close()
        return FeedbackEntry(
            seq,
            record_id,
            sentiment.label,
            sentiment.probabilities,
            decision,
            request_id,
            sentiment.model_round,
            sentiment.model_cid,
            now,
            decided_by,
            resolves,
        )

    def get(self, seq: int) -> FeedbackEntry | None:
        """One entry by sequence number."""
        con = self._connect()
        try:
            row = con.execute("SELECT * FROM feedback WHERE seq = ?", (seq,)).fetchone()
        finally:
            con.close()
        return None if row is None else FeedbackEntry.from_row(row)

    def resolution(self, seq: int) -> FeedbackEntry | None:
        """The person's decision that settled review row ``seq``, if any."""
        con = self._connect()
        try:
            row = con.execute("SELECT * FROM feedback WHERE resolves = ?", (seq,)).fetchone()
        finally:
            con.close()
        return None if row is None else FeedbackEntry.from_row(row)

    def summary(self) -> dict[str, Any]:
        """How rows were decided: the model's forget / keep / review counts, and how many
        review rows a person has settled (and which way)."""
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT decision, resolves IS NOT NULL AS human, COUNT(*) AS n FROM feedback"
                " GROUP BY decision, human"
            ).fetchall()
        finally:
            con.close()
        model = {"forget": 0, "keep": 0, "review": 0}
        human = {"forget": 0, "keep": 0}
        for r in rows:
            (human if r["human"] else model)[r["decision"]] += r["n"]
        total = sum(model.values())
        return {
            "rows": total,
            "model": model,
            "reviewed": human,
            "shares": {k: round(v / total, 4) if total else 0.0 for k, v in model.items()},
        }

    def last_seq(self) -> int:
        """The newest entry's sequence number (0: none yet)."""
        con = self._connect()
        try:
            return int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM feedback").fetchone()[0])
        finally:
            con.close()

    def since(self, seq: int) -> list[FeedbackEntry]:
        """Entries after ``seq``, oldest first."""
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT * FROM feedback WHERE seq > ? ORDER BY seq LIMIT 5000", (seq,)
            ).fetchall()
        finally:
            con.close()
        return [FeedbackEntry.from_row(r) for r in rows]

    def certificate_check(self, request: ForgetRequest) -> tuple[bool, str]:
        """Whether the request's certificate, fetched by CID, verifies and is this request's,
        signed by the node that certified it on chain (cached: a CID's bytes never change)."""
        cid = request.certificate_cid
        if not cid:
            return False, "no certificate yet"
        if cid not in self._verified:
            from protocol.certificate import Certificate

            try:
                cert = Certificate.from_bytes(self.store.get(cid))
                cert.verify(expected_signer=request.node_address)
                if cert.request_id != request.request_id:
                    raise LetheError(f"certificate is for request {cert.request_id!r}")
                self._verified[cid] = (True, "signature, Merkle proof and request verified")
            except LetheError as exc:
                self._verified[cid] = (False, str(exc)[:300])
        return self._verified[cid]

    def forget_event(self, request: ForgetRequest) -> dict[str, Any]:
        """A request's state as the live log shows it (with its certificate's verdict)."""
        event: dict[str, Any] = {
            "request_id": request.request_id,
            "state": request.state,
            "reason": request.reason,
            "certificate_cid": request.certificate_cid,
            "round": request.round,
        }
        if request.certificate_cid:
            ok, detail = self.certificate_check(request)
            event["certificate_verified"] = ok
            event["certificate_detail"] = detail
        return event

    def stream(self, since: int, *, clock: Callable[[], float] = time.monotonic) -> Iterator[str]:
        """Server-sent events: every entry after ``since``, then each new entry and each
        change of their forget requests, for ``stream_seconds`` (a waitress thread each; the
        dashboard reconnects with the same ``since`` and gets a fresh snapshot, so nothing
        is lost between connections)."""
        deadline = clock() + self.stream_seconds
        last_seq = since
        states: dict[str, tuple[str, str | None]] = {}
        beat = clock()
        yield "retry: 1000\n\n"
        yield _sse("hello", {"last_seq": self.last_seq()})
        while True:
            for entry in self.since(last_seq):
                last_seq = entry.seq
                yield _sse("feedback", entry.to_json(), entry.seq)
                if entry.request_id:
                    states.setdefault(entry.request_id, ("", None))
            for request_id, seen in list(states.items()):
                if seen[0] in ("completed", "failed"):
                    continue
                try:
                    request = self.db.get_forget(request_id)
                except KeyError:
                    continue
                if (request.state, request.certificate_cid) != seen:
                    states[request_id] = (request.state, request.certificate_cid)
                    yield _sse("forget", self.forget_event(request))
            if clock() >= deadline:
                yield _sse("end", {"last_seq": last_seq})
                return
            if clock() - beat > 10:
                beat = clock()
                yield ": keep-alive\n\n"
            time.sleep(self.poll_s)


class Scorer(Protocol):
    """Anything that gives a text's sentiment (the global model; a fixed one in unit tests)."""

    def score(self, text: str) -> Sentiment: ...


def valid_decider(value: object) -> str:
    """The name a person signs a review decision with (any printable text, ≤ 100 chars;
    never ``model``, which marks the model's own decisions)."""
    if not isinstance(value, str) or not value.strip():
        raise FeedbackError("decided_by is required: the name of the person who decides")
    name = value.strip()
    if len(name) > MAX_DECIDER_LENGTH or not name.isprintable():
        raise FeedbackError(f"decided_by must be printable text of ≤ {MAX_DECIDER_LENGTH} chars")
    if name == MODEL:
        raise FeedbackError(f"decided_by {MODEL!r} is reserved for the model's own decisions")
    return name


@dataclass(frozen=True)
class FeedbackService:
    """What ``POST /feedback`` and the dashboard need: a scorer, a policy, the log."""

    scorer: Scorer
    policy: FeedbackPolicy
    log: FeedbackLog


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
