"""What this node did in each secure round, kept on disk: it agrees, shares and sums once.

A coordinator that may ask twice can difference: a second ``aggregate`` over a sender set
without the victim, or a second sharing under other parameters, hands it two sums that
differ by one node's model. So the node writes down, per round, the one sharing it made,
the one sender set it signed and the one sum it returned; asked the same again (a retried
stage) it answers the same, asked anything else it refuses. It also remembers, per model
it shared, the sender set it agreed to sum that model in: an unchanged model is never
summed into a different set, so a round that lost a node while the others' models are
unchanged publishes nothing (``N_r·G_r − N_{r+1}·G_{r+1}`` would be that node's model).
Within one round, a node may move once or more to a strict subset of its set before it
sums (a sender lost mid-share), for a model new in that round: see ``may_narrow``.

The tables live in the node's own SQLite file, beside its records, with rounds scoped by
the contract that numbers them (a federation re-deployed on a fresh chain counts from 1
again); the model rule is not scoped, as an observer may read both records. A crash
between answering and recording can only make the node refuse, never answer twice
differently.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from protocol.errors import ProtocolError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS round_shares (
    scope TEXT NOT NULL, round INTEGER NOT NULL, fingerprint TEXT NOT NULL,
    model_hash TEXT NOT NULL, n_total INTEGER NOT NULL, PRIMARY KEY (scope, round)
);
CREATE TABLE IF NOT EXISTS round_share_envelopes (
    scope TEXT NOT NULL, round INTEGER NOT NULL, recipient TEXT NOT NULL,
    envelope BLOB NOT NULL, PRIMARY KEY (scope, round, recipient)
);
CREATE TABLE IF NOT EXISTS round_share_masks (
    scope TEXT NOT NULL, round INTEGER NOT NULL, masked_with TEXT NOT NULL,
    signature TEXT NOT NULL, masked BLOB NOT NULL, PRIMARY KEY (scope, round)
);
CREATE TABLE IF NOT EXISTS round_agreements (
    scope TEXT NOT NULL, round INTEGER NOT NULL, senders TEXT NOT NULL,
    signature TEXT NOT NULL, PRIMARY KEY (scope, round)
);
CREATE TABLE IF NOT EXISTS round_sums (
    scope TEXT NOT NULL, round INTEGER NOT NULL, senders TEXT NOT NULL,
    signature TEXT NOT NULL, summed BLOB NOT NULL, PRIMARY KEY (scope, round)
);
CREATE TABLE IF NOT EXISTS model_sender_sets (
    model_hash TEXT PRIMARY KEY, senders TEXT NOT NULL, round INTEGER NOT NULL
);
"""


def set_key(senders: Sequence[str]) -> str:
    """A sender set as stored: canonical JSON of the lower-cased addresses, sorted."""
    return json.dumps(sorted(s.lower() for s in senders))


@dataclass(frozen=True)
class Sharing:
    """The one sharing this node made in a round: its masked vector (masked with the
    pair masks of ``masked_with``, the first set it signed in the round) and signature,
    and its envelopes of seed shares. Never the seeds themselves."""

    fingerprint: str
    model_hash: str
    n_total: int
    envelopes: dict[str, bytes]
    masked_with: tuple[str, ...]
    masked: bytes
    masked_signature: str


