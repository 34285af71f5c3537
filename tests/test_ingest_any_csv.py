"""Ingesting an organisation's own CSV export through `lethe-node ingest`, with the real encoder.

Specifications:
- a bank export (``account_number,account_name,timestamp,feedback_text,ground_truth``,
  labels ``Positive``/``NEGATIVE``/``neutral``, cp1252, quoted line breaks) ingests with
  --id-col/--text-col/--label-col and --encoding; labels match case-insensitively and a
  --label-map maps the export's own words;
- the same file without --encoding is refused, naming the line and the option;
- a failed first ingest saves no settings: a retry with other --shards works;
- an ingest is all or nothing, and a streaming ingest never reads more than one chunk
  ahead of what it has stored (memory is bounded by the chunk, not the file);
- the command says how many texts were cut at the 256-token limit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from node.cli import main
from node.csv_input import CsvInput, parse_label_map
from node.sisa import INGEST_CHUNK, SisaNode
from node.store import IngestError, NodeError, Record
from tests.bank_feedback import bank_rows, write_bank_csv
from tests.node_fixtures import fake_embed, small_config

BANK_COLUMNS = (
    *("--id-col", "account_number", "--text-col", "feedback_text"),
    *("--label-col", "ground_truth"),
)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def stored(db: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(db) as con:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT id, text, label FROM records")}


def test_a_bank_export_in_cp1252_ingests_with_its_own_columns_and_labels(tmp_path: Path) -> None:
    rows = bank_rows(30)
    path = write_bank_csv(tmp_path / "bank.csv", rows, encoding="cp1252")
    db = tmp_path / "node.sqlite"
    code, out = run(
        "ingest",
        "--db",
        str(db),
        "--csv",
        str(path),
        *BANK_COLUMNS,
        "--encoding",
        "cp1252",
        "--no-progress",
    )
    assert code == 0, out
    assert "ingested 30 records" in out
    held = stored(db)
    classes = ("negative", "neutral", "positive")
    for row in rows:
        text, label = held[row["account_number"]]
        assert text == row["feedback_text"]  # quoted line breaks, €, “ ” and accents intact
        assert classes[label] == row["ground_truth"].casefold()
    assert any("\n" in text for text, _ in held.values())
    assert any("€" in text for text, _ in held.values())


def test_without_the_encoding_the_file_is_refused_naming_line_and_option(tmp_path: Path) -> None:
    rows = bank_rows(12)
    path = write_bank_csv(tmp_path / "bank.csv", rows, encoding="cp1252")
    first_bad = next(
        i for i, r in enumerate(rows) if any(ord(c) > 127 for c in "".join(r.values()))
    )
    db = tmp_path / "node.sqlite"
    code, out = run("ingest", "--db", str(db), "--csv", str(path), *BANK_COLUMNS)
    assert code == 1
    assert "not valid UTF-8" in out and "--encoding" in out
    line = 2 + first_bad + sum("\n" in r["feedback_text"] for r in rows[:first_bad])
    assert f"line {line}:" in out
    assert not db.exists()


def test_label_map_and_case_insensitive_labels(tmp_path: Path) -> None:
    path = tmp_path / "survey.csv"
    path.write_text(
        "ID,Comment,Verdict\n"
        "s1,great bank,POSITIVE\n"
        "s2,meh,Indifferent\n"
        "s3,awful,Neg\n"
        "s4,fine,Neutral\n"
    )
    source = CsvInput(
        path,
        id_col="id",
        text_col="comment",
        label_col="verdict",
        label_map=parse_label_map(["Indifferent=neutral", "neg=Negative"]),
    )
    assert source.scan() == 4
    assert [(r.id, r.label) for r in source.records()] == [
        ("s1", "positive"),
        ("s2", "neutral"),
        ("s3", "negative"),
        ("s4", "neutral"),
    ]
    with pytest.raises(NodeError, match="'nope' are not classes"):
        CsvInput(path, label_map={"x": "nope"})
    with pytest.raises(IngestError, match=r"label 'Indifferent' is not one of .* --label-map"):
        CsvInput(path, id_col="id", text_col="comment", label_col="verdict").scan()


def test_missing_columns_name_the_options(tmp_path: Path) -> None:
    path = write_bank_csv(tmp_path / "bank.csv", bank_rows(3))
    code, out = run("ingest", "--db", str(tmp_path / "n.sqlite"), "--csv", str(path))
    assert code == 1
    assert "lacks the id column 'id', text column 'text', label column 'label'" in out
    assert "--id-col, --text-col, --label-col" in out


def test_a_failed_first_ingest_saves_no_settings(tmp_path: Path) -> None:
    rows = tmp_path / "feedback.csv"
    rows.write_text("id,text,label\nc1,slow app,negative\nc2,fine,positive\nc3,meh,neutral\n")
    db = tmp_path / "node.sqlite"
    # The encoder cannot be built (its cache folder is a file): the ingest fails after the
    # store was opened, as an interrupted or crashed embedding would.
    broken_cache = tmp_path / "not-a-folder"
    broken_cache.write_text("")
    failed = subprocess.run(
        [
            str(Path(sys.executable).parent / "lethe-node"),
            "ingest",
            "--db",
            str(db),
            "--csv",
            str(rows),
            "--shards",
            "1",
            "--no-progress",
        ],
        env={**os.environ, "XDG_CACHE_HOME": str(broken_cache)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert failed.returncode == 1 and "cannot build the ONNX encoder" in failed.stderr
    assert not list(tmp_path.glob("node.sqlite*"))  # no settings were saved
    code, out = run("ingest", "--db", str(db), "--csv", str(rows), "--shards", "2", "--no-progress")
    assert code == 0, out
    assert json.loads(run("info", "--db", str(db), "--json")[1])["config"]["shards"] == 2


def test_truncated_texts_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        f'id,text,label\nl1,"{"the service was slow " * 80}",negative\nl2,fine,positive\n'
    )
    code, out = run(
        "ingest", "--db", str(tmp_path / "n.sqlite"), "--csv", str(path), "--no-progress"
    )
    assert code == 0, out
    assert "1 text(s) were longer than 256 tokens" in out


def test_streaming_ingest_reads_one_chunk_ahead_at_most(tmp_path: Path) -> None:
    node = SisaNode.create(tmp_path / "n.sqlite", small_config())
    embedded: list[int] = []

    def embed(texts: object) -> np.ndarray:
        rows = fake_embed(texts)  # type: ignore[arg-type]
        embedded.append(len(rows))
        return rows

    read = 0

    def records() -> Iterator[Record]:
        nonlocal read
        for i in range(3 * INGEST_CHUNK + 7):
            # Never more than one chunk read beyond what was embedded.
            assert read - sum(embedded) <= INGEST_CHUNK
            read += 1
            yield Record(f"r{i}", f"text number {i}", ("negative", "neutral", "positive")[i % 3])

    report = node.ingest_stream(records(), embed=embed, progress=False)
    assert report.added == 3 * INGEST_CHUNK + 7
    assert embedded == [INGEST_CHUNK] * 3 + [7]
    assert node.store.counts()["records"] == report.added
    node.close()


def test_a_bad_record_late_in_a_stream_stores_nothing(tmp_path: Path) -> None:
    node = SisaNode.create(tmp_path / "n.sqlite", small_config())

    def records() -> Iterator[Record]:
        for i in range(2 * INGEST_CHUNK):
            label = "grumpy" if i == 2 * INGEST_CHUNK - 1 else "neutral"
            yield Record(f"r{i}", f"text {i}", label)

    with pytest.raises(IngestError, match="label 'grumpy'"):
        node.ingest_stream(records(), embed=fake_embed, progress=False)
    assert node.store.counts()["records"] == 0
    assert node.store.slices() == {}
    node.close()
