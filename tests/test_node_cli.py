"""`lethe-node` end to end on real default-dataset texts with the real MiniLM encoder, offline."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from node.cli import main
from node.store import Record, load_default
from protocol.certificate import Certificate
from protocol.features import encode

NODE_KEY = "0x" + "44" * 32


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_ingest_train_forget_with_the_real_encoder(tmp_path: Path) -> None:
    db = str(tmp_path / "node.db")
    code, out = run(
        "ingest",
        "--db",
        db,
        "--default",
        "--partition",
        "2/3",
        "--limit",
        "12",
        "--test-limit",
        "6",
        "--shards",
        "2",
        "--slices",
        "3",
    )
    assert code == 0, out
    assert "ingested 12 records and 6 test records" in out

    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT id, text, embedding FROM records ORDER BY id").fetchall()
    stored = np.stack([np.frombuffer(r[2], dtype="<f4") for r in rows])
    assert stored.shape == (12, 384)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    # Each text's embedding is a function of the text alone, not of its batch-mates.
    alone = np.concatenate([encode([r[1]], progress=False) for r in rows[:4]])
    assert alone.tobytes() == stored[:4].tobytes()
    # And it carries meaning: a paraphrase is closer than an unrelated sentence.
    a, b, c = encode(
        [
            "I love my new self-driving car",
            "My new autonomous car is great, I love it",
            "The bakery sells fresh bread every morning",
        ],
        progress=False,
    )
    assert float(a @ b) > float(a @ c) + 0.2

    code, out = run("train", "--db", db)
    assert code == 0, out
    assert "trained 6 slice step(s)" in out and "test accuracy" in out

    code, out = run("info", "--db", db, "--json")
    info = json.loads(out)
    assert (info["records"], info["test_records"], info["trained"]) == (12, 6, True)

    victim, text = rows[0][0], rows[0][1]
    code, out = run("forget", "--db", db, victim, env={"LETHE_PRIVATE_KEY": NODE_KEY})
    assert code == 0, out
    data = json.loads(out)
    cert = Certificate.from_json(data["certificates"][0])
    assert cert.verify()
    assert data["model_hash_after"] == cert.model_hash_after != cert.model_hash_before
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM records WHERE id=?", (victim,)).fetchone()[0] == 0
    assert text.encode() not in Path(db).read_bytes()

    code, out = run("info", "--db", db, "--json")
    assert json.loads(out)["model_hash"] == cert.model_hash_after


def write_csv(path: Path, records: list[Record]) -> str:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "text", "label"])
        out.writerows([r.id, r.text, r.label] for r in records)
    return str(path)


def model_hash(db: str) -> str:
    code, out = run("info", "--db", db, "--json")
    assert code == 0, out
    return str(json.loads(out)["model_hash"])


def test_forgetting_equals_reingesting_the_raw_csv_without_the_records(tmp_path: Path) -> None:
    """Exactness from the raw data, not from stored embeddings: the texts are re-embedded in
    other batches and another order, and the model is still the same, bit for bit."""
    records = load_default(limit=40).train
    layout = ("--shards", "2", "--slices", "3")
    forgetting = str(tmp_path / "forgetting.db")
    code, out = run("ingest", "--db", forgetting, "--csv", write_csv(tmp_path / "all.csv", records),
                    *layout)
    assert code == 0, out
    assert run("train", "--db", forgetting)[0] == 0
    victims = [records[5].id, records[22].id]
    code, out = run("forget", "--db", forgetting, *victims, env={"LETHE_PRIVATE_KEY": NODE_KEY})
    assert code == 0, out

    kept = [r for r in records if r.id not in victims][::-1]
    scratch = str(tmp_path / "scratch.db")
    for part, chunk in enumerate((kept[:7], kept[7:])):
        code, out = run("ingest", "--db", scratch, "--csv",
                        write_csv(tmp_path / f"part{part}.csv", chunk), *layout)
        assert code == 0, out
    assert run("train", "--db", scratch)[0] == 0
    assert model_hash(forgetting) == model_hash(scratch)

    # The same comparison can fail: keep one victim and the models differ.
    one_back = str(tmp_path / "one-back.db")
    code, out = run("ingest", "--db", one_back, "--csv",
                    write_csv(tmp_path / "plus.csv", [*kept, records[5]]), *layout)
    assert code == 0, out
    assert run("train", "--db", one_back)[0] == 0
    assert model_hash(one_back) != model_hash(forgetting)


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,label\nx1,fine,positive\nx2,hmm,grumpy\n")
    db = str(tmp_path / "node.db")
    code, out = run("ingest", "--db", db, "--csv", str(bad))
    assert code == 1 and "line 3: label 'grumpy'" in out
    assert not Path(db).exists() or json.loads(run("info", "--db", db, "--json")[1])["records"] == 0
    code, out = run("ingest", "--db", db, "--csv", str(bad), "--default")
    assert code == 2 and "exactly one of" in out
    code, out = run("train", "--db", str(tmp_path / "missing.db"))
    assert code == 1 and "no node store" in out
    code, out = run("ingest", "--db", db, "--default", "--partition", "5/3")
    assert code == 1 and "partition" in out
