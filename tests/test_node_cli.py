"""`lethe-node` end to end on real default-dataset texts with the real MiniLM encoder, offline."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from node.cli import main
from node.features import encode
from protocol.certificate import Certificate

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
