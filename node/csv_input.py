"""Reading a node's records from any CSV: named columns, a label map, any ASCII-based encoding.

An organisation's export rarely has columns called ``id,text,label``: a bank's feedback
file has ``account_number,account_name,timestamp,feedback_text,ground_truth`` with labels
``Positive``/``NEG``, in cp1252. :class:`CsvInput` says which column is which, how labels
map to the node's classes (case-insensitively), and how the bytes are encoded.

The file is read as a stream (``infra.csvfile``), twice: :meth:`CsvInput.scan` checks
every row (fields, ids, labels, duplicates) and lists every problem at once before anything
is embedded; :meth:`CsvInput.records` then yields the records for the streaming ingest.
Neither holds the file in memory: the duplicate check keeps ids in a temporary SQLite
file, not in a Python set.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.csvfile import DEFAULT_ENCODING, CsvColumns, CsvFileError, check_encoding
from node.store import (
    MAX_ID_LENGTH,
    MAX_REPORTED_PROBLEMS,
    IngestError,
    NodeError,
    Record,
)
from protocol.federation import DEFAULT_LABELS

_ID_BATCH = 2000


def parse_label_map(pairs: Sequence[str]) -> dict[str, str]:
    """``["Positive=positive", "NEG=negative"]`` → ``{"positive": "positive", "neg": ...}``.

    Keys are case-folded (labels match case-insensitively); each item may also hold
    several comma-separated pairs.
    """
    mapping: dict[str, str] = {}
    for item in pairs:
        for pair in item.split(","):
            if not pair.strip():
                continue
            source, sep, target = pair.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise NodeError(f"label map entry {pair!r} must look like Given=class")
            mapping[source.strip().casefold()] = target.strip()
    return mapping


@dataclass(frozen=True)
class CsvInput:
    """Which CSV, which of its columns hold id, text and label, and how labels map.

    ``labels`` are the node's classes; a cell matches a class case-insensitively, after
    ``label_map`` (keys case-folded, e.g. ``{"pos": "positive"}``) is applied.
    """

    path: Path
    labels: Sequence[str] = DEFAULT_LABELS
    id_col: str = "id"
    text_col: str = "text"
    label_col: str = "label"
    label_map: Mapping[str, str] = field(default_factory=dict)
    encoding: str = DEFAULT_ENCODING

    def __post_init__(self) -> None:
        try:
            check_encoding(self.encoding)
        except CsvFileError as exc:
            raise NodeError(str(exc)) from exc
        classes = {c.casefold() for c in self.labels}
        wrong = sorted(t for t in self.label_map.values() if t.casefold() not in classes)
        if wrong:
            raise NodeError(
                f"label map targets {', '.join(map(repr, wrong))} are not classes of this "
                f"node ({', '.join(self.labels)})"
            )

    @property
    def source(self) -> str:
        return str(self.path)

    def _label(self, cell: str) -> str | None:
        """The node's class for a label cell, or None if it names none."""
        key = cell.strip().casefold()
        key = self.label_map.get(key, key).casefold()
        for label in self.labels:
            if label.casefold() == key:
                return label
        return None

    def _rows(self) -> Iterator[tuple[int, Record | None, list[str]]]:
        """(first line, record or None, problems) of every non-blank data row."""
        table = CsvColumns(
            self.path,
            {"id": self.id_col, "text": self.text_col, "label": self.label_col},
            self.encoding,
        )
        try:
            for line, cells, problem in table.rows():
                if cells is None:
                    yield line, None, [problem or f"line {line}: unreadable row"]
                else:
                    yield (line, *self._check(line, cells))
        except CsvFileError as exc:
            raise IngestError(self.source, [str(exc)]) from exc

    def _check(self, line: int, cells: dict[str, str]) -> tuple[Record | None, list[str]]:
        where = f"line {line}"
        rid, text, cell = cells["id"], cells["text"], cells["label"]
        problems = []
        if not rid.strip():
            problems.append(f"{where}: empty record id")
        elif rid != rid.strip() or len(rid) > MAX_ID_LENGTH:
            problems.append(
                f"{where}: record id {rid[:40]!r} must have no surrounding spaces "
                f"and at most {MAX_ID_LENGTH} characters"
            )
        if not text.strip():
            problems.append(f"{where}: empty text")
        label = self._label(cell)
        if label is None:
            hint = " (map it with --label-map)" if cell.strip() else ""
            problems.append(
                f"{where}: label {cell.strip()!r} is not one of {', '.join(self.labels)}{hint}"
            )
        if problems or label is None:
            return None, problems
        return Record(rid, text, label), []

    def scan(self) -> int:
        """Check the whole file; return its number of records or raise :class:`IngestError`
        listing every problem (bad rows, duplicate ids with their first line)."""
        problems: list[str] = []
        count = 0
        with tempfile.TemporaryDirectory(prefix="lethe-ingest-") as tmp:
            seen = sqlite3.connect(Path(tmp) / "ids.sqlite", isolation_level=None)
            try:
                seen.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, line INTEGER NOT NULL)")
                batch: list[tuple[str, int]] = []
                for line, record, errors in self._rows():
                    problems += errors
                    if record is not None:
                        count += 1
                        batch.append((record.id, line))
                    if len(batch) >= _ID_BATCH:
                        problems += _duplicates(seen, batch)
                        batch = []
                    if len(problems) > 10 * MAX_REPORTED_PROBLEMS:
                        problems.append("stopped reading: too many problems")
                        break
                problems += _duplicates(seen, batch)
            finally:
                seen.close()
        if problems:
            raise IngestError(self.source, sorted(problems, key=_line_of))
        if not count:
            raise IngestError(self.source, ["no records"])
        return count

    def records(self) -> Iterator[Record]:
        """Every record in file order (call :meth:`scan` first: this skips bad rows)."""
        for _line, record, _problems in self._rows():
            if record is not None:
                yield record


def _duplicates(seen: sqlite3.Connection, batch: list[tuple[str, int]]) -> list[str]:
    """A problem for each id of ``batch`` seen before (in it or earlier); remembers the rest."""
    if not batch:
        return []
    marks = ",".join("?" * len(batch))
    first = dict(
        seen.execute(f"SELECT id, line FROM ids WHERE id IN ({marks})", [i for i, _ in batch])
    )
    problems = []
    fresh = []
    for rid, line in batch:
        if rid in first:
            problems.append(f"line {line}: duplicate id {rid!r} (first on line {first[rid]})")
        else:
            first[rid] = line
            fresh.append((rid, line))
    seen.execute("BEGIN")
    seen.executemany("INSERT INTO ids VALUES (?, ?)", fresh)
    seen.execute("COMMIT")
    return problems


def _line_of(problem: str) -> int:
    head = problem.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 1 << 62


def read_csv(path: Path | str, labels: Sequence[str] = DEFAULT_LABELS) -> list[Record]:
    """Every record of an ``id,text,label`` CSV, or :class:`IngestError` listing every bad row."""
    source = CsvInput(Path(path), labels)
    source.scan()
    return list(source.records())
