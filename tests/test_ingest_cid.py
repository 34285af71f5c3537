"""Datasets by CID: `lethe store put data.csv`, then `lethe-node ingest --cid CID`.

Specifications:
- nodes ingesting the same CID with partitions 1/n … n/n get disjoint shares that together
  are the whole file, and the same shared test split named by its own CID;
- bytes that do not hash to the CID (a tampered store) are refused and nothing is stored;
- a CID the store does not hold, or a partition with no rows, is a one-line error.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from launcher.cli import main as lethe_main
from node.cli import main as node_main

LABELS = ("negative", "neutral", "positive")


def write_csv(path: Path, prefix: str, count: int) -> Path:
    rows = [f"{prefix}{i},text number {i} about {LABELS[i % 3]} things,{LABELS[i % 3]}" for i in
            range(count)]  # fmt: skip
    path.write_text("id,text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def put(store: Path, file: Path) -> str:
    result = CliRunner().invoke(lethe_main, ["store", "put", str(file), "--store", str(store)])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def ingest(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(node_main, ["ingest", "--no-progress", *args], env={})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def ids(db: Path, table: str) -> set[str]:
    with sqlite3.connect(db) as con:
        return {row[0] for row in con.execute(f"SELECT id FROM {table}")}


def test_partitions_of_one_cid_cover_it_and_share_one_test_split(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = put(store, write_csv(tmp_path / "data.csv", "r", 10))
    test = put(store, write_csv(tmp_path / "test.csv", "t", 4))
    dbs = [tmp_path / f"node{i}.db" for i in (1, 2, 3)]
    for i, db in enumerate(dbs, start=1):
        where = ("--store", str(store), "--node-id", f"n{i}")
        code, out = ingest("--db", str(db), "--cid", data, "--partition", f"{i}/3",
                           "--test-cid", test, *where)  # fmt: skip
        assert code == 0, out
        assert f"fetched {data} (bytes verified against the CID)" in out
    shares = [ids(db, "records") for db in dbs]
    assert [len(s) for s in shares] == [4, 3, 3]
    assert set.union(*shares) == {f"r{i}" for i in range(10)}
    assert sum(len(s) for s in shares) == 10  # disjoint
    assert all(ids(db, "test_records") == {f"t{i}" for i in range(4)} for db in dbs)


def test_bytes_that_do_not_match_the_cid_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    original = write_csv(tmp_path / "data.csv", "r", 6)
    cid = put(store, original)
    # Tamper with the stored block: same length, one label changed.
    content = original.read_bytes()
    [block] = [p for p in store.rglob("*") if p.is_file() and content in p.read_bytes()]
    block.write_bytes(block.read_bytes().replace(b"r1,text number 1", b"r1,text NUMBER 1"))
    db = tmp_path / "node.db"
    code, out = ingest("--db", str(db), "--cid", cid, "--store", str(store))
    assert code == 1 and cid in out
    assert not db.exists()


def test_missing_cid_and_empty_partition_are_clear_errors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cid = put(store, write_csv(tmp_path / "data.csv", "r", 2))
    absent = put(tmp_path / "elsewhere", write_csv(tmp_path / "other.csv", "x", 3))
    db = tmp_path / "node.db"
    code, out = ingest("--db", str(db), "--cid", absent, "--store", str(store))
    assert code == 1 and absent in out
    code, out = ingest("--db", str(db), "--cid", cid, "--partition", "3/3", "--store", str(store))
    assert code == 1 and "holds no records" in out
    code, out = ingest("--db", str(db), "--cid", cid, "--default")
    assert code == 2 and "exactly one of" in out
    assert not db.exists()
