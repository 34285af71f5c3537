"""The coordinator's durable state in one SQLite file, shared by the ServerApp loop and the API.

Forget requests move received → dispatched → certified → completed (or failed); every
move is a conditional UPDATE, so two processes, or one restarted, never run a request
twice. Rounds, nodes and the record index live here too: all of it survives a restart.
"""

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import LetheError

STATES = ("received", "dispatched", "certified", "completed", "failed")
OPEN_STATES = ("received", "dispatched", "certified")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS forget_requests (
    request_id TEXT PRIMARY KEY,
    record_id TEXT NOT NULL,
    record_commitment TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    node_address TEXT,
    certificate_cid TEXT,
    new_model_hash TEXT,
    round INTEGER,
    request_tx TEXT,
    certify_tx TEXT,
    complete_tx TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    history TEXT NOT NULL DEFAULT '[]',
    receipt TEXT,
    parent_id TEXT,
    owners TEXT
);
CREATE INDEX IF NOT EXISTS forget_state ON forget_requests(state);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    info TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    address TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS record_index (
    commitment TEXT NOT NULL,
    node_address TEXT NOT NULL,
    PRIMARY KEY (commitment, node_address)
);
CREATE TABLE IF NOT EXISTS records_roots (
    node_address TEXT NOT NULL,
    round INTEGER NOT NULL,
    certifications INTEGER NOT NULL,
    signature TEXT NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (node_address, round)
);
CREATE TABLE IF NOT EXISTS control (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class QueueError(LetheError):
    """A request cannot be accepted or moved as asked."""


@dataclass(frozen=True)
class ForgetRequest:
    """One data subject's request, as stored."""

    request_id: str
    record_id: str
    record_commitment: str
    state: str
    reason: str | None
    node_address: str | None
    certificate_cid: str | None
    new_model_hash: str | None
    round: int | None
    request_tx: str | None
    certify_tx: str | None
    complete_tx: str | None
    created_at: float
    updated_at: float
    history: list[dict[str, Any]]
    receipt: dict[str, Any] | None = None
    """The owner node's receipt (``protocol.receipt``): the record's salts. Never public."""
    parent_id: str | None = None
    """For one owner's part of a record held by several nodes: the request it belongs to."""
    owners: list[str] | None = None
    """For a record held by several nodes: every holder. Each has its own part (a request
    ``<id>@<address>`` on chain); this one completes only once every part has."""

    @property
    def is_split(self) -> bool:
        """Whether this request is carried out by its parts, one per holder."""
        return self.owners is not None

    def to_json(self, *, with_record_id: bool = True) -> dict[str, Any]:
        """The view served by ``GET /forget/<id>``; the record id and the receipt only for
        token holders (``with_record_id``), so the public list does not name whose data is
        forgotten, nor hand out the salts that would let anyone recognise it."""
        shown: dict[str, Any] = {"request_id": self.request_id}
        if with_record_id:
            shown["record_id"] = self.record_id
            shown["receipt"] = self.receipt
        parts: dict[str, Any] = {}
        if self.owners is not None:  # every holder's part, each with its own state
            parts["owners"] = [
                {"node_address": a, "request_id": part_id(self.request_id, a)} for a in self.owners
            ]
        if self.parent_id is not None:
            parts["parent_id"] = self.parent_id
        return (
            shown
            | parts
            | {
                "state": self.state,
                "reason": self.reason,
                "node_address": self.node_address,
                "certificate_cid": self.certificate_cid,
                "new_model_hash": self.new_model_hash,
                "round": self.round,
                "tx": {
                    "request": self.request_tx,
                    "certify": self.certify_tx,
                    "complete": self.complete_tx,
                },
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "history": self.history,
            }
        )


def _request(row: sqlite3.Row) -> ForgetRequest:
    fields = dict(row)
    fields["history"] = json.loads(fields["history"])
    fields["receipt"] = json.loads(fields["receipt"]) if fields.get("receipt") else None
    fields["owners"] = json.loads(fields["owners"]) if fields.get("owners") else None
    return ForgetRequest(**fields)


def part_id(request_id: str, node_address: str) -> str:
    """The id of one holder's part of a request for a record several nodes hold; ``@`` is
    never in a client's request id, so a part's id cannot be taken by a client first."""
    return f"{request_id}@{node_address.lower()}"


def _migrate_record_index(con: sqlite3.Connection) -> None:
    """A database made when a commitment had one owner keeps its index, now keyed by both."""
    keys = [r["name"] for r in con.execute("PRAGMA table_info(record_index)") if r["pk"]]
    if keys != ["commitment"]:
        return
    con.executescript(
        "BEGIN IMMEDIATE;"
        "ALTER TABLE record_index RENAME TO record_index_one_owner;"
        "CREATE TABLE record_index (commitment TEXT NOT NULL, node_address TEXT NOT NULL,"
        " PRIMARY KEY (commitment, node_address));"
        "INSERT INTO record_index SELECT commitment, node_address FROM record_index_one_owner;"
        "DROP TABLE record_index_one_owner;"
        "COMMIT;"
    )


class CoordinatorDB:
    """Typed access to the coordinator's SQLite file; safe to open from several processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)
            columns = {r["name"] for r in con.execute("PRAGMA table_info(forget_requests)")}
            for column in ("receipt", "parent_id", "owners"):  # a database made before them
                if column not in columns:
                    con.execute(f"ALTER TABLE forget_requests ADD COLUMN {column} TEXT")
            _migrate_record_index(con)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA busy_timeout=30000")
        try:
            yield con
        finally:
            con.close()

    # -- forget requests -------------------------------------------------------------

    def submit_forget(
        self, record_id: str, record_commitment: str, request_id: str | None = None
    ) -> tuple[ForgetRequest, bool]:
        """Queue a request; return it and whether it is new.

        Not new (an idempotent repeat) when the request id is known, or when a request
        for the same record is still open: that one is returned instead.
        """
        request_id = request_id or uuid.uuid4().hex
        now = time.time()
        history = json.dumps([{"state": "received", "at": now}])
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(
                "SELECT record_id FROM forget_requests WHERE request_id=?", (request_id,)
            ).fetchone()
            if row is not None:
                con.execute("COMMIT")
                if row["record_id"] != record_id:
                    raise QueueError(
                        f"request id {request_id!r} was already used for another record"
                    )
                return self.get_forget(request_id), False
            open_row = con.execute(
                "SELECT request_id FROM forget_requests WHERE record_commitment=? AND state IN"
                " ('received', 'dispatched', 'certified') AND parent_id IS NULL"
                " ORDER BY created_at LIMIT 1",
                (record_commitment,),
            ).fetchone()
            if open_row is not None:  # the same record is already being forgotten
                con.execute("COMMIT")
                return self.get_forget(open_row["request_id"]), False
            con.execute(
                "INSERT INTO forget_requests (request_id, record_id, record_commitment, state,"
                " created_at, updated_at, history) VALUES (?, ?, ?, 'received', ?, ?, ?)",
                (request_id, record_id, record_commitment, now, now, history),
            )
            con.execute("COMMIT")
        return self.get_forget(request_id), True

    def get_forget(self, request_id: str) -> ForgetRequest:
        """Return the stored request or raise ``KeyError``."""
        with self._connect() as con:
            row = con.execute(
                "SELECT * FROM forget_requests WHERE request_id=?", (request_id,)
            ).fetchone()
        if row is None:
            raise KeyError(request_id)
        return _request(row)

    def latest_forget_for(self, record_commitment: str) -> ForgetRequest | None:
        """The newest request for a record commitment, in any state (None if none)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT * FROM forget_requests WHERE record_commitment=? AND parent_id IS NULL"
                " ORDER BY created_at DESC, request_id DESC LIMIT 1",
                (record_commitment,),
            ).fetchone()
        return None if row is None else _request(row)

    def list_forgets(self, states: tuple[str, ...] = STATES) -> list[ForgetRequest]:
        """Requests in any of ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        with self._connect() as con:
            rows = con.execute(
                f"SELECT * FROM forget_requests WHERE state IN ({marks})"
                " ORDER BY created_at, request_id",
                states,
            ).fetchall()
        return [_request(row) for row in rows]

    def advance_forget(
        self, request_id: str, from_state: str, to_state: str, **fields: Any
    ) -> bool:
        """Move a request only if it is still in ``from_state``; return whether it moved."""
        if to_state not in STATES:
            raise ValueError(f"unknown state {to_state!r}")
        allowed = {
            "node_address",
            "certificate_cid",
            "new_model_hash",
            "round",
            "reason",
            "request_tx",
            "certify_tx",
            "complete_tx",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a forget request")
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(
                "SELECT state, history FROM forget_requests WHERE request_id=?", (request_id,)
            ).fetchone()
            if row is None or row["state"] != from_state:
                con.execute("COMMIT")
                return False
            history = json.loads(row["history"])
            history.append({"state": to_state, "at": now, **{k: v for k, v in fields.items()}})
            sets = ", ".join(f"{k}=?" for k in fields)
            con.execute(
                f"UPDATE forget_requests SET state=?, updated_at=?, history=?"
                f"{', ' + sets if sets else ''} WHERE request_id=?",
                (to_state, now, json.dumps(history), *fields.values(), request_id),
            )
            con.execute("COMMIT")
        return True

    def save_receipt(self, request_id: str, receipt: dict[str, Any]) -> None:
        """Keep the owner node's receipt for a request (not in its public history)."""
        with self._connect() as con:
            con.execute(
                "UPDATE forget_requests SET receipt=? WHERE request_id=?",
                (json.dumps(receipt, sort_keys=True), request_id),
            )

    def set_reason(self, request_id: str, state: str, reason: str | None) -> bool:
        """Show (or clear, with None) why a request in ``state`` is not moving, without
        moving it; the change is kept in its history. Return whether anything changed."""
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(
                "SELECT state, reason, history FROM forget_requests WHERE request_id=?",
                (request_id,),
            ).fetchone()
            if row is None or row["state"] != state or row["reason"] == reason:
                con.execute("COMMIT")
                return False
            history = json.loads(row["history"])
            history.append({"state": state, "at": now, "reason": reason})
            con.execute(
                "UPDATE forget_requests SET reason=?, updated_at=?, history=? WHERE request_id=?",
                (reason, now, json.dumps(history), request_id),
            )
            con.execute("COMMIT")
        return True

    def split_forget(self, request_id: str, owners: list[str]) -> list[ForgetRequest]:
        """Give a received request one part per holder of its record (each asked, requested
        on chain and certified on its own); the request itself waits for all of them.
        Idempotent: a request already split keeps its parts."""
        owners = sorted({a.lower(): a for a in owners}.values(), key=str.lower)
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(
                "SELECT * FROM forget_requests WHERE request_id=?", (request_id,)
            ).fetchone()
            if row is None:
                con.execute("COMMIT")
                raise KeyError(request_id)
            if row["owners"] is None and row["state"] == "received":
                for owner in owners:
                    history = json.dumps([{"state": "received", "at": now}])
                    con.execute(
                        "INSERT OR IGNORE INTO forget_requests (request_id, record_id,"
                        " record_commitment, state, node_address, created_at, updated_at,"
                        " history, parent_id) VALUES (?, ?, ?, 'received', ?, ?, ?, ?, ?)",
                        (
                            part_id(request_id, owner),
                            row["record_id"],
                            row["record_commitment"],
                            owner,
                            now,
                            now,
                            history,
                            request_id,
                        ),
                    )
                reason = f"held by {len(owners)} nodes: each must forget it"
                history = json.loads(row["history"])
                history.append({"state": "dispatched", "at": now, "reason": reason})
                con.execute(
                    "UPDATE forget_requests SET state='dispatched', owners=?, reason=?,"
                    " updated_at=?, history=? WHERE request_id=?",
                    (json.dumps(owners), reason, now, json.dumps(history), request_id),
                )
            con.execute("COMMIT")
        return self.parts_of(request_id)

    def parts_of(self, request_id: str) -> list[ForgetRequest]:
        """The per-holder parts of a split request, by holder address."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT * FROM forget_requests WHERE parent_id=? ORDER BY lower(node_address)",
                (request_id,),
            ).fetchall()
        return [_request(row) for row in rows]

    def settle_split(self) -> list[ForgetRequest]:
        """Move every open split request on from its parts: completed once every holder's
        part is (in the latest of their rounds), failed once all parts ended and one failed.
        Return the requests that moved."""
        moved = []
        for req in self.list_forgets(OPEN_STATES):
            if not req.is_split:
                continue
            parts = self.parts_of(req.request_id)
            if not parts or any(p.state in OPEN_STATES for p in parts):
                continue
            failed = [p for p in parts if p.state == "failed"]
            if failed:
                reason = "; ".join(f"{p.node_address}: {p.reason}" for p in failed)
                done = self.advance_forget(req.request_id, req.state, "failed", reason=reason)
            else:
                last = max(parts, key=lambda p: p.round or 0)
                done = self.advance_forget(
                    req.request_id,
                    req.state,
                    "completed",
                    round=last.round,
                    reason=None,
                    complete_tx=last.complete_tx,
                )
            if done:
                moved.append(self.get_forget(req.request_id))
        return moved

    # -- rounds, nodes, record index ---------------------------------------------------

    def save_round(self, round_no: int, state: str, info: dict[str, Any]) -> None:
        """Insert or replace what the coordinator knows of a round."""
        with self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO rounds (round, state, info, updated_at) VALUES (?,?,?,?)",
                (round_no, state, json.dumps(info), time.time()),
            )

    def get_round(self, round_no: int) -> dict[str, Any]:
        """Return one round (``KeyError`` if unknown)."""
        with self._connect() as con:
            row = con.execute("SELECT * FROM rounds WHERE round=?", (round_no,)).fetchone()
        if row is None:
            raise KeyError(round_no)
        return {"round": row["round"], "state": row["state"], **json.loads(row["info"])}

    def list_rounds(self) -> list[dict[str, Any]]:
        """Every round, in order."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM rounds ORDER BY round").fetchall()
        return [{"round": r["round"], "state": r["state"], **json.loads(r["info"])} for r in rows]

    def last_round(self) -> int:
        """The highest round number stored, 0 if none."""
        with self._connect() as con:
            row = con.execute("SELECT MAX(round) FROM rounds").fetchone()
        return int(row[0] or 0)

    def save_node(self, address: str, info: dict[str, Any]) -> None:
        """Insert or replace what the coordinator knows of a node."""
        with self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO nodes (address, info, updated_at) VALUES (?,?,?)",
                (address, json.dumps(info), time.time()),
            )

    def list_nodes(self) -> list[dict[str, Any]]:
        """Every node seen, by address."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM nodes ORDER BY address").fetchall()
        return [{"address": r["address"], **json.loads(r["info"])} for r in rows]

    def replace_record_index(self, node_address: str, commitments: list[str]) -> None:
        """Replace the set of record commitments a node holds (hashes, never ids or data)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM record_index WHERE node_address=?", (node_address,))
            # Several nodes may announce one commitment: each is an owner, none replaces another.
            con.executemany(
                "INSERT OR IGNORE INTO record_index (commitment, node_address) VALUES (?,?)",
                [(c, node_address) for c in commitments],
            )
            con.execute("COMMIT")

    def save_records_root(
        self, node_address: str, round_no: int, certifications: int, signature: str, records: bytes
    ) -> None:
        """Keep a node's signed records root of one round (what a forget request proves
        against), and drop its roots older than its newest one of a finalized round."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                "INSERT OR REPLACE INTO records_roots VALUES (?,?,?,?,?)",
                (node_address.lower(), round_no, certifications, signature, records),
            )
            con.execute(
                "DELETE FROM records_roots WHERE node_address=? AND round < (SELECT"
                " COALESCE(MAX(t.round), 0) FROM records_roots t JOIN rounds r ON r.round=t.round"
                " WHERE t.node_address=? AND r.state='finalized')",
                (node_address.lower(), node_address.lower()),
            )
            con.execute("COMMIT")

    def finalized_records_root(self, node_address: str) -> tuple[int, int, str, bytes] | None:
        """A node's newest signed records root of a finalized round: (round,
        certifications, signature, records), or None."""
        with self._connect() as con:
            row = con.execute(
                "SELECT t.round, t.certifications, t.signature, t.records FROM records_roots t"
                " JOIN rounds r ON r.round=t.round WHERE t.node_address=?"
                " AND r.state='finalized' ORDER BY t.round DESC LIMIT 1",
                (node_address.lower(),),
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), int(row[1]), str(row[2]), bytes(row[3])

    def record_owners(self, commitment: str) -> list[str]:
        """Addresses of every node that announced this record commitment, sorted."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT node_address FROM record_index WHERE commitment=?"
                " ORDER BY lower(node_address)",
                (commitment,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def record_count(self) -> int:
        """How many distinct record commitments are indexed."""
        with self._connect() as con:
            return int(
                con.execute("SELECT COUNT(DISTINCT commitment) FROM record_index").fetchone()[0]
            )

    def duplicate_records(self) -> list[dict[str, Any]]:
        """Commitments announced by more than one node, with every holder: the operator's
        to look at (a shared public record, or a node copying another's to take its forgets)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT commitment, GROUP_CONCAT(node_address, ' ') FROM record_index"
                " GROUP BY commitment HAVING COUNT(*) > 1 ORDER BY commitment"
            ).fetchall()
        return [
            {"commitment": r[0], "owners": sorted(str(r[1]).split(), key=str.lower)} for r in rows
        ]

    # -- control -------------------------------------------------------------------------

    def set_control(self, key: str, value: str) -> None:
        """Set a control flag (e.g. ``stop``) read by the ServerApp loop."""
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO control (key, value) VALUES (?,?)", (key, value))

    def get_control(self, key: str) -> str | None:
        """Read a control flag."""
        with self._connect() as con:
            row = con.execute("SELECT value FROM control WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])