class RoundState:
    """Per-round record of this node's share, agreement and sum (one SQLite connection each).

    ``scope`` names the contract whose round numbers these are.
    """

    def __init__(self, path: str, scope: str) -> None:
        self.path = path
        self.scope = scope.lower()
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    # -- share --------------------------------------------------------------------------

    def sharing(self, round_no: int) -> Sharing | None:
        """The sharing made in ``round_no``, if any."""
        with self._db() as db:
            row = db.execute(
                "SELECT fingerprint, model_hash, n_total FROM round_shares "
                "WHERE scope = ? AND round = ?",
                (self.scope, round_no),
            ).fetchone()
            if row is None:
                return None
            envelopes = dict(
                db.execute(
                    "SELECT recipient, envelope FROM round_share_envelopes "
                    "WHERE scope = ? AND round = ?",
                    (self.scope, round_no),
                ).fetchall()
            )
            mask = db.execute(
                "SELECT masked_with, signature, masked FROM round_share_masks "
                "WHERE scope = ? AND round = ?",
                (self.scope, round_no),
            ).fetchone()
        if mask is None:
            raise ProtocolError(
                f"this node shared in round {round_no} before masked aggregation: "
                "it cannot answer that round again"
            )
        return Sharing(
            row[0],
            row[1],
            int(row[2]),
            {k: bytes(v) for k, v in envelopes.items()},
            tuple(json.loads(mask[0])),
            bytes(mask[2]),
            str(mask[1]),
        )

    def check_share(self, round_no: int, fingerprint: str) -> Sharing | None:
        """The earlier identical sharing of this round, None if none; refuse a different one."""
        earlier = self.sharing(round_no)
        if earlier is not None and earlier.fingerprint != fingerprint:
            raise ProtocolError(
                f"this node already shared in round {round_no} with other parameters "
                "(model, weights, roster): a second sharing is refused"
            )
        return earlier

    def record_share(self, round_no: int, sharing: Sharing) -> None:
        """Keep the round's sharing, so a retried share stage gets the very same masked vector
        and envelopes (a second masking would hand out two masked copies of one model)."""
        envelopes = sharing.envelopes
        with self._db() as db:
            db.execute(
                "INSERT INTO round_shares (scope, round, fingerprint, model_hash, n_total) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.scope, round_no, sharing.fingerprint, sharing.model_hash, sharing.n_total),
            )
            db.executemany(
                "INSERT INTO round_share_envelopes (scope, round, recipient, envelope) "
                "VALUES (?, ?, ?, ?)",
                [(self.scope, round_no, k, v) for k, v in envelopes.items()],
            )
            db.execute(
                "INSERT INTO round_share_masks (scope, round, masked_with, signature, masked) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    self.scope,
                    round_no,
                    json.dumps(list(sharing.masked_with)),
                    sharing.masked_signature,
                    sharing.masked,
                ),
            )

    # -- agree --------------------------------------------------------------------------

    def agreement(self, round_no: int) -> tuple[str, str] | None:
        """(sender set as canonical JSON, signature) this node signed in ``round_no``."""
        with self._db() as db:
            row = db.execute(
                "SELECT senders, signature FROM round_agreements WHERE scope = ? AND round = ?",
                (self.scope, round_no),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def check_agree(self, round_no: int, senders: Sequence[str], model_hash: str) -> str | None:
        """The signature already given on this set (None: not yet); refuse any other set.

        Refused: a second set in one round, and a set other than the one this same model
        was last agreed in (the differencing rule). One exception keeps a round alive when
        a sender failed before its shares arrived: a strict subset of the round's set
        (:meth:`may_narrow`), before this node summed anything in the round, for a model
        first agreed in this very round.
        """
        wanted = set_key(senders)
        earlier = self.agreement(round_no)
        if earlier is not None:
            if earlier[0] == wanted:
                return earlier[1]
            if self.may_narrow(round_no, earlier[0], wanted, model_hash):
                return None
            raise ProtocolError(
                f"this node already agreed on another sender set in round {round_no} "
                "(only a smaller one, before summing, for a model new in this round)"
            )
        with self._db() as db:
            row = db.execute(
                "SELECT senders, round FROM model_sender_sets WHERE model_hash = ?",
                (model_hash,),
            ).fetchone()
        if row is not None and row[0] != wanted:
            raise ProtocolError(
                f"this node's model is unchanged since round {row[1]}, where it was summed "
                "with other senders: summing it into another set would let the difference "
                "of the two published models reveal a node's model"
            )
        return None

    def may_narrow(self, round_no: int, agreed: str, wanted: str, model_hash: str) -> bool:
        """Whether this node may now agree to ``wanted`` instead of the set it ``agreed``
        to earlier in this round (docs/trust.md, "A sender lost mid-share").

        Only to a strict subset (never back to a larger set), only while it has not summed
        in this round (after signing the smaller set it sums nothing else), and only for a
        model first agreed in this round, so no earlier published sum holds the same model
        with the larger set.
        """
        if not set(json.loads(wanted)) < set(json.loads(agreed)):
            return False
        with self._db() as db:
            summed = db.execute(
                "SELECT 1 FROM round_sums WHERE scope = ? AND round = ?", (self.scope, round_no)
            ).fetchone()
            model = db.execute(
                "SELECT senders, round FROM model_sender_sets WHERE model_hash = ?",
                (model_hash,),
            ).fetchone()
        return summed is None and model is not None and tuple(model) == (agreed, round_no)

    def record_agree(
        self, round_no: int, senders: Sequence[str], model_hash: str, signature: str
    ) -> None:
        """Keep the set signed in this round (the smaller one after a narrowing), and the
        set this model is now summed in with the round it was first agreed in."""
        wanted = set_key(senders)
        with self._db() as db:
            db.execute(
                "INSERT INTO round_agreements (scope, round, senders, signature) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (scope, round) DO UPDATE SET "
                "senders = excluded.senders, signature = excluded.signature",
                (self.scope, round_no, wanted, signature),
            )
            db.execute(
                "INSERT INTO model_sender_sets (model_hash, senders, round) VALUES (?, ?, ?) "
                "ON CONFLICT (model_hash) DO UPDATE SET senders = excluded.senders, "
                "round = CASE WHEN model_sender_sets.senders = excluded.senders "
                "THEN model_sender_sets.round ELSE excluded.round END",
                (model_hash, wanted, round_no),
            )

    # -- aggregate ----------------------------------------------------------------------

    def check_sum(self, round_no: int, senders: Sequence[str]) -> tuple[str, bytes] | None:
        """The (signature, reveal) already returned over this set; refuse another set: a
        second reveal over a smaller set would hand out pair seeds of a node whose self
        mask it already revealed."""
        with self._db() as db:
            row = db.execute(
                "SELECT senders, signature, summed FROM round_sums WHERE scope = ? AND round = ?",
                (self.scope, round_no),
            ).fetchone()
        if row is None:
            return None
        if row[0] != set_key(senders):
            raise ProtocolError(
                f"this node already summed round {round_no} over another sender set"
            )
        return str(row[1]), bytes(row[2])

    def record_sum(
        self, round_no: int, senders: Sequence[str], signature: str, summed: bytes
    ) -> None:
        """Keep the one reveal of this round (the column keeps its historical name)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO round_sums (scope, round, senders, signature, summed) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.scope, round_no, set_key(senders), signature, summed),
            )
